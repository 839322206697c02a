"""Media files changed, swapped or named against kvod (issue 11, "Media
files"): no change to a file on disk, and no title name, may crash a
command or the daemon, or leave a title that is not what it says."""

from __future__ import annotations

import os

import pytest

from appliance.cache.layout import NAME_MAX, title_folder
from tests.helpers.daemon import KvodDaemon

# 85 segments of "a/" percent-encode to 85 * 4 - 3 = 337 bytes: more than
# a file system's 255-byte file name limit, though a valid title name
LONG_NAME = "/".join(["a"] * 85) + "x" * 80


@pytest.fixture
def kvod(tmp_path):
    return KvodDaemon(str(tmp_path))


def test_long_title_names_get_folders_the_file_system_takes(tmp_path):
    folder = title_folder(str(tmp_path), LONG_NAME)
    assert len(os.path.basename(folder).encode()) <= NAME_MAX
    os.makedirs(folder)
    # still one folder per name: a name sharing the long prefix differs
    assert title_folder(str(tmp_path), LONG_NAME + "y") != folder
    # and short names keep their readable folder
    assert os.path.basename(title_folder(str(tmp_path), "a/b")) == "a%2Fb"


def test_catalog_add_takes_a_name_whose_folder_would_be_too_long(kvod, short_ts_file):
    assert len(LONG_NAME) <= 255
    done = kvod.kvod("catalog", "add", short_ts_file, "--name", LONG_NAME, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    listed = kvod.kvod("catalog", "show", LONG_NAME)
    assert "complete" in listed.stdout


# --- a file that changes while it is indexed (or added) -----------------

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from tests.helpers.daemon import PYTHON, ROOT  # noqa: E402

# Runs in a child: a SIGBUS would kill pytest itself. The file is cut to
# 192 kB once the indexer has found the program (after it opened the file,
# before its scan), the way an operator's copy or a fill's rollback would.
SHRINK_WHILE_INDEXED = """
import os, sys
from rtpengine.index import mpegts
path, hint = sys.argv[1], sys.argv[2]
real = mpegts.find_program
def find_then_shrink(*args, **kwargs):
    found = real(*args, **kwargs)
    os.truncate(path, 188 * 1024)  # packet and page aligned
    return found
mpegts.find_program = find_then_shrink
try:
    mpegts.index_mpegts(path, hint)
except mpegts.MediaError as exc:
    print("MediaError:", exc)
    sys.exit(3)
print("indexed")
"""


def test_indexer_does_not_fault_on_a_file_that_shrinks(tmp_path, ts_file):
    path = str(tmp_path / "shrinking.ts")
    shutil.copyfile(ts_file, path)
    assert os.path.getsize(path) > 1 << 20
    done = subprocess.run([PYTHON, "-c", SHRINK_WHILE_INDEXED, path, str(tmp_path / "t.hint")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != -signal.SIGBUS, "the indexer died of SIGBUS"
    assert done.returncode == 3, done.stdout + done.stderr
    assert "changed while it was indexed" in done.stdout
    assert not (tmp_path / "t.hint").exists()
