"""A damaged or inaccessible catalog.db, met by every kvod command that opens it.

Real files, real processes: each kind of damage is made on disk, then each
command runs against it. Every one must exit 1 with one line that names the
file and says what to do, never a traceback, never a hang, and must leave
the file as it found it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import time

import pytest

from catalog import open_catalog
from tests.helpers.daemon import KVOD, KvodDaemon

# Generous for a loaded machine; a command that waits on a FIFO would hit it.
COMMAND_TIMEOUT = 30

COMMANDS = {
    "serve": ("serve",),
    "catalog-list": ("catalog", "list"),
    "catalog-show": ("catalog", "show", "t1"),
    "catalog-add": ("catalog", "add", "{ts_file}", "--name", "new"),
    "catalog-add-url": ("catalog", "add", "http://127.0.0.1:9/a.ts"),
    "catalog-rm": ("catalog", "rm", "t1"),
    "cache-status": ("cache", "status"),
    "cache-pin": ("cache", "pin", "t1"),
    "cache-unpin": ("cache", "unpin", "t1"),
    "cache-evict": ("cache", "evict", "t1"),
    "cache-prefetch": ("cache", "prefetch", "t1", "--timeout", "5"),
}

# Root passes every permission check; the permission cases drop the
# capabilities that let it, so they are tested for real here too.
DROP_DAC = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])


def _good_catalog(path: str, titles: int = 200) -> None:
    with open_catalog(path) as cat:
        for i in range(titles):
            cat.add_title(f"t{i}", container="mpegts", now=1.0,
                          origin_url="http://127.0.0.1:9/" + "a" * 200)
        cat.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _truncated(path: str) -> None:
    _good_catalog(path)
    os.truncate(path, os.path.getsize(path) // 2 + 100)


def _garbage(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"not a catalog " + bytes(range(256)) * 40)


def _scrambled(path: str) -> None:
    # The header and the schema page stay good, so SQLite opens it fine;
    # the titles' pages are noise.
    _good_catalog(path)
    with open(path, "r+b") as f:
        f.seek(2 * 4096)
        f.write(bytes((i * 131 + 7) % 256 for i in range(3 * 4096)))


def _unreadable(path: str) -> None:
    _good_catalog(path)
    os.chmod(path, 0)


def _read_only_folder(path: str) -> None:
    # WAL needs catalog.db-wal and -shm beside the file.
    _good_catalog(path)
    folder = os.path.dirname(path)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)


DAMAGE = {
    "truncated": (_truncated, "damaged", "move it aside"),
    "garbage": (_garbage, "damaged (file is not a database)", "move it aside"),
    "directory": (os.mkdir, "it is a directory", "move it aside"),
    "fifo": (os.mkfifo, "it is a FIFO", "move it aside"),
    "wal-fifo": (lambda p: (_good_catalog(p), os.mkfifo(p + "-wal")), "-wal is a FIFO",
                 "move it aside"),
    "scrambled": (_scrambled, "damaged", "restore it from a backup"),
    "unreadable": (_unreadable, "permission denied", "kvod needs to read and write it"),
    "read-only-folder": (_read_only_folder, "is not writable", "kvod needs to read and write"),
}


def _snapshot(path: str) -> str | None:
    """The file's digest, or None when it is no plain file this test can read
    (opening a FIFO would block the test itself)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_command_names_the_damaged_catalog_in_one_line(tmp_path, ts_file, kind, command):
    folder = tmp_path / "kvod"
    folder.mkdir()
    daemon = KvodDaemon(str(folder))
    path = os.path.join(str(folder), "catalog.db")
    damage, problem, advice = DAMAGE[kind]
    damage(path)
    before = _snapshot(path)
    args = [a.format(ts_file=ts_file) for a in COMMANDS[command]]
    started = time.monotonic()
    try:
        result = subprocess.run([*DROP_DAC, *KVOD, "--config", daemon.config, *args],
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    finally:
        os.chmod(folder, 0o755)
    took = time.monotonic() - started
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: catalog {path}: "), lines[0]
    assert problem in lines[0] and advice in lines[0], lines[0]
    assert took < COMMAND_TIMEOUT
    assert _snapshot(path) == before, "the command changed the damaged file"


def test_a_fifo_catalog_never_blocks(tmp_path):
    """Opening reads nothing from a FIFO: no writer ever comes, yet the
    command answers at once."""
    folder = tmp_path / "kvod"
    folder.mkdir()
    daemon = KvodDaemon(str(folder))
    os.mkfifo(folder / "catalog.db")
    started = time.monotonic()
    result = daemon.kvod("catalog", "list", check=False, timeout=10)
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and "it is a FIFO" in result.stderr


def test_an_error_names_the_safety_copy_to_restore(tmp_path):
    """Once a migration has taken a safety copy, the advice for a damaged
    catalog points at it."""
    path = str(tmp_path / "catalog.db")
    _good_catalog(path, titles=3)
    copy = path + ".v1.backup"
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    _garbage(path)
    daemon = KvodDaemon(str(tmp_path))
    result = daemon.kvod("catalog", "list", check=False)
    assert result.returncode == 1
    assert f"kvod's safety copy from before its last schema migration is {copy}" \
        in result.stderr
