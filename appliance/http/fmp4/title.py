"""One MP4 title made ready for fMP4 HLS: its init segment, its samples
and its segment plan, from the cached file."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.http.fmp4.fragments import Fragment, SegmentPlan, build_fragment, plan_segments
from appliance.http.fmp4.init_segment import init_segment
from appliance.http.fmp4.samples import TrackSamples, expand
from appliance.http.playlist import fmp4_playlist
from rtpengine.index.mp4 import map_mp4, read_tracks

#: the names the playlist gives the init segment and segment k, beside it
INIT_NAME = "init.mp4"
SEGMENT_NAME = "{}.m4s"


@dataclass(frozen=True)
class Fmp4Title:
    """What serving one version of an MP4 title as fMP4 needs."""

    init: bytes
    tracks: tuple[TrackSamples, ...]
    plans: tuple[SegmentPlan, ...]
    kind: str           # video/mp4, or audio/mp4 without video

    def fragment(self, k: int) -> Fragment:
        """Segment ``k`` (from 0)."""
        return build_fragment(self.tracks, self.plans[k], k + 1)

    def playlist(self, target_s: float) -> str:
        """The media playlist text."""
        return fmp4_playlist([p.duration for p in self.plans], INIT_NAME, SEGMENT_NAME,
                             target_s=target_s)


def load_title(path: str, name: str, target_s: float) -> Fmp4Title:
    """Parse the MP4 at ``path`` and cut it: MediaError if it cannot be."""
    mm, size = map_mp4(path, name)
    try:
        moov, traks = read_tracks(mm, size, name)
        moov_bytes = bytes(mm[moov.start:moov.end])
    finally:
        mm.close()
    tracks = tuple(expand(t, size, name) for t in traks)
    init = init_segment(moov_bytes, moov.start, [t.track_id for t in traks], name)
    kind = "video/mp4" if any(t.kind == "video" for t in tracks) else "audio/mp4"
    return Fmp4Title(init, tracks, tuple(plan_segments(tracks, target_s)), kind)
