"""Starting the write-back of bytes just written, without waiting for it.

A fill makes its bytes durable with ``fsync`` every ``SYNC_BYTES`` (and at
the end); until then the kernel leaves them dirty in the page cache, so
the disk idles while the bytes come and each fsync, the last one above
all, waits for everything written since the one before. Handed to the
disk as they arrive (``sync_file_range(2)`` with ``SYNC_FILE_RANGE_WRITE``:
start writing, do not wait), they are mostly on disk by the time the
fsync asks. Nothing counts as durable before the fsync: this changes when
the disk works, not what the catalog records.

glibc's ``sync_file_range`` through ctypes (Python's ``os`` has none);
where it is missing, nothing is started early and fsync does it all.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional

_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Optional[Callable[[int, int, int, int], int]]:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, size: int) -> bool:
    """Start writing ``[offset, offset + size)`` of ``fd`` to disk; False if
    it could not be started (the fsync will do it)."""
    if _sync_file_range is None or size <= 0:
        return False
    return _sync_file_range(fd, offset, size, _SYNC_FILE_RANGE_WRITE) == 0


__all__ = ["start_writeback"]
