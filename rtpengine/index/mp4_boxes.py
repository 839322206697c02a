"""ISO BMFF (MP4) boxes: a bounded box walker and the boxes kvod reads.

Everything here runs once per box, never per sample: the fixed parts of
boxes are construct definitions, the sample tables are handed on as
arrays (:func:`u32_table`), byte-swapped in one call. Every size, count and
offset is untrusted: a box that claims more bytes than its parent holds, a
table whose count needs more bytes than its box, a nesting deeper than
:data:`MAX_DEPTH` or more than :data:`MAX_BOXES` boxes is a
:class:`MediaError` naming the box and its file offset.
"""

from __future__ import annotations

import array
import sys
from typing import Iterator, NamedTuple

import construct as cs

from rtpengine.index.errors import MediaError

MAX_DEPTH = 16
# far above what a film's moov holds (a few dozen boxes per track)
MAX_BOXES = 100_000
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex",
              b"moof", b"traf", b"udta"}


class Box(NamedTuple):
    """One box: its type, where it starts and where its payload lies."""

    type: bytes
    start: int          # file offset of the box header
    body: int           # file offset of the payload
    end: int            # file offset just past the box

    def data(self, buf, base: int = 0) -> memoryview:
        """The payload, from ``buf`` holding the file from offset ``base``."""
        return memoryview(buf)[self.body - base:self.end - base]

    def where(self) -> str:
        """How an error names this box: its type and file offset."""
        return f"{self.type.decode('latin-1')!r} box at offset {self.start}"


def iter_boxes(buf, start: int, end: int, *, base: int = 0, name: str = "<mp4>",
               budget: list[int] | None = None) -> Iterator[Box]:
    """The boxes in [start, end) of the file, ``buf`` holding it from ``base``.

    A size of 0 means "to the end" (only legal for the last box); a box
    running past ``end`` or smaller than its header is an error. Each box
    advances by at least 8 bytes, so the walk ends. ``budget`` (a one-item
    list) counts boxes across calls.
    """
    pos = start
    while pos < end:
        if end - pos < 8:
            raise MediaError(f"{name}: {end - pos} stray bytes at offset {pos} "
                             f"(a box header needs 8)")
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise MediaError(f"{name}: more than {MAX_BOXES} boxes")
        size = int.from_bytes(buf[pos - base:pos - base + 4], "big")
        kind = bytes(buf[pos - base + 4:pos - base + 8])
        header = 8
        if size == 1:
            if end - pos < 16:
                raise MediaError(f"{name}: {kind!r} box at offset {pos}: truncated "
                                 f"64-bit size")
            size = int.from_bytes(buf[pos - base + 8:pos - base + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise MediaError(f"{name}: {kind!r} box at offset {pos}: size {size} is "
                             f"smaller than its header")
        if size > end - pos:
            raise MediaError(f"{name}: {kind!r} box at offset {pos}: size {size} runs "
                             f"past its parent's end at {end} (truncated or lying)")
        yield Box(kind, pos, pos + header, pos + size)
        pos += size


def children(buf, box: Box, *, base: int = 0, name: str = "<mp4>", skip: int = 0,
             budget: list[int] | None = None) -> list[Box]:
    """The boxes inside ``box`` (after ``skip`` bytes of its own fields)."""
    return list(iter_boxes(buf, box.body + skip, box.end, base=base, name=name,
                           budget=budget))


def find(boxes: list[Box], kind: bytes) -> Box | None:
    """The first box of ``kind`` in ``boxes``."""
    return next((b for b in boxes if b.type == kind), None)


def parse(struct: cs.Construct, box: Box, buf, base: int, name: str):
    """Parse the payload of ``box`` with ``struct``; MediaError if it does not fit."""
    try:
        return struct.parse(bytes(box.data(buf, base)))
    except (cs.ConstructError, ValueError, OverflowError) as exc:
        raise MediaError(f"{name}: {box.where()}: malformed ({exc.__class__.__name__})") \
            from None


# ------------------------------------------------------------ definitions ---

FULL_BOX = cs.Struct("version" / cs.Int8ub, "flags" / cs.Int24ub)

MVHD = cs.Struct(
    "version" / cs.Int8ub, "flags" / cs.Int24ub,
    "times" / cs.IfThenElse(cs.this.version == 1, cs.Bytes(16), cs.Bytes(8)),
    "timescale" / cs.Int32ub,
    "duration" / cs.IfThenElse(cs.this.version == 1, cs.Int64ub, cs.Int32ub),
)
MDHD = MVHD
TKHD = cs.Struct(
    "version" / cs.Int8ub, "flags" / cs.Int24ub,
    "times" / cs.IfThenElse(cs.this.version == 1, cs.Bytes(16), cs.Bytes(8)),
    "track_id" / cs.Int32ub,
)
HDLR = cs.Struct("version" / cs.Int8ub, "flags" / cs.Int24ub, "pre_defined" / cs.Int32ub,
                 "handler_type" / cs.Bytes(4))
ELST = cs.Struct(
    "version" / cs.Int8ub, "flags" / cs.Int24ub,
    "entries" / cs.PrefixedArray(cs.Int32ub, cs.IfThenElse(
        cs.this._.version == 1,
        cs.Struct("segment_duration" / cs.Int64ub, "media_time" / cs.Int64sb,
                  "rate" / cs.Int32sb),
        cs.Struct("segment_duration" / cs.Int32ub, "media_time" / cs.Int32sb,
                  "rate" / cs.Int32sb))),
    cs.Terminated,
)
TREX = cs.Struct("version" / cs.Int8ub, "flags" / cs.Int24ub, "track_id" / cs.Int32ub,
                 "default_sample_description_index" / cs.Int32ub,
                 "default_sample_duration" / cs.Int32ub,
                 "default_sample_size" / cs.Int32ub,
                 "default_sample_flags" / cs.Int32ub)
TFHD_BASE_DATA_OFFSET = 0x000001
TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
TFHD = cs.Struct(
    "version" / cs.Int8ub, "flags" / cs.Int24ub, "track_id" / cs.Int32ub,
    "base_data_offset" / cs.If(cs.this.flags & 0x01, cs.Int64ub),
    "sample_description_index" / cs.If(cs.this.flags & 0x02, cs.Int32ub),
    "default_sample_duration" / cs.If(cs.this.flags & 0x08, cs.Int32ub),
    "default_sample_size" / cs.If(cs.this.flags & 0x10, cs.Int32ub),
    "default_sample_flags" / cs.If(cs.this.flags & 0x20, cs.Int32ub),
)
TFDT = cs.Struct("version" / cs.Int8ub, "flags" / cs.Int24ub,
                 "base_media_decode_time" / cs.IfThenElse(cs.this.version == 1, cs.Int64ub,
                                                          cs.Int32ub))
TRUN_DATA_OFFSET = 0x001
TRUN_FIRST_SAMPLE_FLAGS = 0x004
# per-sample fields, in the order they appear in each row
TRUN_SAMPLE_FIELDS = ((0x100, "duration"), (0x200, "size"), (0x400, "flags"),
                      (0x800, "cto"))
TRUN_HEADER = cs.Struct(
    "version" / cs.Int8ub, "flags" / cs.Int24ub, "sample_count" / cs.Int32ub,
    "data_offset" / cs.If(cs.this.flags & TRUN_DATA_OFFSET, cs.Int32sb),
    "first_sample_flags" / cs.If(cs.this.flags & TRUN_FIRST_SAMPLE_FLAGS, cs.Int32ub),
)
SAMPLE_IS_NON_SYNC = 0x00010000

STSD_HEADER = cs.Struct("version" / cs.Int8ub, "flags" / cs.Int24ub,
                        "entry_count" / cs.Int32ub)
# the fields of a visual sample entry before its child boxes (78 bytes)
VISUAL_ENTRY = cs.Struct(cs.Padding(6), "data_reference_index" / cs.Int16ub,
                         cs.Padding(16), "width" / cs.Int16ub, "height" / cs.Int16ub,
                         cs.Padding(50))
VISUAL_ENTRY_SIZE = 78
# an audio sample entry: QuickTime versions 1 and 2 add fields after these 28 bytes
AUDIO_ENTRY = cs.Struct(cs.Padding(6), "data_reference_index" / cs.Int16ub,
                        "qt_version" / cs.Int16ub, cs.Padding(6),
                        "channels" / cs.Int16ub, "sample_size" / cs.Int16ub,
                        cs.Padding(4), "sample_rate" / cs.Int32ub)
AUDIO_ENTRY_SIZE = {0: 28, 1: 44, 2: 64}

_PARAM_SET = cs.Prefixed(cs.Int16ub, cs.GreedyBytes)
AVCC = cs.Struct(
    "configuration_version" / cs.Const(1, cs.Int8ub),
    "profile" / cs.Int8ub, "compatibility" / cs.Int8ub, "level" / cs.Int8ub,
    "length_size_minus_one" / cs.BitStruct(cs.Padding(6), "value" / cs.BitsInteger(2)),
    # the SPS count is the low 5 bits of its byte
    "sps" / cs.PrefixedArray(cs.ExprAdapter(cs.Int8ub, lambda o, c: o & 0x1F,
                                            lambda o, c: o | 0xE0), _PARAM_SET),
    "pps" / cs.PrefixedArray(cs.Int8ub, _PARAM_SET),
    # high profiles carry chroma/bit-depth fields here; not needed
)
HVCC = cs.Struct(
    "configuration_version" / cs.Const(1, cs.Int8ub),
    "profile" / cs.Bytes(1),
    "compatibility" / cs.Bytes(4),
    "constraints" / cs.Bytes(6),
    "level" / cs.Int8ub,
    cs.Padding(8),
    "length_size_minus_one" / cs.ExprAdapter(cs.Int8ub, lambda o, c: o & 3,
                                             lambda o, c: o | 0xFC),
    "arrays" / cs.PrefixedArray(cs.Int8ub, cs.Struct(
        "nal_type" / cs.ExprAdapter(cs.Int8ub, lambda o, c: o & 0x3F, lambda o, c: o),
        "nalus" / cs.PrefixedArray(cs.Int16ub, _PARAM_SET))),
)


def u32_table(box: Box, buf, base: int, name: str, *, columns: int,
              header: int = 8, count_at: int = 4) -> array.array:
    """A table of big-endian u32 rows after ``header`` bytes of ``box``: the
    count at ``count_at`` must fit the box (never trusted to size memory)."""
    data = box.data(buf, base)
    if len(data) < header:
        raise MediaError(f"{name}: {box.where()}: truncated header")
    count = int.from_bytes(data[count_at:count_at + 4], "big")
    need = count * columns * 4
    if need > len(data) - header:
        raise MediaError(f"{name}: {box.where()}: {count} entries need {need} bytes, "
                         f"the box holds {len(data) - header}")
    table = array.array("I")
    assert table.itemsize == 4
    table.frombytes(data[header:header + need])
    if sys.byteorder == "little":
        table.byteswap()
    return table


def u64_table(box: Box, buf, base: int, name: str) -> array.array:
    """co64's offsets (or stco's, widened) in host order."""
    if box.type == b"stco":
        narrow = u32_table(box, buf, base, name, columns=1)
        return array.array("Q", narrow)
    data = box.data(buf, base)
    if len(data) < 8:
        raise MediaError(f"{name}: {box.where()}: truncated header")
    count = int.from_bytes(data[4:8], "big")
    if count * 8 > len(data) - 8:
        raise MediaError(f"{name}: {box.where()}: {count} offsets need {count * 8} "
                         f"bytes, the box holds {len(data) - 8}")
    table = array.array("Q")
    assert table.itemsize == 8
    table.frombytes(data[8:8 + count * 8])
    if sys.byteorder == "little":
        table.byteswap()
    return table


def stz2_table(box: Box, buf, base: int, name: str) -> array.array:
    """stz2's compact sizes (4, 8 or 16 bits each) as u32."""
    data = box.data(buf, base)
    if len(data) < 12:
        raise MediaError(f"{name}: {box.where()}: truncated header")
    field = data[7]
    count = int.from_bytes(data[8:12], "big")
    if field not in (4, 8, 16):
        raise MediaError(f"{name}: {box.where()}: field size {field} is not 4, 8 or 16")
    need = (count * field + 7) // 8
    if need > len(data) - 12:
        raise MediaError(f"{name}: {box.where()}: {count} sizes need {need} bytes")
    raw = bytes(data[12:12 + need])
    # (array("I", some_bytes) would read the bytes as 4-byte items: widen
    # from a byte or short array instead)
    if field == 8:
        return array.array("I", array.array("B", raw))
    if field == 16:
        narrow = array.array("H", raw)
        if sys.byteorder == "little":
            narrow.byteswap()
        return array.array("I", narrow)
    out = array.array("I", [0]) * (2 * len(raw))
    out[0::2] = array.array("I", (b >> 4 for b in raw))
    out[1::2] = array.array("I", (b & 15 for b in raw))
    del out[count:]
    return out


def read_descriptor(data: memoryview, pos: int, name: str) -> tuple[int, int, int]:
    """An MPEG-4 descriptor at ``pos``: (tag, body start, body end)."""
    if pos + 2 > len(data):
        raise MediaError(f"{name}: esds: truncated descriptor")
    tag = data[pos]
    pos += 1
    size = 0
    for _ in range(4):
        if pos >= len(data):
            raise MediaError(f"{name}: esds: truncated descriptor size")
        b = data[pos]
        pos += 1
        size = size << 7 | (b & 0x7F)
        if not b & 0x80:
            break
    if size > len(data) - pos:
        raise MediaError(f"{name}: esds: descriptor tag {tag} of {size} bytes runs past "
                         f"the box")
    return tag, pos, pos + size


def parse_esds(data: memoryview, name: str) -> tuple[int, bytes]:
    """(objectTypeIndication, DecoderSpecificInfo) of an esds payload."""
    tag, pos, end = read_descriptor(data, 4, name)
    if tag != 0x03 or end - pos < 3:
        raise MediaError(f"{name}: esds: no ES_Descriptor")
    flags = data[pos + 2]
    pos += 3
    if flags & 0x80:
        pos += 2
    if flags & 0x40:
        if pos >= end:
            raise MediaError(f"{name}: esds: truncated URL")
        pos += 1 + data[pos]
    if flags & 0x20:
        pos += 2
    while pos < end:
        tag, body, dend = read_descriptor(data[:end], pos, name)
        if tag == 0x04:
            if dend - body < 13:
                raise MediaError(f"{name}: esds: DecoderConfigDescriptor too short")
            oti = data[body]
            sub = body + 13
            while sub < dend:
                t2, b2, e2 = read_descriptor(data[:dend], sub, name)
                if t2 == 0x05:
                    return oti, bytes(data[b2:e2])
                sub = e2
            return oti, b""
        pos = dend
    raise MediaError(f"{name}: esds: no DecoderConfigDescriptor")
