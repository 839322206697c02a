"""HLS of MP4 titles through fMP4 segments, against the real daemon: ffmpeg
receives every frame (the same bytes as the file's), every segment starts
on a sync sample, the segments are cacheable downloads (ETag, Range, HEAD),
and a damaged MP4 is a clear HTTP error. A remote MP4 plays over HLS while
it fills from a slow nginx (a fragmented one once it is whole)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.helpers.daemon import KvodDaemon, tracebacks
from tests.helpers.origins import nginx_folder, publish
from tests.helpers.titles import make_mp4
from tests.helpers.web import curl

pytestmark = pytest.mark.integration

TITLES = {
    "movie": dict(),                            # H.264 (B-frames) + AAC, moov at the end
    "hevc": dict(video="hevc"),
    "audio": dict(video=None),
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), http=True,
                   http_keys="target_duration = 1\n")
    for name, kw in TITLES.items():
        d.add(make_mp4(**kw), name)
    d.add(make_mp4(faststart=True), "truncated")
    d.add(make_mp4(), "lying")
    d.start()
    yield d
    assert d.stop() == 0, d.log()
    assert not tracebacks(d.log()), tracebacks(d.log())


def hls(daemon, name: str, leaf: str = "index.m3u8") -> str:
    return f"http://127.0.0.1:{daemon.http_port}/hls/{name}/{leaf}"


def frames(source: str, stream: str) -> list[str]:
    """(size, md5) of every packet of ``stream``, in order, copied."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", source, "-map",
                          f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [",".join(f.strip() for f in line.split(",")[4:6])
            for line in out.splitlines() if line and not line.startswith("#")]


def test_the_playlist_is_version_7_with_an_init_segment(daemon):
    answer = curl(hls(daemon, "movie"))
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/vnd.apple.mpegurl"
    text = answer.body.decode()
    assert "#EXT-X-VERSION:7" in text and '#EXT-X-MAP:URI="init.mp4"' in text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),\n\d+\.m4s\n", text)]
    assert len(durations) == 4 and sum(durations) == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("name,streams", [("movie", "va"), ("hevc", "va"), ("audio", "a")])
def test_ffmpeg_receives_every_frame(daemon, name, streams, tmp_path):
    source = make_mp4(**TITLES[name])
    for stream in streams:
        got, want = frames(hls(daemon, name), stream), frames(source, stream)
        # the same packets, byte for byte, in the same order
        assert len(got) == len(want) and got == want, (stream, len(got), len(want))
    out = tmp_path / "copy.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", hls(daemon, name), "-c",
                    "copy", str(out)], check=True, timeout=120)
    assert out.stat().st_size > 0.9 * os.path.getsize(source)


@pytest.mark.parametrize("name", ["movie", "hevc"])
def test_every_segment_starts_on_a_sync_sample(daemon, name):
    text = curl(hls(daemon, name)).body.decode()
    init = curl(hls(daemon, name, "init.mp4")).body
    segments = re.findall(r"^(\d+\.m4s)$", text, re.M)
    assert len(segments) >= 3
    for leaf in segments:
        piece = init + curl(hls(daemon, name, leaf)).body
        flags = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
             "packet=flags", "-of", "csv=p=0", "-"], input=piece, capture_output=True,
            check=True, timeout=30).stdout.decode().split()
        assert flags and flags[0].startswith("K"), (leaf, flags[:3])


def test_segments_are_cacheable_downloads(daemon):
    url = hls(daemon, "movie", "1.m4s")
    whole = curl(url)
    assert whole.status == 200 and whole.headers["content-type"] == "video/mp4"
    assert int(whole.headers["content-length"]) == len(whole.body) > 1000
    assert whole.body[4:8] == b"moof"
    etag = whole.headers["etag"]
    assert curl(url).body == whole.body and curl(url).headers["etag"] == etag
    head = curl(url, "-I")
    assert head.status == 200 and head.headers["content-length"] == str(len(whole.body))
    # a range across the moof, the mdat header and the file's bytes
    part = curl(url, "-r", "100-20099")
    assert part.status == 206 and part.body == whole.body[100:20100]
    assert part.headers["content-range"] == f"bytes 100-20099/{len(whole.body)}"
    multi = curl(url, "-r", "0-9,-10")
    assert multi.status == 206 and "multipart/byteranges" in multi.headers["content-type"]
    assert whole.body[:10] in multi.body and whole.body[-10:] in multi.body
    assert int(multi.headers["content-length"]) == len(multi.body)
    assert curl(url, "-H", f"If-None-Match: {etag}").status == 304
    assert curl(url, "-r", "0-9", "-H", 'If-Range: "other"').body == whole.body
    assert curl(hls(daemon, "movie", "0.m4s")).headers["etag"] != etag
    init = curl(hls(daemon, "movie", "init.mp4"))
    assert init.status == 200 and init.body[4:8] == b"ftyp"
    assert int(init.headers["content-length"]) == len(init.body)
    assert curl(hls(daemon, "movie", "99.m4s")).status == 404
    assert curl(hls(daemon, "movie", "01.m4s")).status == 404


def _damage(daemon, name: str, edit) -> None:
    path = os.path.join(daemon.folder, "cache", "titles", name, "media.ts")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with open(path, "wb") as f:
        f.write(edit(data))


def test_a_damaged_mp4_is_a_clear_error_and_the_others_play_on(daemon):
    # damaged behind the daemon's back, after it was indexed whole
    _damage(daemon, "truncated", lambda d: d[:len(d) * 2 // 3])

    def bad_chunk(data: bytearray) -> bytearray:
        at = data.rindex(b"stco") + 12          # the first chunk offset
        data[at:at + 4] = b"\xff\xff\xff\x00"
        return data
    _damage(daemon, "lying", bad_chunk)
    for name, why in (("truncated", "truncated"), ("lying", "run to offset")):
        for leaf in ("index.m3u8", "init.mp4", "0.m4s"):
            answer = curl(hls(daemon, name, leaf))
            assert answer.status == 500, (name, leaf, answer.status)
            text = answer.body.decode()
            assert "cannot be served as HLS" in text and why in text, text
    assert curl(hls(daemon, "movie")).status == 200
    assert curl(hls(daemon, "movie", "2.m4s")).status == 200
    assert daemon.proc.poll() is None


# -- remote MP4 titles, over HLS while they fill ---------------------------------------------


@pytest.fixture(scope="module")
def slow_origin(tmp_path_factory):
    """nginx sending each request at 30 kB/s: a 4 s title (320 KB) takes seconds to fill,
    time for a loaded machine's CLI calls to see it partial."""
    nginx = nginx_folder(tmp_path_factory.mktemp("hls-mp4-nginx"), limit_rate="30k")
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, slow_origin):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod-hls-proxy")), http=True,
                   http_keys="target_duration = 1\n", extra=(
                       f'[origin]\nbase_url = ["{slow_origin.base_url}"]\n'
                       'probe_bytes = "32KiB"\ntail_bytes = "16KiB"\nchunk_bytes = "64KiB"\n'))
    d.start()
    yield d
    assert d.stop() == 0, d.log()
    assert not tracebacks(d.log()), tracebacks(d.log())


def state(daemon, name: str) -> str:
    return daemon.title_info(name)["state"]


def frames_later(source: str, stream: str) -> subprocess.Popen:
    """``frames(source, stream)`` in the background."""
    return subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-i", source, "-map",
                             f"0:{stream}", "-c", "copy", "-f", "framemd5", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def frames_of(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return [",".join(f.strip() for f in line.split(",")[4:6])
            for line in out.splitlines() if line and not line.startswith("#")]


def test_a_filling_mp4_plays_over_hls_while_it_fills(proxy, slow_origin):
    """An MP4 with its moov at the end from a slow nginx: the first playlist
    request starts the fill and gets the whole title's VOD playlist before
    the samples have come; ffmpeg gets every frame of both tracks through
    segments that wait for their bytes; once the title is whole it answers
    the same playlist, and the same segments under the same ETags. nginx
    sends each byte once."""
    source = make_mp4()
    name = publish(slow_origin, "remote-movie.mp4", source)
    playlist = curl(hls(proxy, name))
    assert playlist.status == 200, playlist.body
    assert state(proxy, name) == "partial"          # the fill is running
    text = playlist.body.decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert len(re.findall(r"^\d+\.m4s$", text, re.M)) >= 3
    viewers = {s: frames_later(hls(proxy, name), s) for s in "va"}
    last = re.findall(r"^\d+\.m4s$", text, re.M)[-1]
    assert state(proxy, name) == "partial"
    early = curl(hls(proxy, name, last))            # waits for the title's last samples
    assert early.status == 200 and early.body[4:8] == b"moof"
    for stream, proc in viewers.items():
        assert frames_of(proc) == frames(source, stream), stream
    proxy.wait_complete(name)
    assert curl(hls(proxy, name)).body == playlist.body
    whole = curl(hls(proxy, name, last))
    assert whole.body == early.body and whole.headers["etag"] == early.headers["etag"]
    assert slow_origin.bytes_sent(name) == os.path.getsize(source)


def test_a_filling_fragmented_mp4_answers_503_until_it_is_whole(proxy, slow_origin):
    """A fragmented MP4's samples are known only as its fragments arrive:
    while it fills, its HLS answers 503 with Retry-After and why; once whole,
    ffmpeg gets every frame."""
    source = make_mp4(extra=("-movflags", "frag_keyframe+empty_moov"))
    name = publish(slow_origin, "remote-fragmented.mp4", source)
    for leaf in ("index.m3u8", "init.mp4", "0.m4s"):
        answer = curl(hls(proxy, name, leaf))
        assert answer.status == 503, (leaf, answer.status, answer.body)
        assert answer.headers["retry-after"] == "5"
        assert "fragmented" in answer.body.decode() and "whole" in answer.body.decode()
    assert state(proxy, name) == "partial"
    proxy.wait_complete(name)
    assert curl(hls(proxy, name)).status == 200
    assert frames_of(frames_later(hls(proxy, name), "v")) == frames(source, "v")
