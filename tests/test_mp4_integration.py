"""MP4 titles through the real daemon: `kvod catalog add movie.mp4`, then
ffmpeg, GStreamer and kvod's own client over RTSP/UDP, one stream per track.

Titles are 4 s (320x240 H.264 with B-frames or H.265, AAC stereo), made by
ffmpeg once and cached; streams are paced at the media rate.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from appliance.rtsp.sdp import parse_sdp
from rtpengine import rtcp
from rtpengine.hintfile import HintFile
from tests.helpers.players import gst_finished
from tests.helpers.daemon import KvodDaemon
from tests.helpers.origins import NginxOrigin, nginx_folder, publish
from tests.helpers.depay import depay_aac, depay_video, split_nals
from tests.helpers.mp4_sparse import top_level_boxes
from tests.helpers.titles import long_mp4, make_mp4
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
    d.add(long_mp4(), "long")
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
    # decoded to the end: EOS, and no error but GStreamer's own EOS/PAUSE race
    assert gst_finished(out, (out.stdout + out.stderr).encode()), out.stdout + out.stderr
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


def test_seek_to_30s_of_a_long_title_starts_both_tracks_at_the_sync_sample_before(daemon):
    """PLAY npt=30- of a 2-minute title whose keyframes come every 1.6 s:
    video starts with the sync sample at 28.8 s (the last at or before 30 s),
    whole, and audio with the AU at or just before that same instant; the
    RTP-Info times put both first frames there on the npt line."""
    path = long_mp4()
    streams = probe(path)
    vprobe, aprobe = streams[0], streams[1]
    v_clock = vprobe["time_base"][1]
    keys = [(pts / v_clock, pos, size) for pts, pos, size, key in vprobe["packets"]
            if key and pts / v_clock <= 30.0]
    key_s, key_pos, key_size = keys[-1]
    assert 28.7 < key_s < 28.9                  # not 30 itself: "at or before" is tested
    media = open(path, "rb").read()
    receivers = [RtpReceiver(), RtpReceiver()]
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("long")
        assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
        session, _, _ = client.setup_udp(url + "/trackID=0", receivers[0].ports)
        client.setup_udp(url + "/trackID=1", receivers[1].ports, session=session)
        resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=30-")])
        assert resp.status == 200
        npt = float(resp.headers.get("Range").split("=")[1].split("-")[0])
        info = parse_rtp_info(resp.headers.get("RTP-Info"))
        time.sleep(1.5)
        client.request("TEARDOWN", url + "/", [("Session", session)])
        packets = [[p for _, p in r.packets] for r in receivers]
    finally:
        client.close()
        for r in receivers:
            r.close()
    assert key_s - 0.1 <= npt <= key_s + 0.001
    aus = depay_video(packets[0], "h264")
    assert len(aus) >= 25
    # the first access unit is the sync sample, whole (after any in-band sets)
    first_nals = split_nals(media[key_pos:key_pos + key_size])
    assert aus[0][1][-len(first_nals):] == first_nals
    audio = depay_aac(packets[1])
    assert len(audio) >= 50
    samples = [(pts / 48000, media[pos:pos + size]) for pts, pos, size, _ in aprobe["packets"]]
    starts = [pts for pts, data in samples if data == audio[0][1]]
    assert any(key_s - 1024 / 48000 - 0.1 <= a <= key_s for a in starts), (starts, key_s)

    def npt_of(track: str, ts: int, clock: int) -> float:
        return npt + ((ts - info[track] + 2**31) % 2**32 - 2**31) / clock
    assert npt_of("trackID=0", aus[0][0], 90000) == pytest.approx(key_s, abs=2e-3)
    assert abs(npt_of("trackID=1", audio[0][0], 48000) - key_s) <= 1024 / 48000 + 0.1


# -- remote MP4 titles: the proxy fill ------------------------------------------------------


@pytest.fixture(scope="module")
def slow_origin(tmp_path_factory):
    """nginx sending each request at 60 kB/s: two requests of a fill bring
    about the media rate of the 4 s titles, so their fill runs while they play."""
    nginx = nginx_folder(tmp_path_factory.mktemp("mp4-nginx"), limit_rate="60k")
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, slow_origin):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod-proxy")), extra=(
        "[rtcp]\nsr_interval = 0.5\n"
        f'[origin]\nbase_url = ["{slow_origin.base_url}"]\nprobe_bytes = "32KiB"\n'
        'tail_bytes = "16KiB"\nchunk_bytes = "64KiB"\n'))
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def state(daemon, name: str) -> str:
    return daemon.title_info(name)["state"]


def frames_later(url: str, stream: str) -> subprocess.Popen:
    """ffmpeg receiving one track of ``url`` as ``frames()`` does, in the background."""
    codec = ["-c", "copy"] if stream == "a" else ["-fps_mode", "passthrough"]
    return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport",
                             "udp", "-i", url, "-map", f"0:{stream}", *codec, "-f", "framemd5",
                             "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def frames_of(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return [",".join(f.strip() for i, f in enumerate(line.split(",")) if i in (0, 4, 5))
            for line in out.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("kind", ["movie", "fragmented"])
def test_a_remote_mp4_plays_while_it_fills_and_a_viewer_joins_mid_fill(proxy, slow_origin,
                                                                       kind):
    """An MP4 with its moov at the end (or fragmented) from a slow nginx: the
    first viewers get every frame of both tracks while the fill runs, a
    viewer who joins mid-fill too; the origin sends each byte once."""
    source = make_mp4(**TITLES[kind])
    name = publish(slow_origin, f"remote-{kind}.mp4", source)
    url = proxy.url(name)
    first = [frames_later(url, "v"), frames_later(url, "a")]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = json.loads(proxy.kvod("catalog", "show", name, "--json", check=False).stdout
                          or "null")
        if info:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    assert state(proxy, name) == "partial"          # the fill is running
    late = frames_later(url, "v")
    want = {s: frames(source, s) for s in "va"}
    assert frames_of(first[0]) == want["v"]
    assert frames_of(first[1]) == want["a"]
    assert frames_of(late) == want["v"]
    deadline = time.monotonic() + 30
    while state(proxy, name) != "complete" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state(proxy, name) == "complete"
    assert slow_origin.bytes_sent(name) == os.path.getsize(source)
    assert proxy.log().count(f"miss {name}") == 1
    # the complete title plays from the cache as a local one does
    assert frames(url, "a", "-rtsp_transport", "udp") == want["a"]


def test_a_remote_mp4_fill_killed_midway_resumes_and_completes(tmp_path):
    """kill -9 during an MP4's fill: the restarted daemon finds the moov among
    the recorded bytes, resumes, completes, and the title plays whole."""
    source = make_mp4()
    (tmp_path / "o" / "root").mkdir(parents=True)
    (tmp_path / "o" / "root" / "crash.mp4").write_bytes(open(source, "rb").read())
    nginx = NginxOrigin(str(tmp_path / "o"), str(tmp_path / "o" / "root"), limit_rate="20k")
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=(
        f'[origin]\nbase_url = ["{nginx.base_url}"]\nprobe_bytes = "32KiB"\n'
        'tail_bytes = "16KiB"\nchunk_bytes = "32KiB"\n'))
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port)
        try:
            assert client.request("DESCRIBE", client.url("crash.mp4")).status == 200
        finally:
            client.close()
        time.sleep(1.0)
        assert state(d, "crash.mp4") == "partial"
        d.kill()
        d.start()
        deadline = time.monotonic() + 40
        while state(d, "crash.mp4") != "complete" and time.monotonic() < deadline:
            time.sleep(0.2)
        info = json.loads(d.kvod("catalog", "show", "crash.mp4", "--json").stdout)
        assert info["state"] == "complete", d.log()
        assert open(info["media_path"], "rb").read() == open(source, "rb").read()
        assert "resuming the fill of crash.mp4" in d.log()
        for stream in "va":
            assert frames(d.url("crash.mp4"), stream, "-rtsp_transport", "udp") == \
                frames(source, stream)
        # an eviction that keeps a prefix drops the moov at the end: the
        # title cannot resume from its bytes, it is fetched again
        assert d.stop() == 0, d.log()
        from appliance.cache.quota import CacheQuota
        from catalog import open_catalog
        with open_catalog(os.path.join(d.folder, "catalog.db")) as cat:
            CacheQuota(cat).evict("crash.mp4", keep=100_000)
        d.start()
        assert frames(d.url("crash.mp4"), "a", "-rtsp_transport", "udp") == frames(source, "a")
        assert "are not among the cached bytes; fetching the title again" in d.log()
    finally:
        nginx.stop()
        d.stop()


def _lying_moov(data: bytes, how: str) -> bytes:
    """A moov-at-the-end MP4 whose moov lies: stsz counts more samples than
    it holds, or the moov box claims more bytes than the file has."""
    data = bytearray(data)
    at = data.rindex(b"moov") - 4
    if how == "stsz":
        stsz = data.index(b"stsz", at) - 4
        struct.pack_into(">I", data, stsz + 16, 0x7FFFFFF)
    else:
        struct.pack_into(">I", data, at, len(data) - at + 1000)
    return bytes(data)


def test_a_remote_mp4_with_a_lying_moov_is_refused_clearly(proxy, slow_origin):
    """415 with the reason, nothing entered, and the daemon serves on."""
    data = open(make_mp4(), "rb").read()
    for how in ("stsz", "size"):
        name = f"lying-{how}.mp4"
        (slow_origin.root_path / name).write_bytes(_lying_moov(data, how))
        client = RtspClient("127.0.0.1", proxy.port)
        try:
            resp = client.request("DESCRIBE", client.url(name), [("Accept", "application/sdp")])
        finally:
            client.close()
        assert resp.status == 415, resp
        assert proxy.kvod("catalog", "show", name, check=False).returncode != 0
    log = proxy.log()
    assert "stsz" in log and "runs past" in log
    name = publish(slow_origin, "after-the-liars.mp4", make_mp4(faststart=True))
    assert frames(proxy.url(name), "a", "-rtsp_transport", "udp") == frames(
        make_mp4(faststart=True), "a")


def ffplay(url: str) -> subprocess.CompletedProcess:
    """Headless ffplay for 3 s of ``url``, as a user would run it."""
    env = dict(os.environ, SDL_AUDIODRIVER="dummy", SDL_VIDEODRIVER="dummy")
    return subprocess.run(["ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "-t", "3",
                           url], capture_output=True, text=True, timeout=30, env=env)


def ffplay_errors(result: subprocess.CompletedProcess) -> list[str]:
    # ffmpeg picks its client ports itself and, when one is taken by another
    # process on this shared machine, says so and tries the next: not ours
    return [line for line in result.stderr.splitlines()
            if not re.fullmatch(r"\[udp @ 0x[0-9a-f]+\] bind failed: Address already in use",
                                line)]


@pytest.mark.parametrize("where", ["local", "remote"])
def test_ffplay_plays_an_mp4_title(where, request, slow_origin):
    """ffplay, headless, plays 3 s of an MP4 title (a local one, and a remote
    one while its fill runs) and exits on its own, with no error."""
    if where == "local":
        url = request.getfixturevalue("daemon").url("movie")
    else:
        d = request.getfixturevalue("proxy")
        url = d.url(publish(slow_origin, "ffplay.mp4", make_mp4()))
    started = time.monotonic()
    result = ffplay(url)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert ffplay_errors(result) == [], result.stderr
    assert 2.5 < elapsed < 15


def test_a_lying_fragment_mid_fill_ends_its_viewers_cleanly(proxy, slow_origin):
    """A fragmented MP4 whose third moof lies (a trun counts more samples
    than it holds): DESCRIBE is answered from the good moov, the viewer gets
    what came before the lie and then an RTCP BYE, the log says why, and
    the daemon serves on."""
    data = bytearray(open(make_mp4(**TITLES["fragmented"]), "rb").read())
    moofs = [pos for pos, _, _, kind in top_level_boxes(data) if kind == b"moof"]
    trun = data.index(b"trun", moofs[2])
    struct.pack_into(">I", data, trun + 8, 0x7FFFFFF)
    name = "lying-fragment.mp4"
    (slow_origin.root_path / name).write_bytes(bytes(data))
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", proxy.port)
    try:
        url = client.url(name)
        assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
        deadline = time.monotonic() + 20
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.got_bye()
        assert len(receiver.packets) > 10
    finally:
        client.close()
        receiver.close()
    assert "samples need" in proxy.log()
    other = publish(slow_origin, "after-the-lying-fragment.mp4", make_mp4(faststart=True))
    assert frames(proxy.url(other), "a", "-rtsp_transport", "udp") == frames(
        make_mp4(faststart=True), "a")


@pytest.mark.parametrize("kind", ["movie", "fragmented"])
def test_gstreamer_decodes_a_remote_mp4_while_it_fills(proxy, slow_origin, kind):
    """GStreamer's rtspsrc ! decodebin, both tracks, from a cold cache: it
    decodes to the end with no error while the fill runs."""
    name = publish(slow_origin, f"gst-{kind}.mp4", make_mp4(**TITLES[kind]))
    proc = subprocess.Popen(
        ["gst-launch-1.0", "rtspsrc", f"location={proxy.url(name)}", "protocols=udp",
         "name=src", "src.", "!", "decodebin", "!", "fakesink", "src.", "!", "decodebin",
         "!", "fakesink"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert state(proxy, name) == "partial"      # it plays while the fill runs
    stdout, stderr = proc.communicate(timeout=60)
    assert gst_finished(proc, (stdout + stderr).encode()), stdout + stderr
    assert "Got EOS" in stdout
    deadline = time.monotonic() + 20
    while state(proxy, name) != "complete" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slow_origin.bytes_sent(name) == os.path.getsize(make_mp4(**TITLES[kind]))
