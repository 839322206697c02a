"""The fMP4 init segment of a progressive MP4: ``ftyp`` + a ``moov`` made
from the file's own.

The ``moov`` keeps the file's ``mvhd`` and, for each track HLS serves,
its ``tkhd``, ``edts``, ``mdhd``, ``hdlr``, media header, ``dinf`` and
``stsd`` as they are (the codec configuration a decoder needs, byte for
byte); the sample tables are left empty (the samples come in fragments)
and an ``mvex`` with a ``trex`` per track says so. Boxes other tracks or
other metadata hold (``udta``, chapters, timecode) are left out.
"""

from __future__ import annotations

from typing import Sequence

from appliance.http.fmp4 import boxes as w
from rtpengine.index import mp4_boxes as bx
from rtpengine.index.errors import MediaError

# the boxes of a trak, mdia and minf that go into the init segment as they are
_TRAK_KEEP = (b"tkhd", b"edts", b"mdia")
_MDIA_KEEP = (b"mdhd", b"hdlr", b"minf")
_MINF_KEEP = (b"vmhd", b"smhd", b"dinf", b"stbl")


def _empty_stbl(stsd: bytes) -> bytes:
    """A sample table with the sample descriptions and no samples."""
    return w.box(b"stbl", stsd,
                 w.full_box(b"stts", 0, 0, bytes(4)),
                 w.full_box(b"stsc", 0, 0, bytes(4)),
                 w.full_box(b"stsz", 0, 0, bytes(8)),
                 w.full_box(b"stco", 0, 0, bytes(4)))


def _copy(buf: bytes, base: int, b: bx.Box) -> bytes:
    return bytes(buf[b.start - base:b.end - base])


def _rebuild(buf: bytes, base: int, parent: bx.Box, keep: Sequence[bytes], name: str,
             budget: list[int]) -> bytes:
    """``parent`` with only its ``keep`` children, copied, except the ones
    on the way to the sample table, which are rebuilt the same way."""
    parts = []
    for kid in bx.children(buf, parent, base=base, name=name, budget=budget):
        if kid.type not in keep:
            continue
        if kid.type == b"mdia":
            parts.append(_rebuild(buf, base, kid, _MDIA_KEEP, name, budget))
        elif kid.type == b"minf":
            parts.append(_rebuild(buf, base, kid, _MINF_KEEP, name, budget))
        elif kid.type == b"stbl":
            stsd = bx.find(bx.children(buf, kid, base=base, name=name, budget=budget),
                           b"stsd")
            if stsd is None:
                raise MediaError(f"{name}: {kid.where()}: no stsd")
            parts.append(_empty_stbl(_copy(buf, base, stsd)))
        else:
            parts.append(_copy(buf, base, kid))
    return w.box(parent.type, *parts)


def init_segment(moov_bytes: bytes, moov_offset: int, track_ids: Sequence[int],
                 name: str) -> bytes:
    """The init segment for the tracks ``track_ids`` (in that order) of the
    file whose ``moov`` box is ``moov_bytes``, found at ``moov_offset``."""
    budget = [bx.MAX_BOXES]
    moov = next(bx.iter_boxes(moov_bytes, moov_offset, moov_offset + len(moov_bytes),
                              base=moov_offset, name=name))
    kids = bx.children(moov_bytes, moov, base=moov_offset, name=name, budget=budget)
    mvhd = bx.find(kids, b"mvhd")
    if mvhd is None:
        raise MediaError(f"{name}: moov has no mvhd")
    traks: dict[int, bytes] = {}
    for trak in (k for k in kids if k.type == b"trak"):
        tkhd = bx.find(bx.children(moov_bytes, trak, base=moov_offset, name=name,
                                   budget=budget), b"tkhd")
        if tkhd is None:
            raise MediaError(f"{name}: {trak.where()}: no tkhd")
        track_id = bx.parse(bx.TKHD, tkhd, moov_bytes, moov_offset, name).track_id
        if track_id in track_ids and track_id not in traks:
            traks[track_id] = _rebuild(moov_bytes, moov_offset, trak, _TRAK_KEEP, name,
                                       budget)
    missing = [t for t in track_ids if t not in traks]
    if missing:
        raise MediaError(f"{name}: moov has no trak for track {missing[0]}")
    return w.ftyp() + w.box(b"moov", _copy(moov_bytes, moov_offset, mvhd),
                            *(traks[t] for t in track_ids), w.mvex(track_ids))
