"""Trick play for MPEG-TS titles: hint files that send only the keyframes,
faster or backwards (RTSP ``Scale``, RFC 2326 section 12.34).

A trick hint file points at byte ranges of the title's own media file, as
every hint file does: no byte is rewritten, so the cached media stays what
the origin sent and the engine sends the trick stream as any other, paced,
with no per-packet Python. What it holds, for a scale ``s``:

- the title's first records before its first keyframe (PAT and PMT: a
  player that starts with a trick stream needs them);
- for each keyframe, in play order (backwards for ``s < 0``), the whole
  access unit: from the packet that starts the keyframe's PES (the record
  the indexer flagged) up to the next packet that starts a PES on the video
  PID, found in the media by the packet header's bytes. Audio packets in
  that span go along (decoders drop what does not join up);
- send times on one schedule: a keyframe ``t`` seconds of title time from
  the start leaves at ``t / |s|``, its packets as spaced in the original
  mux divided by ``|s|``, never before the one before. RTP timestamps
  follow the send times (90 kHz), as the main hints' do.

The TS timestamps (PTS, PCR) are the original ones: they increase forward
and decrease backwards by ``|s|`` times the wall time, which players of a
trick stream expect from a server that does not re-mux. The keyframe
spans of a title are found once and kept (``KeyframeSpans``), so another
scale costs only arithmetic.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from rtpengine.hintfile import (REC_KEYFRAME, HintFile, HintHeader, HintRecord,
                                write_hint_file)

TS_PACKET = 188
SCALES = (2, 4, 8, -2, -4, -8)
# packets per record of a trick stream, as the indexer makes them
RECORD_PACKETS = 7
# an access unit longer than this is cut there (a damaged or odd file)
MAX_SPAN_BYTES = 8 << 20
READ_STEP = 64 << 10


class TrickError(ValueError):
    """The title cannot be played at another scale (not MPEG-TS, no keyframes)."""


@dataclass(frozen=True)
class Span:
    """One keyframe's access unit: media bytes [start, end), its send time
    in the main hints, and its first record's send time there."""

    start: int
    end: int
    send_ns: int


@dataclass(frozen=True)
class KeyframeSpans:
    """What every scale of a title is made from."""

    head: tuple[HintRecord, ...]      # records before the first keyframe
    spans: tuple[Span, ...]
    duration_ns: int


def _pes_start(data: bytes, at: int, pid: int) -> int:
    """Offset in ``data`` (packet aligned from 0) of the first packet at or
    after ``at`` that starts a PES on ``pid``, or -1."""
    pattern = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF))
    while True:
        i = data.find(pattern, at)
        if i < 0:
            return -1
        if i % TS_PACKET == 0:
            return i
        at = i + 1


def keyframe_spans(hints: HintFile, media_fd: int, media_size: int) -> KeyframeSpans:
    """Find each keyframe's access unit in the media (read with ``pread``).

    The indexer flags the record where a video keyframe's PES starts, and
    record 0 whatever it holds (PAT, PMT: the title's first bytes); the
    video PID is the one most keyframe records start with."""
    count = len(hints)
    keys: list[tuple[int, int]] = []           # (record, PID of its first packet)
    for i in range(count):
        rec = hints.record(i)
        if rec.flags & REC_KEYFRAME:
            first = os.pread(media_fd, 4, rec.offset)
            if len(first) == 4 and first[0] == 0x47 and first[1] & 0x40:
                keys.append((i, (first[1] & 0x1F) << 8 | first[2]))
    pids = [pid for i, pid in keys if i > 0] or [pid for _, pid in keys]
    if not pids:
        raise TrickError(f"{hints.path}: no keyframes to play at another scale")
    video = max(set(pids), key=pids.count)
    spans = []
    for i, pid in keys:
        if pid == video:
            rec = hints.record(i)
            spans.append(Span(rec.offset, _span_end(media_fd, rec.offset, video, media_size),
                              rec.send_ns))
    first_key = next(i for i, pid in keys if pid == video)
    # what comes before the first keyframe (PAT, PMT), if that is all it is
    head = tuple(hints.record(i) for i in range(first_key)) if first_key <= 16 else ()
    duration = hints.header.duration_ns or hints.record(count - 1).send_ns
    return KeyframeSpans(head, tuple(spans), duration)


def _span_end(fd: int, start: int, pid: int, media_size: int) -> int:
    """Where the access unit that starts at ``start`` ends: the next PES
    start on ``pid``, the end of the media, or ``MAX_SPAN_BYTES`` on."""
    limit = min(media_size, start + MAX_SPAN_BYTES)
    data = b""
    at = TS_PACKET
    while True:
        got = os.pread(fd, min(READ_STEP, limit - start - len(data)), start + len(data))
        data += got
        i = _pes_start(data, at, pid)
        if i > 0:
            return start + i
        if not got or start + len(data) >= limit:
            return start + len(data) - len(data) % TS_PACKET
        at = max(TS_PACKET, len(data) - len(data) % TS_PACKET - TS_PACKET)


@dataclass(frozen=True)
class TrickStream:
    """A trick stream's records, and where each keyframe's begin: record
    index and the keyframe's title time (ascending indices)."""

    records: tuple[HintRecord, ...]
    starts: tuple[tuple[int, int], ...]

    def start_for(self, npt_ns: int, scale: int) -> tuple[int, int]:
        """(record, title time) of the first keyframe to show from ``npt_ns``:
        the first at or after it forwards, the last at or before it backwards."""
        # in play order: title time ascends forwards, descends backwards
        fits = (start for start in self.starts
                if (start[1] >= npt_ns if scale > 0 else start[1] <= npt_ns))
        return next(fits, self.starts[-1] if self.starts else (0, 0))

    def title_time(self, record: int) -> int:
        """The title time of the keyframe record ``record`` belongs to (a
        status poll asks it every second: a binary search)."""
        i = bisect.bisect_right(self.starts, record, key=lambda start: start[0])
        return self.starts[i - 1][1] if i else 0


def trick_stream(spans: KeyframeSpans, scale: int) -> TrickStream:
    """The records of the trick stream at ``scale``: the head, then every
    keyframe in play order."""
    if scale not in SCALES:
        raise TrickError(f"scale {scale} is not one of {', '.join(map(str, SCALES))}")
    speed = abs(scale)
    out: list[HintRecord] = []
    starts: list[tuple[int, int]] = []
    for rec in spans.head:
        out.append(HintRecord(rec.offset, rec.length, 0, 0, rec.flags & REC_KEYFRAME, b""))
    chosen = spans.spans if scale > 0 else tuple(reversed(spans.spans))
    origin = chosen[0].send_ns
    last = 0
    packet_ns = _packet_ns(spans)
    for span in chosen:
        starts.append((len(out), span.send_ns))
        at = abs(span.send_ns - origin) // speed
        offset = span.start
        first = True
        while offset < span.end:
            length = min(RECORD_PACKETS * TS_PACKET, span.end - offset)
            # the span's packets as spaced in the mux, |scale| times closer
            send = max(last, at + (offset - span.start) // TS_PACKET * packet_ns // speed)
            out.append(HintRecord(offset, length, send * 90_000 // 1_000_000_000, send,
                                  REC_KEYFRAME if first else 0, b""))
            last = send
            offset += length
            first = False
    return TrickStream(tuple(out), tuple(starts))


def _packet_ns(spans: KeyframeSpans) -> int:
    """The mean send spacing of one packet in the main hints."""
    if len(spans.spans) < 2:
        return 0
    a, b = spans.spans[0], spans.spans[-1]
    packets = max(1, (b.start - a.start) // TS_PACKET)
    return max(0, (b.send_ns - a.send_ns) // packets)


def write_trick_hints(path: str, spans: KeyframeSpans, scale: int,
                      payload_type: int = 33) -> TrickStream:
    """Write the trick hint file of ``scale`` to ``path`` (atomically)."""
    trick = trick_stream(spans, scale)
    records = trick.records
    header = HintHeader(clock_rate=90_000, payload_type=payload_type,
                        record_count=len(records),
                        duration_ns=records[-1].send_ns if records else 0)
    write_hint_file(path, header, b"".join(r.pack() for r in records))
    return trick
