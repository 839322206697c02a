"""Small disks for the disk-full tests: a tmpfs of a given size mounted on
a folder for the length of a test (root only; the test is skipped
otherwise)."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_disk(folder, size: str) -> Iterator:
    """``folder`` (made if missing) as a tmpfs of ``size`` (e.g. "2m")."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
