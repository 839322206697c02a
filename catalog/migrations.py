"""The catalog schema as an ordered list of forward migrations, and their runner.

Each migration is a named function of the database. The runner applies the
ones a catalog lacks, in order, each in one transaction together with its row
in ``schema_migrations``: a migration that fails (or a process that dies
halfway) leaves the catalog at the previous version, never in between.

A migration must change the schema only through ``db.execute`` (or
sqlite-utils calls that use it, such as ``create_table`` and
``create_index``). Helpers that wrap themselves in ``with db.conn:``
(``insert``, ``transform``, ...) commit early; the runner detects that and
fails. ``executescript`` also commits first, so it is not used.

Before each migration of a file catalog that held a schema already, the
runner takes a safety copy with SQLite's backup API, ``PATH.vN.backup``
beside the database (N: the version it holds), and names it in the error
should the migration fail. A catalog created by this very run has nothing
to keep and gets no copy.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Callable, Iterable, NamedTuple, Sequence

from sqlite_utils import Database

from catalog.db import configure, database_file, transaction
from catalog.errors import CatalogError

MIGRATIONS_TABLE = "schema_migrations"


class Migration(NamedTuple):
    """One forward step of the schema: applied once, in version order."""

    version: int
    name: str
    fn: Callable[[Database], None]


def _create_titles_tracks_ranges(db: Database) -> None:
    # Raw DDL because sqlite-utils 3.30's create_table cannot express CHECK,
    # ON DELETE CASCADE or a composite UNIQUE.
    db.execute(
        """
        CREATE TABLE titles (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            origin_url TEXT,
            container TEXT NOT NULL,
            media_path TEXT,
            folder TEXT,
            size INTEGER CHECK (size IS NULL OR size >= 0),
            duration_ns INTEGER CHECK (duration_ns IS NULL OR duration_ns >= 0),
            bitrate INTEGER CHECK (bitrate IS NULL OR bitrate >= 0),
            etag TEXT,
            last_modified TEXT,
            state TEXT NOT NULL CHECK (state IN ('remote', 'partial', 'complete')),
            pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
            hits INTEGER NOT NULL DEFAULT 0 CHECK (hits >= 0),
            last_access REAL,
            created REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tracks (
            id INTEGER PRIMARY KEY,
            title_id INTEGER NOT NULL REFERENCES titles(id) ON DELETE CASCADE,
            track_index INTEGER NOT NULL CHECK (track_index >= 0),
            media_type TEXT NOT NULL,
            codec TEXT NOT NULL,
            payload_type INTEGER NOT NULL CHECK (payload_type BETWEEN 0 AND 127),
            clock_rate INTEGER NOT NULL CHECK (clock_rate > 0),
            fmtp TEXT,
            hint_path TEXT NOT NULL,
            packets INTEGER NOT NULL CHECK (packets >= 0),
            UNIQUE (title_id, track_index)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE cached_ranges (
            title_id INTEGER NOT NULL REFERENCES titles(id) ON DELETE CASCADE,
            start INTEGER NOT NULL CHECK (start >= 0),
            "end" INTEGER NOT NULL,
            PRIMARY KEY (title_id, start),
            CHECK ("end" > start)
        )
        """
    )
    # Eviction scans by state and by last access; the UNIQUE constraints
    # already index titles.name, tracks(title_id, ...) and the range key.
    db["titles"].create_index(["state"])
    db["titles"].create_index(["last_access"])


def _create_cache_meta(db: Database) -> None:
    # Small numbers the cache keeps across restarts (the size-aware
    # eviction policy's inflation value), one row per key.
    db.execute(
        """
        CREATE TABLE cache_meta (
            key TEXT PRIMARY KEY,
            value REAL NOT NULL
        )
        """
    )
    # The size-aware policy's rank of a title, set when it is played.
    db.execute("ALTER TABLE titles ADD COLUMN cache_priority REAL NOT NULL DEFAULT 0")


def _add_titles_damaged(db: Database) -> None:
    # Why a title's cached files are no longer what was recorded (a file
    # cut short or changed under a stream); NULL while they are sound. A
    # column beside the fill state, not a state: a damaged title was
    # complete or partial, and fetching it again starts from either.
    db.execute("ALTER TABLE titles ADD COLUMN damaged TEXT")
    # Which file a complete title's media file was when it was recorded
    # (inode, modification time; NULL: not known): one replaced or
    # rewritten since, even at the same size, is not what was indexed.
    db.execute("ALTER TABLE titles ADD COLUMN media_inode INTEGER")
    db.execute("ALTER TABLE titles ADD COLUMN media_mtime_ns INTEGER")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create_titles_tracks_ranges", _create_titles_tracks_ranges),
    Migration(2, "create_cache_meta", _create_cache_meta),
    Migration(3, "add_titles_damaged", _add_titles_damaged),
)


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Reject a migration list whose versions are not positive and strictly increasing."""
    previous = 0
    for migration in migrations:
        if not isinstance(migration.version, int) or migration.version <= previous:
            raise CatalogError(
                f"migration {migration.name!r}: version {migration.version!r} must be an "
                f"integer greater than {previous}"
            )
        previous = migration.version


def schema_version(db: Database) -> int:
    """The highest migration version recorded in ``db`` (0 for a fresh database)."""
    if not db[MIGRATIONS_TABLE].exists():
        return 0
    row = db.execute(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").fetchone()
    return row[0] or 0


def migrate(
    db: Database,
    migrations: Iterable[Migration] = MIGRATIONS,
    *,
    clock: Callable[[], float] = time.time,
) -> list[int]:
    """Bring ``db`` up to the last of ``migrations``; return the versions applied now.

    ``db`` is first set up with :func:`catalog.db.configure` (autocommit,
    foreign keys, WAL), which the runner's transactions rely on. Raises
    :class:`CatalogError`, leaving the schema untouched, when ``db`` was
    written by a newer kvod (its version is beyond the last one known here).
    Safe to run from several processes at once: each step re-reads the
    version under the write lock and skips what another process applied.
    """
    configure(db)
    migrations = [Migration(*m) for m in migrations]
    check_migrations(migrations)
    known = migrations[-1].version if migrations else 0
    found = schema_version(db)
    if found > known:
        raise CatalogError(
            f"catalog schema version {found} is newer than this kvod supports ({known}); "
            "upgrade kvod or restore a matching catalog"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= found:
            continue
        copy = None
        if found > 0 and database_file(db):
            copy = safety_copy(db, schema_version(db))
        try:
            with transaction(db):
                if schema_version(db) >= migration.version:
                    continue
                _ensure_migrations_table(db)
                migration.fn(db)
                if not db.conn.in_transaction:
                    raise CatalogError("it committed its own transaction; use db.execute")
                db.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, clock()),
                )
        except Exception as exc:
            kept = f"; the catalog is unchanged, and a safety copy of it is {copy}" if copy else ""
            raise CatalogError(
                f"migration {migration.version} ({migration.name}) failed: {exc}{kept}"
            ) from exc
        applied.append(migration.version)
    return applied


def safety_copy(db: Database, version: int) -> str | None:
    """Copy the file catalog ``db`` (at schema ``version``) to ``PATH.vVERSION.backup``
    with SQLite's backup API; return the copy's path.

    The copy is written to a temporary name, synced and renamed, so a copy
    under the final name is always whole. Returns None, keeping no copy,
    when another process migrated the catalog past ``version`` meanwhile
    (the copy would not be of ``version``). Raises :class:`CatalogError`
    when the copy cannot be made: no migration runs without one.
    """
    path = database_file(db)
    target = f"{path}.v{version}.backup"
    temporary = f"{target}.{os.getpid()}.tmp"
    try:
        copy = sqlite3.connect(temporary)
        try:
            # Not inside the migration's transaction: a backup from a
            # connection that holds the write lock waits for itself.
            db.conn.backup(copy)
            copied = schema_version(Database(copy))
            # One self-contained file: no -wal beside the copy.
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        if copied != version:
            os.unlink(temporary)
            return None
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, target)
        folder = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except (OSError, sqlite3.Error) as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise CatalogError(
            f"cannot take the safety copy {target} before migrating the catalog from "
            f"version {version} ({exc}); free space beside it and retry") from exc
    return target


def _ensure_migrations_table(db: Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
