"""What the proxy cache asks of the catalog: per-title cache figures in one
query, cutting a title's cached ranges back to a prefix, and a few numbers
kept across restarts (``cache_meta``).

Functions of a :class:`catalog.titles.Catalog`, kept apart from its title
and track queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog.db import transaction
from catalog.errors import CatalogError, TitleNotFound


@dataclass(frozen=True)
class CacheEntry:
    """One title as the cache sees it: how much of it is held, how it is used."""

    name: str
    state: str
    size: int | None
    cached: int              # bytes recorded as cached (durable)
    duration_ns: int | None
    hits: int
    last_access: float | None
    pinned: bool
    created: float
    priority: float = 0.0    # the size-aware eviction policy's rank

    @property
    def percent(self) -> float:
        """How much of the title is cached, 0..100 (0 while its size is unknown)."""
        return 100.0 * self.cached / self.size if self.size else 0.0


def cache_entries(catalog: Any, *, name: str | None = None) -> list[CacheEntry]:
    """Every title (or the one called ``name``) with its cached byte count, by name."""
    where, params = ("WHERE t.name = ?", (name,)) if name is not None else ("", ())
    rows = catalog.db.execute(
        'SELECT t.name, t.state, t.size, coalesce(sum(r."end" - r.start), 0), t.duration_ns,'
        " t.hits, t.last_access, t.pinned, t.created, t.cache_priority"
        " FROM titles t LEFT JOIN cached_ranges r ON r.title_id = t.id"
        f" {where} GROUP BY t.id ORDER BY t.name",
        params,
    ).fetchall()
    return [CacheEntry(n, st, size, cached, dur, hits, last, bool(pinned), created, prio)
            for n, st, size, cached, dur, hits, last, pinned, created, prio in rows]


def set_priority(catalog: Any, name: str, priority: float) -> None:
    """Set the size-aware eviction rank of ``name``."""
    with transaction(catalog.db):
        if catalog.db.execute("UPDATE titles SET cache_priority = ? WHERE name = ?",
                              (float(priority), name)).rowcount == 0:
            raise TitleNotFound(f"title {name!r} is not in the catalog")


def keep_cached_below(catalog: Any, name: str, end: int) -> int:
    """Forget the cached bytes of ``name`` at or beyond ``end``; returns how many
    bytes are still recorded. Call it before punching the bytes out of the file,
    so the catalog never claims bytes that are gone."""
    if isinstance(end, bool) or not isinstance(end, int) or end < 0:
        raise CatalogError(f"end: expected a non-negative integer, got {end!r}")
    db = catalog.db
    with transaction(db):
        row = db.execute("SELECT id FROM titles WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise TitleNotFound(f"title {name!r} is not in the catalog")
        title_id = row[0]
        db.execute('DELETE FROM cached_ranges WHERE title_id = ? AND start >= ?',
                   (title_id, end))
        db.execute('UPDATE cached_ranges SET "end" = ? WHERE title_id = ? AND "end" > ?',
                   (end, title_id, end))
        return db.execute(
            'SELECT coalesce(sum("end" - start), 0) FROM cached_ranges WHERE title_id = ?',
            (title_id,)).fetchone()[0]


def get_meta(catalog: Any, key: str, default: float = 0.0) -> float:
    """The number stored under ``key`` in ``cache_meta``, or ``default``."""
    row = catalog.db.execute("SELECT value FROM cache_meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(catalog: Any, key: str, value: float) -> None:
    """Store ``value`` under ``key`` in ``cache_meta``."""
    with transaction(catalog.db):
        catalog.db.execute(
            "INSERT INTO cache_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, float(value)))
