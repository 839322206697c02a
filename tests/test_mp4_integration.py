"""MP4 titles through the real daemon: `kvod catalog add movie.mp4`, then
ffmpeg, GStreamer and kvod's own client over RTSP/UDP, one stream per track.

Titles are 4 s (320x240 H.264 with B-frames or H.265, AAC stereo), made by
ffmpeg once and cached; streams are paced at the media rate.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from appliance.rtsp.sdp import parse_sdp
from rtpengine import rtcp
from rtpengine.hintfile import HintFile
from rtpengine.rtp import parse_rtp
from tests.helpers.daemon import KvodDaemon
from tests.helpers.depay import depay_aac, depay_video, split_nals
from tests.helpers.titles import make_mp4
from rtpengine.index.mp4 import index_mp4
from tests.test_mp4_index import in_band_sets, probe

pytestmark = pytest.mark.integration

TITLES = {
    "movie": dict(),                            # H.264 + AAC, moov at the end
    "faststart": dict(faststart=True),          # moov first
    "hevc": dict(video="hevc"),
    "audio": dict(video=None),
    "video": dict(audio=False),
    "fragmented": dict(extra=("-movflags", "frag_keyframe+empty_moov")),
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), extra="[rtcp]\nsr_interval = 0.5\n")
    for name, kw in TITLES.items():
        d.add(make_mp4(**kw), name)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def frames(source: str, stream: str, *args: str) -> list[str]:
    """(stream, size, md5) per frame: video decoded (the file holds
    length-prefixed NAL units, RTP gives start codes; the pictures must be
    the same), audio copied (raw AAC either way). Frames pass as they
    come: ffmpeg would otherwise drop or repeat frames to a constant rate
    by their timestamps, which RTCP corrects once the first report comes."""
    codec = ["-c", "copy"] if stream == "a" else ["-fps_mode", "passthrough"]
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *args, "-i", source,
                          "-map", f"0:{stream}", *codec, "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [",".join(f.strip() for i, f in enumerate(line.split(",")) if i in (0, 4, 5))
            for line in out.splitlines() if line and not line.startswith("#")]


def test_catalog_add_lists_a_track_per_stream(daemon):
    info = json.loads(daemon.kvod("catalog", "show", "movie", "--json").stdout)
    assert info["container"] == "mp4"
    assert [(t["media_type"], t["codec"], t["clock_rate"]) for t in info["tracks"]] == [
        ("video", "H264", 90000), ("audio", "MPEG4-GENERIC", 48000)]


def test_catalog_add_says_what_it_indexed(daemon):
    out = daemon.kvod("catalog", "add", make_mp4(), "--name", "again").stdout
    assert re.match(r"added again: 0:00:04.000, .* KiB, \d+ video \+ 189 audio packets", out), out
    daemon.kvod("catalog", "rm", "again")


def test_describe_has_a_media_section_per_track(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        resp = client.request("DESCRIBE", client.url("movie"), [("Accept", "application/sdp")])
    finally:
        client.close()
    assert resp.status == 200
    sdp = parse_sdp(resp.body)
    assert sdp.attribute("range") == "npt=0-4.000"
    video, audio = sdp.media
    assert (video.kind, video.control, video.rtpmap(96)) == ("video", "trackID=0",
                                                             ("H264", 90000, None))
    assert "packetization-mode=1" in video.attribute("fmtp")
    assert "sprop-parameter-sets=" in video.attribute("fmtp")
    assert (audio.kind, audio.control, audio.rtpmap(97)) == ("audio", "trackID=1",
                                                             ("MPEG4-GENERIC", 48000, 2))
    assert "mode=AAC-hbr" in audio.attribute("fmtp")


@pytest.mark.parametrize("name,transport", [(name, "udp") for name in TITLES]
                         + [("movie", "tcp"), ("hevc", "tcp")])
def test_ffmpeg_receives_every_frame_of_every_track(daemon, name, transport):
    kw = TITLES[name]
    path = make_mp4(**kw)
    for stream, present in (("v", kw.get("video", "h264")), ("a", kw.get("audio", True))):
        if not present:
            continue
        got = frames(daemon.url(name), stream, "-rtsp_transport", transport)
        want = frames(path, stream)
        assert len(want) >= 90
        assert got == want, f"{name} {stream}: {len(got)} frames of {len(want)}"


@pytest.mark.parametrize("name,protocols", [("movie", "udp"), ("hevc", "udp"),
                                            ("fragmented", "udp"), ("movie", "tcp")])
def test_gstreamer_decodes_both_tracks(daemon, name, protocols):
    out = subprocess.run(
        ["gst-launch-1.0", "rtspsrc", f"location={daemon.url(name)}", f"protocols={protocols}",
         "name=src", "src.", "!", "decodebin", "!", "fakesink", "src.", "!", "decodebin",
         "!", "fakesink"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ERROR" not in out.stdout + out.stderr
    assert "Got EOS" in out.stdout


def parse_rtp_info(value: str) -> dict[str, int]:
    """track control -> rtptime of an RTP-Info header."""
    out = {}
    for item in value.split(","):
        fields = dict(f.split("=", 1) for f in item.split(";"))
        out[fields["url"].rsplit("/", 1)[1]] = int(fields["rtptime"])
    return out


def _hints(daemon, name):
    info = json.loads(daemon.kvod("catalog", "show", name, "--json").stdout)
    return [HintFile(t["hint_path"]) for t in info["tracks"]]


def test_seek_starts_both_tracks_at_the_keyframe_before(daemon, tmp_path):
    """PLAY npt=2.5- starts video at the sync sample at 2.0 s and audio at the
    same instant; every access unit after them arrives intact; the sender
    reports of both tracks put the first frames within one frame of each other."""
    path = make_mp4()
    streams = probe(path)
    vprobe, aprobe = streams[0], streams[1]
    media = open(path, "rb").read()
    receivers = [RtpReceiver(), RtpReceiver()]
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("movie")
        assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
        session, _, _ = client.setup_udp(url + "/trackID=0", receivers[0].ports)
        client.setup_udp(url + "/trackID=1", receivers[1].ports, session=session)
        resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=2.5-")])
        assert resp.status == 200
        npt = float(resp.headers.get("Range").split("=")[1].split("-")[0])
        assert 1.9 <= npt <= 2.0
        info = parse_rtp_info(resp.headers.get("RTP-Info"))
        deadline = time.monotonic() + 8
        while not all(r.got_bye() for r in receivers) and time.monotonic() < deadline:
            time.sleep(0.05)
        packets = [[p for _, p in r.packets] for r in receivers]
        reports = [[p for _, data in r.rtcp for p in rtcp.parse_compound(data)
                    if isinstance(p, rtcp.SenderReport)] for r in receivers]
    finally:
        client.close()
        for r in receivers:
            r.close()

    # video: from the sync sample at 2.0 s (decode order), every sample after
    first = next(i for i, (pts, _, _, key) in enumerate(vprobe["packets"])
                 if key and pts * 90000 // 12800 >= 180000)
    aus = depay_video(packets[0], "h264")
    sets = in_band_sets(index_mp4(path, lambda i: tmp_path / f"t{i}.hint").tracks[0])
    assert [n for _, n in aus] == [(sets if key else []) + split_nals(media[pos:pos + size])
                                   for _, pos, size, key in vprobe["packets"][first:]]
    # audio: the AUs from the one at or before 2.0 s
    audio = depay_aac(packets[1])
    samples = [media[pos:pos + size] for _, pos, size, _ in aprobe["packets"]]
    start = len(samples) - len(audio)
    assert [au for _, au in audio] == samples[start:]
    a_pts = aprobe["packets"][start][0] / 48000
    assert 2.0 - 1024 / 48000 - 0.1 <= a_pts <= 2.0

    # RTP-Info: each track's rtptime is the Range start, so the first frames
    # fall at their presentation times on the npt line
    def npt_of(track: str, ts: int, clock: int) -> float:
        return npt + ((ts - info[track] + 2**31) % 2**32 - 2**31) / clock
    assert npt_of("trackID=0", aus[0][0], 90000) == pytest.approx(2.0, abs=1e-4)
    assert npt_of("trackID=1", audio[0][0], 48000) == pytest.approx(a_pts, abs=1e-4)

    # A/V sync by the sender reports: wall time of each first frame
    def wall(sr: rtcp.SenderReport, ts: int, clock: int) -> float:
        return sr.ntp_time + ((ts - sr.rtp_timestamp + 2**31) % 2**32 - 2**31) / clock
    assert reports[0] and reports[1]
    for which in (0, -1):       # while playing, and the last (with the BYE)
        v_wall = wall(reports[0][which], aus[0][0], 90000)
        a_wall = wall(reports[1][which], audio[0][0], 48000)
        assert abs(v_wall - (a_wall + (2.0 - a_pts))) < 0.04


def test_a_remote_mp4_is_refused_clearly(tmp_path):
    """The proxy fill indexes MPEG-TS only: a remote MP4 is answered 415 with
    a reason, before anything is fetched or entered in the catalog."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "film.mp4").symlink_to(make_mp4())
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=f'[origin]\nbase_url = ["file://{origin}/"]\n')
    d.start()
    try:
        client = RtspClient("127.0.0.1", d.port)
        try:
            resp = client.request("DESCRIBE", client.url("film.mp4"),
                                  [("Accept", "application/sdp")])
        finally:
            client.close()
        assert resp.status == 415
        assert json.loads(d.kvod("catalog", "list", "--json").stdout) == []
        assert "is an MP4" in d.log()
    finally:
        assert d.stop() == 0, d.log()
