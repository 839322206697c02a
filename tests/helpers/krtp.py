"""What the krtp module's tests share inside the QEMU guest."""

from __future__ import annotations

import os

from rtpengine import krtp

STRATEGIES = ["krtpsendfile", "krtpmsend"]
# 6.5+ sends with MSG_SPLICE_PAGES; 6.1 with ->sendpage (both in GSO batches)
SPLICE_KERNEL = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 5)


def raw_fd() -> int:
    """A /dev/krtp descriptor before any handshake."""
    return os.open(krtp.DEVICE, os.O_RDWR | os.O_CLOEXEC)


def module_loaded() -> bool:
    """Whether the krtp module is loaded now."""
    with open("/proc/modules") as f:
        return any(line.split()[0] == "krtp" for line in f)
