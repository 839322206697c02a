"""HLS over the cache: playlists of byte ranges cut at keyframes, checked
as pure functions and against the real daemon with ffmpeg and ffprobe."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from appliance.http.playlist import (Cut, Segment, fmp4_playlist, media_playlist, segments,
                                     ts_init_section)
from tests.helpers.daemon import KvodDaemon
from tests.helpers.origins import FaultOrigin
from tests.helpers.web import curl


# -- pure ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**10)), max_size=60),
       st.integers(10**8, 10**10), st.booleans())
def test_segments_tile_the_file_from_cut_to_cut(raw, target_ns, final):
    # cuts in file order with times that do not go back, as hint records are
    raw = sorted(raw)
    cuts, t = [], 0
    for offset, dt in raw:
        t += dt % (3 * 10**9)
        cuts.append(Cut(offset * 188, t))
    end = (max((c.offset for c in cuts), default=0)) + 188 * 100
    parts = segments(cuts, target_ns, end_offset=end, end_ns=t + 10**9, final=final)
    at = 0
    starts = {c.offset for c in cuts}
    for part in parts:
        assert part.offset == at and part.length > 0
        assert part.offset == 0 or part.offset in starts
        at += part.length
    if final:
        assert at == end
        assert sum(p.duration for p in parts) == pytest.approx((t + 10**9) / 1e9)
    for part in parts[:-1] if final else parts:
        assert part.duration >= target_ns / 1e9 - 1e-9


def test_playlist_text():
    text = media_playlist([Segment(0, 1000, 6.0), Segment(1000, 500, 6.4)], "media.ts",
                          final=True, init=(0, 376), target_s=6)
    assert text.splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:6", "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MAP:URI="media.ts",BYTERANGE="376@0"',
        "#EXTINF:6.000000,", "#EXT-X-BYTERANGE:1000@0", "media.ts",
        "#EXTINF:6.400000,", "#EXT-X-BYTERANGE:500@1000", "media.ts", "#EXT-X-ENDLIST"]
    event = media_playlist([Segment(0, 10, 7.6)], "/t", final=False, target_s=6)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
    assert "#EXT-X-TARGETDURATION:8" in event


def test_fmp4_playlist_text():
    text = fmp4_playlist([6.0, 6.5, 1.25], "init.mp4", "{}.m4s", target_s=6)
    assert text.splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:7", "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS", '#EXT-X-MAP:URI="init.mp4"',
        "#EXTINF:6.000000,", "0.m4s", "#EXTINF:6.500000,", "1.m4s",
        "#EXTINF:1.250000,", "2.m4s", "#EXT-X-ENDLIST"]


def test_init_section_of_a_real_file(ts_file):
    with open(ts_file, "rb") as f:
        head = f.read(32 * 188)
    start, length = ts_init_section(head)
    assert start == 0 and length % 188 == 0 and 2 * 188 <= length <= 3 * 188
    assert ts_init_section(b"\0" * 1000) is None


# -- the real daemon ---------------------------------------------------------------------



def parse_playlist(text: str) -> list[tuple[float, int, int]]:
    """(duration, length, offset) of every segment."""
    return [(float(d), int(n), int(o)) for d, n, o in
            re.findall(r"#EXTINF:([\d.]+),\n#EXT-X-BYTERANGE:(\d+)@(\d+)\n", text)]


def count_packets(source: str, stream: str) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream,
                          "-count_packets", "-show_entries", "stream=nb_read_packets",
                          "-of", "csv=p=0", source], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return int(out.strip().splitlines()[0])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), http=True,
                   http_keys="target_duration = 2\n")
    d.add(ts_file, "movies/first")
    d.start()
    yield d
    assert d.stop() == 0, d.log()


@pytest.mark.integration
def test_vod_playlist_cuts_at_keyframes(daemon, ts_file):
    url = f"http://127.0.0.1:{daemon.http_port}/hls/movies/first/index.m3u8"
    answer = curl(url)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/vnd.apple.mpegurl"
    text = answer.body.decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    parts = parse_playlist(text)
    assert len(parts) == 5                                    # 10 s in 2 s segments
    assert [round(d) for d, _, _ in parts] == [2, 2, 2, 2, 2]
    with open(ts_file, "rb") as f:
        data = f.read()
    assert sum(n for _, n, _ in parts) == len(data)
    init = re.search(r'BYTERANGE="(\d+)@0"', text)
    head = data[:int(init[1])]
    # every segment after the first (which holds the tables) starts on a keyframe
    for _, length, offset in parts[1:]:
        piece = head + data[offset:offset + length]
        flags = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
             "packet=flags", "-of", "csv=p=0", "-"], input=piece, capture_output=True,
            check=True, timeout=30).stdout.decode().split()
        assert flags and flags[0].startswith("K"), (offset, flags[:3])


@pytest.mark.integration
def test_ffmpeg_receives_every_frame_through_hls(daemon, ts_file, tmp_path):
    url = f"http://127.0.0.1:{daemon.http_port}/hls/movies/first/index.m3u8"
    out = str(tmp_path / "out.ts")
    started = time.monotonic()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-c", "copy",
                    "-f", "mpegts", out], check=True, timeout=120)
    assert time.monotonic() - started < 60
    assert count_packets(out, "v") == count_packets(ts_file, "v")
    assert count_packets(out, "a") == count_packets(ts_file, "a")


@pytest.mark.integration
def test_a_filling_title_has_a_growing_event_playlist(tmp_path, ts_file):
    with open(ts_file, "rb") as f:
        data = f.read()
    # about 3 s for the whole title: several looks at a growing playlist
    origin = FaultOrigin({"growing.ts": data},
                         fault=lambda p, s, e, n: ("slow", len(data) // 3))
    d = KvodDaemon(str(tmp_path), http=True, http_keys="target_duration = 2\n",
                   extra=f'[origin]\nbase_url = "{origin.base_url}"\nchunk_bytes = "128KiB"\n'
                         'requests_per_fill = 1\n')
    d.start()
    url = f"http://127.0.0.1:{d.http_port}/hls/growing.ts/index.m3u8"
    try:
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = curl(url)
            # the first request of an uncached title waits for its first segment
            assert answer.status == 200, (answer.status, answer.body)
            if answer.status == 200:
                text = answer.body.decode()
                seen.append((len(parse_playlist(text)), "#EXT-X-ENDLIST" in text,
                             "EVENT" in text))
                if seen[-1][1]:
                    break
            time.sleep(0.2)
        events = [n for n, ended, event in seen if event and not ended]
        assert events, seen
        assert events == sorted(events) and events[0] < 5, seen     # it grew
        assert seen[-1] == (5, True, False), seen                   # then VOD, whole
    finally:
        assert d.stop() == 0, d.log()
        origin.stop()
