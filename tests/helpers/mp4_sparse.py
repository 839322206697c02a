"""An MP4 as a fill holds it once the moov is fetched: the top-level box
headers and the moov, zeros elsewhere. The walk reads box sizes as the
format defines them (0: to the end, 1: a 64-bit size follows), and stops
at a size smaller than its header, so lying files from the fuzz tests end
the walk instead of looping on it; the index under test is the one that
must refuse them."""

from __future__ import annotations

import struct
from typing import Iterator


def top_level_boxes(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, header length, size, type) of each top-level box, as far as
    the sizes can be followed."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= len(data):
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            yield pos, header, header, kind
            return
        yield pos, header, size, kind
        pos += size


def headers_and_moov(data: bytes) -> bytearray:
    """A sparse copy of ``data``: its top-level box headers and its moov."""
    buf = bytearray(len(data))
    for pos, header, size, kind in top_level_boxes(data):
        keep = size if kind == b"moov" else header
        buf[pos:pos + keep] = data[pos:pos + keep]
    return buf
