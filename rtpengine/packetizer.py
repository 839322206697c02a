"""The reference packetiser: hint records + media bytes -> RTP packets.

Slow and obviously correct; the C engine and the kernel module must send
exactly these bytes. Used by tests and tools, never to stream.
"""

from __future__ import annotations

from typing import Iterator

from .hintfile import REC_BLOB, REC_MARKER, HintFile
from .rtp import RtpHeader, seq_add, ts_add


def packetize(hints: HintFile, media, *, ssrc: int, seq0: int, ts0: int,
              start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Yield the RTP packets for records ``start``..``stop`` of ``hints``.

    ``media`` is any buffer holding the media file (bytes, mmap). The first
    packet carries ``seq0``; timestamps are ``ts0`` plus the record's
    relative ``rtp_ts``, as the engine sends them.
    """
    pt = hints.header.payload_type
    stop = len(hints) if stop is None else stop
    blob_base = hints.header.blob_offset
    for n, i in enumerate(range(start, stop)):
        rec = hints.record(i)
        hdr = RtpHeader(pt, seq_add(seq0, n), ts_add(ts0, rec.rtp_ts), ssrc,
                        bool(rec.flags & REC_MARKER))
        if rec.flags & REC_BLOB:
            # BLOB offsets are relative to the hint file's blob area.
            payload = hints.read_bytes(blob_base + rec.offset, rec.length)
        else:
            payload = bytes(media[rec.offset:rec.offset + rec.length])
        if len(payload) != rec.length:
            raise ValueError(f"record {i} runs past the end of the media")
        yield hdr.pack() + rec.prefix + payload
