"""Fixtures for the tests that run inside the QEMU guest, as root, against
the krtp module (tests/test_krtp_kernel.py boots the guest and runs them;
on the host they are not collected).

KRTP_KO names the module to load. Every test must leave the module as it
found it: no stream open, no page reference held (checked after each).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from rtpengine import krtp
from tests.helpers.engine import Receiver
from tests.helpers.krtp import module_loaded


@pytest.fixture(scope="session", autouse=True)
def krtp_module():
    """Load the module once for the session."""
    if not module_loaded():
        subprocess.run(["insmod", os.environ["KRTP_KO"]], check=True)
    assert os.path.exists(krtp.DEVICE)
    yield


@pytest.fixture
def engine_factory():
    """Make engines; all are closed at the end, then nothing may be held."""
    made: list[krtp.KrtpEngine] = []

    def make(strategy: str = "krtpsendfile") -> krtp.KrtpEngine:
        e = krtp.KrtpEngine(strategy=strategy)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()
    if module_loaded():
        with krtp.KrtpEngine() as probe:
            info = probe.info()
        assert info.streams == 0 and info.pages_held == 0 and info.files == 1, info


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make() -> Receiver:
        r = Receiver(rcvbuf=64 << 20)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def tmpfs_copy(tmp_path):
    """Copy a file to the guest's /tmp (tmpfs: the shmem page cache path)."""
    def copy(path: str) -> str:
        dest = tmp_path / os.path.basename(path)
        shutil.copyfile(path, dest)
        return os.fspath(dest)
    return copy
