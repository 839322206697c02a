"""HLS segments of an MP4 title as fMP4 fragments whose sample bytes are
byte ranges of the cached file.

:func:`plan_segments` cuts the title at the video track's sync samples
(the first one at least the target duration after the segment's start),
or by time alone when there is no video; every other track's samples go
to the segment their decode time falls in.

:func:`build_fragment` lays one segment out as a ``moof`` (``mfhd``, then
per track a ``traf`` of ``tfhd``, ``tfdt`` and one ``trun`` carrying each
sample's duration, size, flags and composition offset) and an ``mdat``
header, both built in memory and small (16 bytes a sample), followed by
the samples' bytes as ranges of the file, which go out with sendfile.

Layout of the ``mdat``: the file's own order. A progressive file
interleaves its tracks in chunks, and ffmpeg's chunks are small (about
one video frame and two AAC frames each, interleaved by decode time), so
a segment's samples are a contiguous stretch of the file but every track's
share of it is a hundred short runs. Each run (a track's samples that lie
back to back in the file) gets its own ``trun`` with its data offset, and
the ``mdat`` payload is the runs in file order; neighbouring runs of
different tracks merge, so a segment goes out in one sendfile call, or a
few (an audio chunk that straddles a cut leaves a small hole at either
side; 3 to 5 ranges per segment for the two-hour bench file). The other layout, one track after the other with a single ``trun``
per ``traf``, is what most packagers write, but from such a file it costs
a sendfile call per chunk, some 300 of them of 1-2 KB for a 6 s segment.
Several truns per traf with their own data offsets are plain ISO BMFF
(ffmpeg writes them with ``-frag_interleave``); ffmpeg, hls.js and
Chromium read them (the tests play both through ffmpeg and Chromium).
"""

from __future__ import annotations

import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Sequence

from appliance.http.fmp4 import boxes as w
from appliance.http.fmp4.samples import TrackSamples
from appliance.http.ranges import FilePart
from rtpengine.index.errors import MediaError

#: the most sample bytes one segment may hold: the trun data offsets reach
#: 2 GiB, less room for the moof
MAX_SEGMENT_BYTES = (1 << 31) - (64 << 20)
#: the most samples one segment may hold: its moof (16 bytes a sample) is
#: built in memory at each request; 6 s of 60 fps video and AAC is ~650
MAX_SEGMENT_SAMPLES = 1 << 20


@dataclass(frozen=True)
class SegmentPlan:
    """One segment: ``spans[i]`` is track ``i``'s samples ``[first, end)``."""

    duration: float                       # seconds, for EXTINF
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Fragment:
    """A segment's bytes: ``head`` (moof + mdat header), then ``parts`` of the file."""

    head: bytes
    parts: tuple[FilePart, ...]

    @property
    def size(self) -> int:
        return len(self.head) + sum(p.end - p.start for p in self.parts)


def _leader(tracks: Sequence[TrackSamples]) -> int:
    """The track whose sync samples place the cuts: the video, if any."""
    return next((i for i, t in enumerate(tracks) if t.kind == "video"), 0)


def plan_segments(tracks: Sequence[TrackSamples], target_s: float) -> list[SegmentPlan]:
    """The segments of a title of ``tracks`` (none empty), about
    ``target_s`` seconds each, every one starting on a sync sample of the
    leading track."""
    lead = tracks[_leader(tracks)]
    target = max(1, round(target_s * lead.timescale))
    times = lead.decode_times
    # where a segment may start: the sync samples (None: every sample)
    candidates = list(lead.sync) if lead.sync is not None else None
    cut_times = array.array("Q", (times[i] for i in candidates)) \
        if candidates is not None else times
    cuts = [0]
    while True:
        at = bisect_left(cut_times, times[cuts[-1]] + target)
        if at >= len(cut_times):
            break
        index = candidates[at] if candidates is not None else at
        if index <= cuts[-1]:      # sync samples at one decode time: take the next
            break
        cuts.append(index)
    cut_ticks = [times[i] for i in cuts]
    spans_per_track = []
    for t in tracks:
        if t is lead:
            firsts = cuts
        else:
            # the first sample at or after each cut: dts >= cut * ts / lead_ts
            firsts = [0] + [bisect_left(t.decode_times,
                                        -(-c * t.timescale // lead.timescale))
                            for c in cut_ticks[1:]]
        spans_per_track.append(list(zip(firsts, firsts[1:] + [t.count])))
    end_s = max(t.end_time / t.timescale for t in tracks)
    plans = []
    for k, start in enumerate(cut_ticks):
        end = cut_ticks[k + 1] / lead.timescale if k + 1 < len(cut_ticks) else end_s
        plans.append(SegmentPlan(max(end - start / lead.timescale, 0.0),
                                 tuple(spans[k] for spans in spans_per_track)))
    return plans


def _flags(t: TrackSamples, first: int, end: int) -> array.array:
    """The trun sample flags of samples ``[first, end)``."""
    n = end - first
    if t.sync is None:
        return array.array("I", [w.SYNC_SAMPLE_FLAGS]) * n
    flags = array.array("I", [w.NON_SYNC_SAMPLE_FLAGS]) * n
    for at in range(bisect_left(t.sync, first), len(t.sync)):
        if t.sync[at] >= end:
            break
        flags[t.sync[at] - first] = w.SYNC_SAMPLE_FLAGS
    return flags


@dataclass(frozen=True)
class _Run:
    """Samples ``[first, end)`` of track ``track``, back to back in the file
    from ``offset``, ``size`` bytes."""

    offset: int
    track: int
    first: int
    end: int
    size: int


def _runs(t: TrackSamples, track: int, first: int, end: int) -> list[_Run]:
    """Samples ``[first, end)`` of ``t`` as runs of neighbours in the file."""
    runs: list[_Run] = []
    i = first
    while i < end:
        start = i
        at = t.offsets[i] + t.sizes[i]
        i += 1
        while i < end and t.offsets[i] == at:
            at += t.sizes[i]
            i += 1
        runs.append(_Run(t.offsets[start], track, start, i, at - t.offsets[start]))
    return runs


def _moof(tracks: Sequence[TrackSamples], spans: Sequence[tuple[int, int]],
          runs: Sequence[_Run], where: dict[_Run, int], sequence: int) -> bytes:
    """The moof of a segment whose ``runs`` start ``where[run]`` bytes after it."""
    trafs = []
    for i, (t, (first, end)) in enumerate(zip(tracks, spans)):
        if first >= end:
            continue     # a track with no sample here (it ended): no traf
        truns = [w.trun(where[r], t.durations[r.first:r.end], t.sizes[r.first:r.end],
                        _flags(t, r.first, r.end),
                        t.ctos[r.first:r.end] if t.ctos is not None else None)
                 for r in runs if r.track == i]
        trafs.append(w.box(b"traf", w.tfhd(t.track_id), w.tfdt(t.decode_times[first]),
                           *truns))
    return w.box(b"moof", w.mfhd(sequence), *trafs)


def build_fragment(tracks: Sequence[TrackSamples], plan: SegmentPlan,
                   sequence: int) -> Fragment:
    """Segment ``plan`` of ``tracks`` as a fragment numbered ``sequence``
    (from 1): its moof and mdat header, and the file ranges after them."""
    samples = sum(end - first for first, end in plan.spans)
    if samples > MAX_SEGMENT_SAMPLES:
        # the moof is built in memory, 16 bytes a sample
        raise MediaError(f"segment {sequence - 1} would hold {samples} samples, over "
                         f"{MAX_SEGMENT_SAMPLES} (too few sync samples to cut at)")
    # runs in decode order per track (the truns' order) ...
    runs = [r for i, (t, (first, end)) in enumerate(zip(tracks, plan.spans))
            for r in _runs(t, i, first, end)]
    # ... and their bytes in file order (the mdat's)
    laid = sorted(runs, key=lambda r: (r.offset, r.track, r.first))
    parts: list[FilePart] = []
    payload_at: dict[_Run, int] = {}
    payload = 0
    for r in laid:
        payload_at[r] = payload
        payload += r.size
        if parts and parts[-1].end == r.offset:
            parts[-1] = FilePart(parts[-1].start, r.offset + r.size)
        else:
            parts.append(FilePart(r.offset, r.offset + r.size))
    if payload >= MAX_SEGMENT_BYTES:
        # a trun's data offset is 32 bits signed: a file with too few sync
        # samples (or lying tables) cannot be cut this way
        raise MediaError(f"segment {sequence - 1} would hold {payload} bytes of samples, "
                         f"over the {MAX_SEGMENT_BYTES} a fragment can address")
    mdat = w.mdat_header(payload)
    # the trun offsets count from the moof's start: its size first, then them
    size = len(_moof(tracks, plan.spans, runs, dict.fromkeys(runs, 0), sequence))
    where = {r: size + len(mdat) + at for r, at in payload_at.items()}
    moof = _moof(tracks, plan.spans, runs, where, sequence)
    return Fragment(moof + mdat, tuple(parts))
