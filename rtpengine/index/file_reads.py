"""Reading media files that may change while they are read.

kvod never maps a media file it reads from Python (or from C called by
Python): a mapped page past the end of a file cut short meanwhile raises
SIGBUS, which kills the process and which Python cannot catch. These read
with ``pread`` instead, so a file that shrank is a short read and a
:class:`~rtpengine.index.errors.FileChanged` error naming it.
"""

from __future__ import annotations

import os

from rtpengine.index.errors import FileChanged, MediaError


class FileBytes:
    """The bytes of an open file, read with ``pread`` when asked for:
    what a fill's growing index reads instead of a mapping of the file it
    writes (a page past the end of a file cut short meanwhile would kill
    the daemon with SIGBUS; a short read here is a :class:`FileChanged`).
    Indexing and slicing read the file; ``fd`` stays the caller's."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``, or FileChanged."""
        data = os.pread(self.fd, size, offset)
        if len(data) == size:
            return data
        return bytes(self.read_into(bytearray(size), offset, size))

    def read_into(self, buf: bytearray, offset: int, size: int) -> memoryview:
        """:meth:`read` into ``buf`` (its first ``size`` bytes, returned as a
        view): a scan that reads window after window reuses one buffer."""
        view = memoryview(buf)[:size]
        got = 0
        while got < size:
            n = os.preadv(self.fd, [view[got:]], offset + got)
            if n == 0:
                raise FileChanged(f"{self.name}: the file was cut short: it ends at byte "
                                  f"{offset + got}, {offset + size} were there")
            got += n
        return view

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(1 << 62)
            if step != 1:
                raise ValueError("FileBytes slices have no step")
            return self.read(start, max(stop - start, 0))
        return self.read(key, 1)[0]


def read_window(src, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of ``src``: a :class:`FileBytes` or any
    buffer holding the file from offset 0."""
    if isinstance(src, FileBytes):
        return src.read(offset, size)
    data = bytes(memoryview(src)[offset:offset + size])
    if len(data) < size:
        raise MediaError(f"buffer of {len(src)} bytes, asked for {offset + size}")
    return data


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is still the one that was read: device, inode,
    size and modification time."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_exactly(fd: int, buf: bytearray, offset: int, size: int, name: str) -> memoryview:
    """Fill ``buf[:size]`` from ``fd`` at ``offset``; FileChanged if the file
    ends before (it shrank since its size was read)."""
    view = memoryview(buf)[:size]
    got = 0
    while got < size:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise FileChanged(f"{name}: the file changed while it was indexed: it ends "
                              f"at byte {offset + got}, it had {offset + size}+ bytes")
        got += n
    return view
