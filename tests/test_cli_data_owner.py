"""``kvod catalog add`` by root or by a member of the data's group while the
service (its own user) runs: every file the command makes is usable by the
service, which can later evict what the command added."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from appliance.bench.daemon import ServeProcess
from tests.helpers.daemon import KVOD, KvodDaemon

pytestmark = pytest.mark.integration

SERVICE = 65534          # nobody: stands for the package's kvod user
OPERATOR = 54321         # a member of the service's group, not root


@pytest.fixture
def data_folder():
    """A world-traversable folder (the tests' own tmp is root's only) with a
    data folder owned by the service user, setgid to its group, as the
    package's tmpfiles.d makes /var/lib/kvod."""
    top = tempfile.mkdtemp(prefix="kvod-owner-", dir="/var/tmp")
    os.chmod(top, 0o755)
    data = os.path.join(top, "data")
    os.mkdir(data)
    os.chown(data, SERVICE, SERVICE)
    os.chmod(data, 0o2775)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def kvod_as(uid: int | None, config: str, *args: str) -> subprocess.CompletedProcess:
    who = {} if uid is None else dict(user=uid, group=uid, extra_groups=[SERVICE])
    return subprocess.run(KVOD + ["--config", config, *args], capture_output=True, text=True,
                          timeout=120, **who)


def owners(folder: str) -> set[tuple[int, int]]:
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            found.add((st.st_uid, st.st_gid))
    return found


@pytest.mark.parametrize("who", ["root", "group member"])
def test_files_the_cli_adds_belong_to_the_service_which_can_evict_them(data_folder, ts_file,
                                                                       who):
    d = KvodDaemon(data_folder)
    with open(d.config) as f:
        config = f.read().replace('path = "catalog.db"', 'path = "data/catalog.db"')
    config = config.replace('dir = "cache"', 'dir = "data/cache"')
    with open(d.config, "w") as f:
        f.write(config)
    os.chmod(d.config, 0o644)
    media = os.path.join(data_folder, "movie.ts")
    shutil.copyfile(ts_file, media)
    os.chmod(media, 0o644)
    data = os.path.join(data_folder, "data")
    uid = None if who == "root" else OPERATOR
    # the catalog exists (the service made it) before the operator adds
    made = kvod_as(SERVICE, d.config, "catalog", "list")
    assert made.returncode == 0, made.stderr
    added = kvod_as(uid, d.config, "catalog", "add", media, "--name", "films/a")
    assert added.returncode == 0, added.stderr
    if who == "root":
        assert owners(data) == {(SERVICE, SERVICE)}
    else:
        # the operator's files, in the service's group, which may change them
        assert {gid for _, gid in owners(data)} == {SERVICE}
    d.serve = ServeProcess(d.config, d.port, d.log_path, user=SERVICE)
    d.start()
    try:
        evicted = kvod_as(uid, d.config, "cache", "evict", "films/a")
        assert evicted.returncode == 0, (evicted.stderr, d.log())
        assert "evicted films/a" in d.log()   # the service did it, as its user
        title = json.loads(kvod_as(uid, d.config, "catalog", "show", "films/a",
                                   "--json").stdout)
        assert title["state"] == "remote" or not os.path.exists(title["media_path"])
        assert "Traceback" not in d.log()
    finally:
        assert d.stop() == 0, d.log()
