"""Why a catalog file cannot be used, told as one line an operator can act on.

Opening a damaged catalog must not end in a traceback or a hang, whichever
command opens it: the file is checked before SQLite sees it (a directory, a
FIFO or a device is refused without reading it, so nothing can block on
it), SQLite's errors are turned into :class:`~catalog.db.CatalogUnusable`
with advice that fits their cause, and ``PRAGMA quick_check`` finds
scrambled pages at open instead of in the middle of a request.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import stat

from sqlite_utils import Database

from catalog.errors import CatalogUnusable

# Beside the database SQLite keeps these; each must be a plain file too, or
# SQLite would read from (and maybe block on) whatever stands there.
SIDE_FILES = ("-wal", "-shm", "-journal")

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)

# access() as the effective user, who is the one that opens the file.
_EFFECTIVE = os.access in os.supports_effective_ids

# SQLite result codes (primary, the low byte of the extended code).
_CORRUPT, _NOTADB = 11, 26
_READONLY, _CANTOPEN, _PERM, _AUTH = 8, 14, 3, 23
_IOERR, _FULL = 10, 13
_BUSY, _LOCKED = 5, 6


def safety_copies(path: str) -> list[str]:
    """The safety copies taken before migrations (``PATH.vN.backup``), newest first."""
    copies = glob.glob(glob.escape(path) + ".v*.backup")
    return sorted(copies, key=lambda p: os.stat(p).st_mtime, reverse=True)


def restore_advice(path: str) -> str:
    """What to do about a damaged catalog: restore it, or move it aside."""
    copies = safety_copies(path)
    where = (f" (kvod's safety copy from before its last schema migration is {copies[0]}; "
             "it lacks later changes)") if copies else ""
    return (f"restore it from a backup{where}, or move it aside "
            f"(mv {path} {path}.damaged) and kvod starts with an empty catalog")


def _access_advice(path: str) -> str:
    folder = os.path.dirname(path) or "."
    return (f"kvod needs to read and write it and to create files in {folder}: give the "
            "user kvod runs as (uid %d) that access, or restore the file" % os.geteuid())


def _kind(mode: int) -> str | None:
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_files(path: str) -> None:
    """Refuse, before SQLite opens it, a catalog that is not a readable, writable
    plain file (or missing: then it is created), or whose folder cannot hold
    the WAL files. Never opens the file, so a FIFO cannot block this."""
    for name in (path, *(path + suffix for suffix in SIDE_FILES)):
        what = "it" if name == path else name
        try:
            mode = os.stat(name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CatalogUnusable(path, f"cannot look at {what} ({exc.strerror})",
                                  _access_advice(path)) from None
        kind = _kind(mode)
        if kind is not None:
            raise CatalogUnusable(
                path, f"{what} is {kind}, not a database file",
                f"move it aside (mv {name} {name}.damaged) and kvod starts with an empty "
                "catalog, or set [catalog] path to the catalog file")
        # Only stat and access(), never open(): closing any descriptor of a
        # database file drops every POSIX lock this process holds on it, and
        # the daemon's other connections hold theirs while a thread opens one.
        if not os.access(name, os.R_OK | os.W_OK, effective_ids=_EFFECTIVE):
            raise CatalogUnusable(path, f"cannot open {what} for reading and writing "
                                        "(permission denied)", _access_advice(path))
    folder = os.path.dirname(path) or "."
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK,
                                               effective_ids=_EFFECTIVE):
        raise CatalogUnusable(
            path, f"its folder {folder} is not writable, and SQLite must create "
                  f"{os.path.basename(path)}-wal and -shm there", _access_advice(path))


def unusable(path: str, exc: sqlite3.Error) -> CatalogUnusable:
    """The operator's account of an SQLite error met while opening ``path``."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_CORRUPT, _NOTADB) or isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in str(exc) or "not a database" in str(exc)):
        return CatalogUnusable(path, f"damaged ({exc})", restore_advice(path))
    if code in (_READONLY, _CANTOPEN, _PERM, _AUTH):
        return CatalogUnusable(path, f"cannot be opened for writing ({exc})",
                               _access_advice(path))
    if code == _FULL:
        return CatalogUnusable(path, f"no room to write it ({exc})",
                               f"free space on the disk that holds {path}")
    if code in (_BUSY, _LOCKED):
        return CatalogUnusable(path, f"locked by another process ({exc})",
                               "stop the other kvod process that holds it, then retry")
    if code == _IOERR:
        return CatalogUnusable(path, f"reading it failed ({exc})",
                               "check the disk (dmesg); then " + restore_advice(path))
    return CatalogUnusable(path, f"cannot be opened ({exc})", restore_advice(path))


def check_integrity(db: Database, path: str) -> None:
    """Refuse a catalog whose pages SQLite finds damaged (``PRAGMA quick_check``).

    quick_check reads every page but skips the index-content comparison of
    a full integrity check: milliseconds for a catalog of thousands of
    titles, and it catches scrambled pages at open rather than later, in a
    viewer's request or halfway through a write.
    """
    try:
        rows = db.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.Error as exc:
        raise unusable(path, exc) from None
    if rows != [("ok",)]:
        found = "; ".join(str(r[0]) for r in rows)
        raise CatalogUnusable(path, f"damaged (SQLite's check found: {found})",
                              restore_advice(path))
