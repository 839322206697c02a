"""ISO BMFF box writers for fragmented MP4 (ISO/IEC 14496-12).

Each function returns one box's bytes. The per-sample rows of a ``trun``
are packed from arrays in one call, so a segment's ``moof`` costs no
Python loop per sample. What these write is read back in the tests with
the box parser of ``rtpengine.index.mp4_boxes``.
"""

from __future__ import annotations

import array
import struct
import sys
from typing import Optional, Sequence

#: tfhd: sample data offsets count from the start of the moof
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
#: trun flags: a data offset, and per-sample duration, size, flags and
#: composition offset
TRUN_DATA_OFFSET = 0x000001
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200
TRUN_FLAGS = 0x000400
TRUN_CTO = 0x000800
#: sample flags (14496-12 8.8.3.1): a sync sample depends on no other; any
#: other depends on others and is not a sync sample
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000

_U32_MAX = 0xFFFFFFFF


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box of type ``kind`` around ``payload`` (a 64-bit size if needed)."""
    if len(kind) != 4:
        raise ValueError(f"a box type is 4 bytes, not {kind!r}")
    body = b"".join(payload)
    if len(body) + 8 <= _U32_MAX:
        return struct.pack(">I4s", len(body) + 8, kind) + body
    return struct.pack(">I4sQ", 1, kind, len(body) + 16) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A full box: ``version`` and 24-bit ``flags`` before ``payload``."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def ftyp(major: bytes = b"iso6", compatible: Sequence[bytes] = (b"iso6", b"mp41")) -> bytes:
    """The file type box of an fMP4 init segment."""
    return box(b"ftyp", major, struct.pack(">I", 0), *compatible)


def mdat_header(payload_size: int) -> bytes:
    """The header of an ``mdat`` of ``payload_size`` bytes (the payload is
    sent from the file after it)."""
    if payload_size + 8 <= _U32_MAX:
        return struct.pack(">I4s", payload_size + 8, b"mdat")
    return struct.pack(">I4sQ", 1, b"mdat", payload_size + 16)


def trex(track_id: int) -> bytes:
    """Track defaults for fragments: none (every trun says its own)."""
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0))


def mvex(track_ids: Sequence[int]) -> bytes:
    """The movie extends box: the movie goes on in fragments."""
    return box(b"mvex", *(trex(t) for t in track_ids))


def mfhd(sequence_number: int) -> bytes:
    """The movie fragment header: fragments count up from 1."""
    return full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))


def tfhd(track_id: int) -> bytes:
    """The track fragment header: offsets from the moof, no defaults."""
    return full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id))


def tfdt(base_media_decode_time: int) -> bytes:
    """The decode time of the fragment's first sample, in media ticks."""
    return full_box(b"tfdt", 1, 0, struct.pack(">Q", base_media_decode_time))


def trun(data_offset: int, durations: array.array, sizes: array.array,
         flags: array.array, ctos: Optional[array.array]) -> bytes:
    """A track run: ``len(sizes)`` samples whose bytes start ``data_offset``
    bytes after the moof, one row each of duration, size, flags and (when
    ``ctos`` is given, as u32 holding int32) composition offset."""
    n = len(sizes)
    columns = [durations, sizes, flags] + ([ctos] if ctos is not None else [])
    if any(len(c) != n for c in columns):
        raise ValueError("trun columns of different lengths")
    if not -(1 << 31) <= data_offset < 1 << 31:
        raise ValueError(f"trun data offset {data_offset} does not fit 32 bits")
    rows = array.array("I", bytes(4 * n * len(columns)))
    for i, column in enumerate(columns):
        rows[i::len(columns)] = column
    if sys.byteorder == "little":
        rows.byteswap()
    bits = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS
    version = 0
    if ctos is not None:
        bits |= TRUN_CTO
        # version 1 reads the offsets as signed: needed only for negative ones
        version = 1 if any(c >> 31 for c in ctos) else 0
    return full_box(b"trun", version, bits, struct.pack(">Ii", n, data_offset),
                    rows.tobytes())
