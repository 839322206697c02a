"""HLS media playlists (RFC 8216) of byte ranges of a cached MPEG-TS file
(and, at the end, the playlist of an MP4 title's fMP4 segments).

The title is not re-muxed: each segment is an ``#EXT-X-BYTERANGE`` of the
cached file, cut where a hint record starts a keyframe, so a browser plays
the very bytes the RTSP viewers get. Pure functions over hint records;
the resource in ``appliance.http.hls`` feeds them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from rtpengine.hintfile import HEADER_SIZE, RECORD_SIZE, REC_KEYFRAME, HintRecord

TS_PACKET = 188
# every flags value whose low byte has the KEYFRAME bit: one C-speed regex
# over the records' flag bytes finds the keyframes of a long title
_KEYFRAME_BYTE = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in range(256)
                                            if b & REC_KEYFRAME) + b"]")
_FLAGS_AT = 24   # the flags' low byte inside a 32-byte record


@dataclass(frozen=True)
class Cut:
    """A place a segment may start: a keyframe record's file offset and time."""

    offset: int
    send_ns: int


@dataclass(frozen=True)
class Segment:
    """``length`` bytes of the file from ``offset``, playing ``duration`` s."""

    offset: int
    length: int
    duration: float


def keyframe_cuts(records: bytes) -> list[Cut]:
    """The keyframe records of ``records`` (hint records back to back, no
    header) as cuts, in file order."""
    flags = records[_FLAGS_AT::RECORD_SIZE]
    cuts = []
    for match in _KEYFRAME_BYTE.finditer(flags):
        record = HintRecord.unpack_from(records, match.start() * RECORD_SIZE)
        if cuts and record.offset <= cuts[-1].offset:
            continue
        cuts.append(Cut(record.offset, record.send_ns))
    return cuts


def hint_records(hint_file_bytes: bytes, count: int) -> bytes:
    """The first ``count`` records of a hint file's bytes."""
    return hint_file_bytes[HEADER_SIZE:HEADER_SIZE + count * RECORD_SIZE]


def segments(cuts: Sequence[Cut], target_ns: int, *, end_offset: int, end_ns: int,
             final: bool) -> list[Segment]:
    """Segments from the start of the file, each from one cut to a later
    one: a segment ends at the first cut at least ``target_ns`` after its
    start. The last runs to ``end_offset``/``end_ns`` when ``final`` (the
    title is complete); otherwise only segments closed by a cut are listed
    (what is there now, for an EVENT playlist that grows)."""
    out: list[Segment] = []
    start_offset, start_ns = 0, 0   # the first segment holds the PAT/PMT before any cut
    for cut in cuts:
        if cut.offset <= start_offset or cut.offset >= end_offset:
            continue
        if cut.send_ns - start_ns >= target_ns:
            out.append(Segment(start_offset, cut.offset - start_offset,
                               (cut.send_ns - start_ns) / 1e9))
            start_offset, start_ns = cut.offset, cut.send_ns
    if final and end_offset > start_offset:
        out.append(Segment(start_offset, end_offset - start_offset,
                           max(end_ns - start_ns, 0) / 1e9))
    return out


def ts_init_section(head: bytes) -> Optional[tuple[int, int]]:
    """The byte range ``(offset, length)`` from the start of an MPEG-TS file
    to the end of its first PMT, when only tables (PAT, PMT, SDT) come
    before it: the playlist's ``EXT-X-MAP``, so a player that starts at a
    later segment knows the streams. None if the file does not start so."""
    pmt_pids: set[int] = set()
    for at in range(0, min(len(head), 32 * TS_PACKET) - TS_PACKET + 1, TS_PACKET):
        packet = head[at:at + TS_PACKET]
        if packet[0] != 0x47:
            return None
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid == 0:
            pmt_pids |= _pat_pmt_pids(packet)
        elif pid in pmt_pids:
            return 0, at + TS_PACKET
        elif pid not in (0x11, 0x1FFF):   # SDT, null: still only tables
            return None
    return None


def _pat_pmt_pids(packet: bytes) -> set[int]:
    if not packet[1] & 0x40:   # payload_unit_start: the section begins here
        return set()
    at = 4
    if packet[3] & 0x20:        # adaptation field
        at += 1 + packet[4]
    at += 1 + packet[at] if at < len(packet) else 0   # pointer field
    if at + 8 > len(packet) or packet[at] != 0:
        return set()
    length = ((packet[at + 1] & 0x0F) << 8) | packet[at + 2]
    end = min(at + 3 + length - 4, len(packet))
    pids = set()
    for entry in range(at + 8, end - 3, 4):
        program = (packet[entry] << 8) | packet[entry + 1]
        if program:
            pids.add(((packet[entry + 2] & 0x1F) << 8) | packet[entry + 3])
    return pids


def _target_duration(durations: Sequence[float], target_s: float) -> int:
    """The EXT-X-TARGETDURATION of segments of ``durations``."""
    longest = max(durations, default=target_s)
    # RFC 8216 4.3.3.1: every EXTINF rounded to the nearest integer is at
    # most the target duration
    # and an EVENT playlist's target must not change as it grows: start from
    # the configured one
    return max(1, math.ceil(target_s), math.floor(longest + 0.5))


def media_playlist(parts: Iterable[Segment], uri: str, *, final: bool,
                   init: Optional[tuple[int, int]] = None, target_s: float = 6.0) -> str:
    """The text of a media playlist of ``parts`` of the file at ``uri``:
    VOD with an end when ``final``, else EVENT (it only grows)."""
    parts = list(parts)
    target = _target_duration([p.duration for p in parts], target_s)
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0",
             f"#EXT-X-PLAYLIST-TYPE:{'VOD' if final else 'EVENT'}",
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    if init is not None:
        lines.append(f'#EXT-X-MAP:URI="{uri}",BYTERANGE="{init[1]}@{init[0]}"')
    for part in parts:
        lines += [f"#EXTINF:{part.duration:.6f},",
                  f"#EXT-X-BYTERANGE:{part.length}@{part.offset}", uri]
    if final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def fmp4_playlist(durations: Sequence[float], init_uri: str, segment_uri: str, *,
                  target_s: float = 6.0) -> str:
    """The text of a VOD media playlist of fMP4 segments (RFC 8216 version
    7): the init segment at ``init_uri``, segment ``k`` (from 0) of
    ``durations[k]`` seconds at ``segment_uri.format(k)``."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7",
             f"#EXT-X-TARGETDURATION:{_target_duration(durations, target_s)}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD",
             "#EXT-X-INDEPENDENT-SEGMENTS", f'#EXT-X-MAP:URI="{init_uri}"']
    for k, duration in enumerate(durations):
        lines += [f"#EXTINF:{duration:.6f},", segment_uri.format(k)]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
