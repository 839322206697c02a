"""One MP4 title made ready for fMP4 HLS: its init segment, its samples
and its segment plan, from the cached file."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.http.fmp4.fragments import Fragment, SegmentPlan, build_fragment, plan_segments
from appliance.http.fmp4.init_segment import init_segment
from appliance.http.fmp4.samples import TrackSamples, expand
from appliance.http.playlist import fmp4_playlist
from rtpengine.index import mp4_boxes as bx
from rtpengine.index.errors import MediaError
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


class NotWholeYet(MediaError):
    """A filling MP4 whose segments cannot be known before it is whole: a
    fragmented file, whose sample tables arrive with its fragments."""


def load_title(path: str, name: str, target_s: float, *, filling: bool = False) -> Fmp4Title:
    """Parse the MP4 at ``path`` and cut it: MediaError if it cannot be.

    ``filling``: the file is a fill's sparse file, whose ``moov`` and box
    headers are held (the fill fetches them first) and whose samples may
    not be. A progressive file's ``moov`` describes every sample, so its
    segments are known now and wait for their bytes as downloads do; a
    fragmented one's are not (NotWholeYet)."""
    mm, size = map_mp4(path, name)
    try:
        moov, traks = read_tracks(mm, size, name)
        moov_bytes = bytes(mm[moov.start:moov.end])
    finally:
        mm.close()
    if filling and bx.find(bx.children(moov_bytes, moov, base=moov.start, name=name),
                           b"mvex") is not None:
        raise NotWholeYet(f"{name} is a fragmented MP4: it is served over HLS once it is "
                          f"cached whole")
    tracks = tuple(expand(t, size, name) for t in traks)
    init = init_segment(moov_bytes, moov.start, [t.track_id for t in traks], name)
    kind = "video/mp4" if any(t.kind == "video" for t in tracks) else "audio/mp4"
    return Fmp4Title(init, tracks, tuple(plan_segments(tracks, target_s)), kind)
