"""Seek ahead of the fill: hints for a range a viewer asked for before the
bytes in front of it are there.

The fill's main index grows from offset 0 only (a record's time comes from
the PCR timeline that starts at the title's first PCR). A viewer that seeks
to a time beyond it gets a segment: the bytes from an estimated offset
(the time at the title's mean rate, less a margin for the keyframe before
it) are fetched first, indexed from there (``GrowingTsIndex(start=...)``,
timed by the distance of the segment's first PCR from the title's first
PCR) into a hint file of their own, starting at the segment's first
keyframe. The viewer streams from that file; when the main index reaches
the viewer's position, the viewer moves over to it (the engine's REMAP, by
media offset) and the segment goes away.

The timing is right as long as the PCR runs without a discontinuity from
the title's start to the segment; after one, a segment's times are off
until the main index replaces them (the bytes sent are right either way).
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from appliance.cache.layout import seek_hint_path
from catalog.byte_ranges import Range, end_from
from rtpengine.hintfile import RECORD_SIZE, REC_KEYFRAME, GrowingHintFile, HintRecord
from rtpengine.index.mpegts import CLOCK_RATE, PACKET_SIZE, PAYLOAD_TYPE_MP2T, TsProgram
from rtpengine.index.mpegts_growing import GrowingTsIndex

# bytes before the estimated offset of the asked time, in seconds of media:
# the keyframe at or before it is in them (keyframes come every 1-2 s)
MARGIN_SECONDS = 2.0


def estimate_offset(npt_ns: int, size: int, duration_ns: int, floor: int = 0) -> int:
    """Where ``npt_ns`` is at the mean rate, less the margin; a packet boundary."""
    seconds = max(npt_ns / 1e9 - MARGIN_SECONDS, 0.0)
    offset = int(size * seconds * 1e9 / duration_ns) if duration_ns else 0
    offset = min(max(offset, floor), max(size - PACKET_SIZE, 0))
    return offset - offset % PACKET_SIZE


class SeekSegment:
    """The hints of the bytes from ``start`` on, for the viewers that seeked there."""

    def __init__(self, *, name: str, folder: str, number: int, start: int, npt_ns: int,
                 program: TsProgram, origin_pcr: int) -> None:
        self.start = start
        self.npt_ns = npt_ns
        self.path = seek_hint_path(folder, number)
        self.users = 0
        self.first: Optional[int] = None        # the index's first record in the file
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None
        self.keyframes_ns: list[int] = []       # send times of its keyframe records
        self.index = GrowingTsIndex(f"{name}@{start}", start=start, program=program,
                                    origin_pcr=origin_pcr)
        try:
            self.hints = GrowingHintFile(self.path, CLOCK_RATE, PAYLOAD_TYPE_MP2T)
        except BaseException:
            self.index.close()
            raise

    def next_needed(self, held: list[Range]) -> int:
        """The first byte from ``start`` on that the file does not hold."""
        return end_from(held, self.start)

    def feed(self, mm, held: list[Range], append=None) -> bool:
        """Index the bytes held from ``start`` on; True if records were added
        (``append(records)`` writes them to the hint file, by default
        ``self.hints.append``)."""
        upto = self.next_needed(held)
        if upto - upto % PACKET_SIZE <= self.index.scanned:
            return False
        ready = self.index.feed(mm, upto)
        if self.first is None:
            self.first = self.index.first_keyframe()
            if self.first is None:
                return False
        have = self.first + self.hints.count
        if ready <= have:
            return False
        records = self.index.records(have, ready)
        (append or self.hints.append)(records)
        for at in range(0, len(records), RECORD_SIZE):
            rec = HintRecord.unpack_from(records, at)
            if rec.flags & REC_KEYFRAME:
                self.keyframes_ns.append(rec.send_ns)
        if self.first_ns is None:
            self.first_ns = HintRecord.unpack_from(records, 0).send_ns
        self.last_ns = HintRecord.unpack_from(records, len(records) - RECORD_SIZE).send_ns
        return True

    def covers(self, npt_ns: int) -> bool:
        """Whether a viewer can start at ``npt_ns`` here: the records reach it,
        or a keyframe shortly before it is there (the viewer starts at it and
        the rest follows as the bytes come)."""
        if self.last_ns is not None and self.last_ns >= npt_ns:
            return True
        window = int((MARGIN_SECONDS + 1.0) * 1e9)
        return any(npt_ns - window <= k <= npt_ns for k in self.keyframes_ns)

    def close(self) -> None:
        """Free the index and remove the hint file (a stream's mapping stays valid)."""
        self.hints.close()
        self.index.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
