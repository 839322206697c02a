"""Titles as the RTSP server reads them: from SQLite once, then from memory
until the catalog changes.

Every DESCRIBE and SETUP names a title, and reading it with its tracks is two
queries (about 0.1 ms, a tenth of the start-up budget). Titles change rarely
(ingest, a fill's progress, a title marked damaged) and are read per request,
so the cache keeps every title it has read and forgets them all at once when
the catalog's change stamp moves:

- ``PRAGMA data_version`` changes when *another* connection commits: the
  ``kvod`` CLI in another process, the fill's writer thread in this one;
- the connection's ``total_changes`` counts its *own* writes, which
  ``data_version`` does not show.

Asking both costs one tiny query, a few microseconds. A name that is not in
the catalog is remembered too (a player retrying a typo costs nothing), and
the cache is bounded: past ``max_titles`` it starts again empty, so a client
asking for a million made-up names cannot grow it without bound.
"""

from __future__ import annotations

from typing import Optional

from catalog.titles import Catalog, Title


class TitleCache:
    """``get_title`` of a :class:`Catalog`, remembered until the catalog changes."""

    def __init__(self, catalog: Catalog, max_titles: int = 4096) -> None:
        self.catalog = catalog
        self.max_titles = max_titles
        self._titles: dict[str, Optional[Title]] = {}
        self._stamp: tuple[int, int] | None = None
        #: reads answered from memory, and from SQLite (status, tests)
        self.hits = 0
        self.misses = 0

    def _current_stamp(self) -> tuple[int, int]:
        conn = self.catalog.db.conn
        return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes

    def get_title(self, name: str) -> Optional[Title]:
        """The title called ``name`` with its tracks, or None, as the catalog
        holds it now."""
        stamp = self._current_stamp()
        if stamp != self._stamp or len(self._titles) >= self.max_titles:
            self._titles.clear()
            self._stamp = stamp
        try:
            title = self._titles[name]
        except KeyError:
            pass
        else:
            self.hits += 1
            return title
        self.misses += 1
        title = self.catalog.get_title(name)
        # read under the stamp taken before the read: a change that lands
        # meanwhile moves the stamp, and the next read starts afresh
        self._titles[name] = title
        return title

    def record_hit(self, name: str, now: float) -> None:
        """Count one play of ``name`` (a catalog write: it empties the cache)."""
        self.catalog.record_hit(name, now=now)
