"""Runs last in the guest: with every stream gone the module unloads, and
the kernel log shows no warning, oops or leak from the whole session."""

from __future__ import annotations

import os
import subprocess

from rtpengine import krtp
from tests.kernel.qemu import KERNEL_TROUBLE


def test_unload_is_clean():
    with krtp.KrtpEngine() as e:
        info = e.info()
    assert info.streams == 0 and info.pages_held == 0 and info.files == 1, info
    assert info.streams_opened > 0 and info.packets_sent > 0
    subprocess.run(["rmmod", "krtp"], check=True, timeout=60)
    assert not os.path.exists(krtp.DEVICE)
    log = subprocess.run(["dmesg"], check=True, capture_output=True, text=True).stdout
    trouble = [line for line in log.splitlines() if KERNEL_TROUBLE.search(line)]
    assert not trouble, "\n".join(trouble)
