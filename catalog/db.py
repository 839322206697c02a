"""Opening the catalog's SQLite connection and running transactions on it.

Everything here works on a plain ``sqlite_utils.Database``. The connection
is switched to autocommit (``isolation_level=None``) so that transactions
are only the explicit ``BEGIN IMMEDIATE`` ... ``COMMIT`` blocks of
:func:`transaction`: Python's implicit transactions would otherwise commit
schema changes on their own and break the all-or-nothing migrations.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Iterator

from sqlite_utils import Database

from catalog.diagnosis import check_files, check_integrity, unusable
from catalog.errors import CatalogError

# Long enough to ride out another process's migration or bulk write, short
# enough that a wedged writer is reported instead of hanging the daemon.
BUSY_TIMEOUT_MS = 5000


def connect(path: str | os.PathLike[str] | None) -> Database:
    """Open the catalog database at ``path`` (``None``: in memory) and configure it.

    The parent folder of a file catalog is created if missing. The schema is
    not touched here; see :func:`catalog.migrations.migrate`. A file that
    cannot serve as the catalog (not a plain file, not accessible, damaged)
    is a :class:`CatalogUnusable` saying what to do; nothing here blocks on
    a FIFO or hands a damaged file on.
    """
    if path is None:
        return configure(Database(memory=True))
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot open catalog {path}: cannot create its folder "
                           f"({exc.strerror})") from None
    check_files(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise unusable(path, exc) from None
    try:
        db = configure(Database(conn))
        check_integrity(db, path)
        return db
    except CatalogError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        # "file is not a database" surfaces on the first statement.
        raise unusable(path, exc) from None


def configure(db: Database) -> Database:
    """Apply the connection settings the catalog relies on, and return ``db``.

    Autocommit mode, foreign keys on (they are per connection and off by
    default), a busy timeout, and WAL for file databases so that readers in
    other processes never block the daemon's writes.
    """
    if db.conn.in_transaction:
        raise CatalogError("cannot configure a catalog connection inside a transaction")
    db.conn.isolation_level = None
    db.execute("PRAGMA foreign_keys = ON")
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if is_file_database(db):
        db.enable_wal()
        if db.journal_mode != "wal":
            raise CatalogError(
                f"catalog {database_file(db)} refused WAL mode (journal_mode={db.journal_mode})"
            )
        # In WAL mode NORMAL cannot corrupt the database; a power cut may
        # lose the last commits, never earlier ones. That is the safe side
        # for everything the catalog holds (a lost cached-range record means
        # those bytes are fetched again), and it takes the fsync out of
        # every commit on the request path (a DESCRIBE records a hit).
        db.execute("PRAGMA synchronous = NORMAL")
    return db


def database_file(db: Database) -> str:
    """The file behind the main schema of ``db``, or ``""`` when it is in memory."""
    for _seq, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or ""
    return ""


def is_file_database(db: Database) -> bool:
    """Whether ``db`` is backed by a file (WAL applies only then)."""
    return database_file(db) != ""


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[Database]:
    """Run the block as one write transaction: all of it commits, or none of it.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so a read-then-write
    inside the block cannot race another connection. SQLite errors raised
    inside are re-raised as :class:`CatalogError` after the rollback.
    Transactions do not nest; the block must not commit on its own (for
    instance through a sqlite-utils helper that wraps itself in
    ``with db.conn:``), which is reported as an error.
    """
    if db.conn.isolation_level is not None:
        # Python's implicit BEGIN would reopen a transaction the block ended
        # and hide the early commit; see configure().
        raise CatalogError("catalog transactions need a connection set up by configure()")
    if db.conn.in_transaction:
        raise CatalogError("catalog transactions do not nest")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise CatalogError(f"cannot start a catalog transaction: {exc}") from exc
    try:
        yield db
        if not db.conn.in_transaction:
            raise CatalogError("the transaction was committed or rolled back inside its block")
        db.execute("COMMIT")
    except BaseException as exc:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise CatalogError(f"catalog write failed: {exc}") from exc
        raise
