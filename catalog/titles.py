"""Titles, their tracks and their cached byte ranges: the catalog's queries.

Reads go through sqlite-utils (``db.query`` gives dict rows). Writes are
plain SQL inside :func:`catalog.db.transaction`, because sqlite-utils'
write helpers wrap themselves in ``with conn:`` and would commit halfway
through a multi-statement change.

A :class:`Catalog` owns one connection and, like sqlite3, belongs to the
thread that opened it; another thread opens its own with
:func:`open_catalog` on the same file (WAL lets them work side by side).
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import string
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from sqlite_utils import Database

from catalog.db import (
    connect,
    database_file,
    transaction,
)
from catalog.errors import CatalogError, InvalidTitleName, TitleExists, TitleNotFound
from catalog.diagnosis import unusable
from catalog.migrations import migrate, schema_version

STATES = ("remote", "partial", "complete")
MAX_NAME_LENGTH = 255
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")

_TITLE_COLUMNS = (
    "id", "name", "origin_url", "container", "media_path", "folder", "size",
    "duration_ns", "bitrate", "etag", "last_modified", "state", "pinned", "hits",
    "last_access", "created", "damaged", "media_inode", "media_mtime_ns",
)
_TRACK_COLUMNS = (
    "id", "title_id", "track_index", "media_type", "codec", "payload_type",
    "clock_rate", "fmtp", "hint_path", "packets",
)
_TITLE_SELECT = "SELECT " + ", ".join(_TITLE_COLUMNS) + " FROM titles"
_TRACK_SELECT = "SELECT " + ", ".join(_TRACK_COLUMNS) + " FROM tracks"


def _reading(method: Callable[..., Any]) -> Callable[..., Any]:
    """A read that meets a damaged page (the file changed under a running
    kvod) raises CatalogUnusable, one line with advice, not sqlite3's error."""
    @functools.wraps(method)
    def read(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise unusable(database_file(self.db) or ":memory:", exc) from None
    return read


def validate_title_name(name: object) -> str:
    """Return ``name`` if it is a safe title name, else raise :class:`InvalidTitleName`.

    Names become RTSP URL paths and cache folder paths, so this is the
    boundary that keeps a request from naming a file outside the cache: 1 to
    255 characters, segments of ``[A-Za-z0-9._-]`` joined by single ``/``,
    no ``.`` or ``..`` segment, no leading, trailing or doubled ``/``.
    """
    if not isinstance(name, str):
        raise InvalidTitleName(f"title name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidTitleName("title name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTitleName(
            f"title name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if name.startswith("/"):
        raise InvalidTitleName(f"title name {name!r} must not start with '/'")
    for segment in name.split("/"):
        if not segment:
            raise InvalidTitleName(
                f"title name {name!r} has an empty segment (trailing or doubled '/')"
            )
        if segment in (".", ".."):
            raise InvalidTitleName(f"title name {name!r} has a {segment!r} segment")
        for char in segment:
            if char not in _NAME_CHARS:
                raise InvalidTitleName(
                    f"title name {name!r} contains {char!r}; allowed are ASCII letters, "
                    "digits, '.', '_', '-', and '/' between segments"
                )
    return name


@dataclass(frozen=True)
class Track:
    """One stored track of a title, as the catalog holds it."""

    id: int
    title_id: int
    track_index: int
    media_type: str
    codec: str
    payload_type: int
    clock_rate: int
    fmtp: str | None
    hint_path: str
    packets: int


@dataclass(frozen=True)
class Title:
    """One title, as the catalog holds it; ``tracks`` ordered by ``track_index``."""

    id: int
    name: str
    origin_url: str | None
    container: str
    media_path: str | None
    folder: str | None
    size: int | None
    duration_ns: int | None
    bitrate: int | None
    etag: str | None
    last_modified: str | None
    state: str
    pinned: bool
    hits: int
    last_access: float | None
    created: float
    tracks: tuple[Track, ...] = ()
    # why its cached files are not what was recorded (None: they are)
    damaged: str | None = None
    # the media file that was indexed (None: not recorded)
    media_inode: int | None = None
    media_mtime_ns: int | None = None


@dataclass(frozen=True)
class TrackSpec:
    """A track to store with a title; checked when built, so a bad one cannot exist."""

    track_index: int
    media_type: str
    codec: str
    payload_type: int
    clock_rate: int
    hint_path: str
    packets: int
    fmtp: str | None = None

    def __post_init__(self) -> None:
        _check_count("track_index", self.track_index)
        _check_text("media_type", self.media_type)
        _check_text("codec", self.codec)
        _check_count("payload_type", self.payload_type)
        if self.payload_type > 127:
            raise CatalogError(f"payload_type: expected 0..127, got {self.payload_type!r}")
        _check_count("clock_rate", self.clock_rate)
        if self.clock_rate == 0:
            raise CatalogError("clock_rate: expected a positive integer, got 0")
        object.__setattr__(self, "hint_path", _check_path("hint_path", self.hint_path))
        _check_count("packets", self.packets)
        _check_text("fmtp", self.fmtp, optional=True)


def _check_count(field: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    # bool is an int subclass; True as a size is a caller bug, not 1 byte.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CatalogError(f"{field}: expected a non-negative integer, got {value!r}")


def _check_text(field: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or "\x00" in value:
        raise CatalogError(f"{field}: expected a non-empty string without NUL, got {value!r}")


def _check_path(field: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    _check_text(field, value)
    return value  # type: ignore[return-value]


def _check_time(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CatalogError(f"{field}: expected a finite number of seconds, got {value!r}")


def _check_state(state: object) -> None:
    if state not in STATES:
        raise CatalogError(
            f"state: expected one of {', '.join(map(repr, STATES))}, got {state!r}"
        )


def _track_spec(index: int, track: TrackSpec | Mapping[str, Any]) -> TrackSpec:
    if isinstance(track, TrackSpec):
        return track
    if not isinstance(track, Mapping):
        raise CatalogError(f"tracks[{index}]: expected a TrackSpec or a dict, got {track!r}")
    try:
        return TrackSpec(**track)
    except TypeError as exc:
        raise CatalogError(f"tracks[{index}]: {exc}") from exc
    except CatalogError as exc:
        raise CatalogError(f"tracks[{index}].{exc}") from exc


def _track_specs(tracks: Iterable[TrackSpec | Mapping[str, Any]]) -> list[TrackSpec]:
    specs = [_track_spec(i, t) for i, t in enumerate(tracks)]
    seen: set[int] = set()
    for spec in specs:
        if spec.track_index in seen:
            raise CatalogError(f"tracks: duplicate track_index {spec.track_index}")
        seen.add(spec.track_index)
    return specs


# Fields a caller may change after add_title, with their checks. Counters,
# state and pinning have their own methods; id, name and created never change.
_UPDATABLE = {
    "origin_url": lambda v: _check_text("origin_url", v, optional=True),
    "container": lambda v: _check_text("container", v),
    "size": lambda v: _check_count("size", v, optional=True),
    "duration_ns": lambda v: _check_count("duration_ns", v, optional=True),
    "bitrate": lambda v: _check_count("bitrate", v, optional=True),
    "etag": lambda v: _check_text("etag", v, optional=True),
    "last_modified": lambda v: _check_text("last_modified", v, optional=True),
    "media_inode": lambda v: _check_count("media_inode", v, optional=True),
    "media_mtime_ns": lambda v: _check_count("media_mtime_ns", v, optional=True),
}
_UPDATABLE_PATHS = ("media_path", "folder")


class Catalog:
    """The titles of one catalog database, over one sqlite-utils connection."""

    def __init__(self, db: Database) -> None:
        """Configure ``db`` (WAL, foreign keys, busy timeout) and migrate it.

        Raises :class:`CatalogError` if ``db`` was written by a newer kvod.
        """
        self.db = db
        migrate(db)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the catalog is unusable afterwards."""
        self.db.close()

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return schema_version(self.db)

    # -- titles ---------------------------------------------------------

    def add_title(
        self,
        name: str,
        *,
        container: str,
        now: float,
        media_path: str | os.PathLike[str] | None = None,
        folder: str | os.PathLike[str] | None = None,
        origin_url: str | None = None,
        size: int | None = None,
        duration_ns: int | None = None,
        bitrate: int | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        state: str = "complete",
        pinned: bool = False,
        tracks: Iterable[TrackSpec | Mapping[str, Any]] = (),
    ) -> Title:
        """Add a title and its tracks in one transaction and return it.

        Raises :class:`InvalidTitleName`, :class:`TitleExists`, or
        :class:`CatalogError` naming the first invalid field.
        """
        validate_title_name(name)
        _check_text("container", container)
        media_path = _check_path("media_path", media_path, optional=True)
        folder = _check_path("folder", folder, optional=True)
        _check_text("origin_url", origin_url, optional=True)
        _check_count("size", size, optional=True)
        _check_count("duration_ns", duration_ns, optional=True)
        _check_count("bitrate", bitrate, optional=True)
        _check_text("etag", etag, optional=True)
        _check_text("last_modified", last_modified, optional=True)
        _check_state(state)
        if not isinstance(pinned, bool):
            raise CatalogError(f"pinned: expected a bool, got {pinned!r}")
        _check_time("now", now)
        specs = _track_specs(tracks)
        with transaction(self.db):
            if self._title_id(name, required=False) is not None:
                raise TitleExists(f"title {name!r} is already in the catalog")
            cursor = self.db.execute(
                "INSERT INTO titles (name, origin_url, container, media_path, folder, size,"
                " duration_ns, bitrate, etag, last_modified, state, pinned, hits,"
                " last_access, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?)",
                (name, origin_url, container, media_path, folder, size, duration_ns,
                 bitrate, etag, last_modified, state, int(pinned), now),
            )
            self._insert_tracks(cursor.lastrowid, specs)
        return self._get_required(name)

    @_reading
    def get_title(self, name: str) -> Title | None:
        """The title called ``name`` with its tracks, or ``None``."""
        rows = list(self.db.query(_TITLE_SELECT + " WHERE name = ?", (name,)))
        if not rows:
            return None
        tracks = self.db.query(
            _TRACK_SELECT + " WHERE title_id = ? ORDER BY track_index", (rows[0]["id"],)
        )
        return _title(rows[0], tuple(Track(**t) for t in tracks))

    @_reading
    def list_titles(self, state: str | None = None) -> list[Title]:
        """All titles (or those in ``state``) with their tracks, ordered by name."""
        if state is None:
            rows = self.db.query(_TITLE_SELECT + " ORDER BY name")
            track_rows = self.db.query(_TRACK_SELECT + " ORDER BY title_id, track_index")
        else:
            _check_state(state)
            rows = self.db.query(_TITLE_SELECT + " WHERE state = ? ORDER BY name", (state,))
            track_rows = self.db.query(
                _TRACK_SELECT + " WHERE title_id IN (SELECT id FROM titles WHERE state = ?)"
                " ORDER BY title_id, track_index",
                (state,),
            )
        by_title: dict[int, list[Track]] = {}
        for t in track_rows:
            by_title.setdefault(t["title_id"], []).append(Track(**t))
        return [_title(r, tuple(by_title.get(r["id"], ()))) for r in rows]

    def remove_title(self, name: str) -> Title:
        """Remove a title (its tracks and cached ranges go with it); return what it was.

        Only the catalog rows go: the media and hint files are the cache's to
        delete.
        """
        with transaction(self.db):
            title = self._get_required(name)
            self.db.execute("DELETE FROM titles WHERE id = ?", (title.id,))
        return title

    def update_title(self, name: str, **changes: Any) -> Title:
        """Change descriptive fields (origin_url, container, media_path, folder, size,
        duration_ns, bitrate, etag, last_modified, media_inode, media_mtime_ns) and
        return the updated title.

        A new ``size`` may not cut off a range already recorded as cached.
        """
        columns: dict[str, Any] = {}
        for field, value in changes.items():
            if field in _UPDATABLE_PATHS:
                columns[field] = _check_path(field, value, optional=True)
            elif field in _UPDATABLE:
                _UPDATABLE[field](value)
                columns[field] = value
            else:
                raise CatalogError(f"{field}: not a field update_title can change")
        if not columns:
            return self._get_required(name)
        with transaction(self.db):
            title_id = self._title_id(name)
            if columns.get("size") is not None:
                top = self.db.execute(
                    'SELECT max("end") FROM cached_ranges WHERE title_id = ?', (title_id,)
                ).fetchone()[0]
                if top is not None and top > columns["size"]:
                    raise CatalogError(
                        f"size: {columns['size']} is below the cached range ending at {top}"
                    )
            assignments = ", ".join(f"{c} = ?" for c in columns)
            self.db.execute(
                f"UPDATE titles SET {assignments} WHERE id = ?", (*columns.values(), title_id)
            )
        return self._get_required(name)

    def replace_tracks(
        self, name: str, tracks: Iterable[TrackSpec | Mapping[str, Any]]
    ) -> Title:
        """Replace all tracks of a title at once (after a re-index) and return it."""
        specs = _track_specs(tracks)
        with transaction(self.db):
            title_id = self._title_id(name)
            self.db.execute("DELETE FROM tracks WHERE title_id = ?", (title_id,))
            self._insert_tracks(title_id, specs)
        return self._get_required(name)

    def set_state(self, name: str, state: str) -> None:
        """Set a title's fill state: ``remote``, ``partial`` or ``complete``."""
        _check_state(state)
        self._update_one(name, "UPDATE titles SET state = ? WHERE name = ?", (state, name))

    def set_damaged(self, name: str, why: str | None) -> None:
        """Mark a title's cached files as damaged (``why``), or sound again (None)."""
        _check_text("damaged", why, optional=True)
        self._update_one(name, "UPDATE titles SET damaged = ? WHERE name = ?", (why, name))

    def damaged_titles(self) -> list[tuple[str, str]]:
        """(name, why) of every title marked damaged, by name."""
        return [tuple(r) for r in self.db.execute(
            "SELECT name, damaged FROM titles WHERE damaged IS NOT NULL ORDER BY name")]

    def set_pinned(self, name: str, pinned: bool) -> None:
        """Pin (never evict) or unpin a title."""
        if not isinstance(pinned, bool):
            raise CatalogError(f"pinned: expected a bool, got {pinned!r}")
        self._update_one(
            name, "UPDATE titles SET pinned = ? WHERE name = ?", (int(pinned), name)
        )

    def record_hit(self, name: str, now: float) -> None:
        """Count one play of a title and stamp its last access with ``now``."""
        _check_time("now", now)
        self._update_one(
            name,
            "UPDATE titles SET hits = hits + 1, last_access = ? WHERE name = ?",
            (now, name),
        )

    def record_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """Count plays of many titles at once: ``{name: (plays, last play)}``.
        A title removed since it was played is skipped."""
        for name, (count, now) in hits.items():
            _check_count("plays", count)
            _check_time("now", now)
        with transaction(self.db):
            self.db.conn.executemany(
                "UPDATE titles SET hits = hits + ?, last_access = ? WHERE name = ?",
                [(count, now, name) for name, (count, now) in hits.items()])

    # -- cached byte ranges --------------------------------------------

    def add_cached_range(self, name: str, start: int, end: int) -> tuple[int, int]:
        """Record bytes ``[start, end)`` of a title as cached; return the merged range.

        Ranges that overlap or touch the new one are folded into a single
        row, so the stored ranges stay sorted, disjoint and non-adjacent.
        Call this only after the bytes are fsync'd.
        """
        _check_count("start", start)
        _check_count("end", end)
        if start >= end:
            raise CatalogError(f"end: expected a value greater than start ({start}), got {end}")
        with transaction(self.db):
            row = self.db.execute(
                "SELECT id, size FROM titles WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise TitleNotFound(f"title {name!r} is not in the catalog")
            title_id, size = row
            if size is not None and end > size:
                raise CatalogError(f"end: {end} is beyond the size of {name!r} ({size} bytes)")
            touching = 'title_id = ? AND start <= ? AND "end" >= ?'
            low, high = self.db.execute(
                f'SELECT min(start), max("end") FROM cached_ranges WHERE {touching}',
                (title_id, end, start),
            ).fetchone()
            merged = (
                start if low is None else min(start, low),
                end if high is None else max(end, high),
            )
            self.db.execute(
                f"DELETE FROM cached_ranges WHERE {touching}", (title_id, end, start)
            )
            self.db.execute(
                'INSERT INTO cached_ranges (title_id, start, "end") VALUES (?, ?, ?)',
                (title_id, *merged),
            )
        return merged

    @_reading
    def cached_ranges(self, name: str) -> list[tuple[int, int]]:
        """The cached ``(start, end)`` byte ranges of a title, sorted, end exclusive."""
        title_id = self._title_id(name)
        rows = self.db.execute(
            'SELECT start, "end" FROM cached_ranges WHERE title_id = ? ORDER BY start',
            (title_id,),
        ).fetchall()
        return [(start, end) for start, end in rows]

    @_reading
    def cached_bytes(self, name: str) -> int:
        """How many bytes of a title are recorded as cached."""
        title_id = self._title_id(name)
        return self.db.execute(
            'SELECT coalesce(sum("end" - start), 0) FROM cached_ranges WHERE title_id = ?',
            (title_id,),
        ).fetchone()[0]

    def clear_cached_ranges(self, name: str) -> None:
        """Forget every cached range of a title (its origin copy changed, or it was evicted)."""
        with transaction(self.db):
            title_id = self._title_id(name)
            self.db.execute("DELETE FROM cached_ranges WHERE title_id = ?", (title_id,))

    @_reading
    def total_cached_bytes(self) -> int:
        """Bytes recorded as cached across all titles (what the cache quota counts)."""
        return self.db.execute(
            'SELECT coalesce(sum("end" - start), 0) FROM cached_ranges'
        ).fetchone()[0]

    # -- internals -------------------------------------------------------

    def _title_id(self, name: str, *, required: bool = True) -> int | None:
        row = self.db.execute("SELECT id FROM titles WHERE name = ?", (name,)).fetchone()
        if row is None and required:
            raise TitleNotFound(f"title {name!r} is not in the catalog")
        return None if row is None else row[0]

    def _get_required(self, name: str) -> Title:
        title = self.get_title(name)
        if title is None:
            raise TitleNotFound(f"title {name!r} is not in the catalog")
        return title

    def _update_one(self, name: str, sql: str, params: tuple[Any, ...]) -> None:
        with transaction(self.db):
            if self.db.execute(sql, params).rowcount == 0:
                raise TitleNotFound(f"title {name!r} is not in the catalog")

    def _insert_tracks(self, title_id: int, specs: list[TrackSpec]) -> None:
        for spec in specs:
            self.db.execute(
                "INSERT INTO tracks (title_id, track_index, media_type, codec, payload_type,"
                " clock_rate, fmtp, hint_path, packets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (title_id, spec.track_index, spec.media_type, spec.codec, spec.payload_type,
                 spec.clock_rate, spec.fmtp, spec.hint_path, spec.packets),
            )


def _title(row: dict[str, Any], tracks: tuple[Track, ...]) -> Title:
    return Title(**{**row, "pinned": bool(row["pinned"])}, tracks=tracks)


def open_catalog(path: str | os.PathLike[str] | None) -> Catalog:
    """Open (creating and migrating as needed) the catalog at ``path``; ``None``: in memory.

    Raises :class:`CatalogError` if the file cannot be opened, is not a
    database, or was written by a newer kvod.
    """
    db = connect(path)
    try:
        return Catalog(db)
    except sqlite3.Error as exc:
        db.close()
        if path is None:
            raise CatalogError(f"cannot set up the catalog: {exc}") from exc
        raise unusable(os.path.abspath(os.fspath(path)), exc) from None
    except BaseException:
        db.close()
        raise
