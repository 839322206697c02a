"""The real daemon, real clients: GStreamer, ffmpeg, and kvod's RTSP client.

Everything runs on loopback. Titles are short (3-10 s) because streams are
paced at the media rate; the slow cases run their clients concurrently.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.hintfile import HintFile
from rtpengine.rtp import parse_rtp
from appliance.bench.daemon import ROOT
from tests.helpers.daemon import KvodDaemon, serving
from tests.helpers.players import (assert_contiguous, framemd5, gst_finished, gst_receive,
                                   payloads, sha256)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file, short_ts_file):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), extra="[rtcp]\nsr_interval = 1.0\n")
    yield from serving(d, {"movie": ts_file, "clips/short": short_ts_file})


def title_hints(daemon: KvodDaemon, name: str) -> HintFile:
    return HintFile(daemon.title_info(name)["tracks"][0]["hint_path"])


def play(client: RtspClient, receiver: RtpReceiver, name: str, rng: str | None = "npt=0-"):
    url = client.url(name)
    assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
    session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
    headers = [("Session", session)] + ([("Range", rng)] if rng else [])
    resp = client.request("PLAY", url + "/", headers)
    assert resp.status == 200, resp
    return session, resp


# -- real players ----------------------------------------------------------------


def test_gstreamer_receives_bytes_identical_to_the_file(daemon, ts_file, tmp_path):
    out = str(tmp_path / "gst.ts")
    started = time.monotonic()
    proc = gst_receive(daemon.url("movie"), out)
    output, _ = proc.communicate(timeout=40)
    elapsed = time.monotonic() - started
    assert gst_finished(proc, output), output
    assert sha256(out) == sha256(ts_file), (os.path.getsize(out), output)
    # paced at the media rate: a 10 s title is not blasted at once
    assert 9.0 < elapsed < 15.0


def test_ffmpeg_over_udp_receives_every_frame_unchanged(daemon, ts_file):
    received = framemd5(daemon.url("movie"), "-rtsp_transport", "udp", timeout=40)
    assert received == framemd5(ts_file)


@pytest.mark.parametrize("clients", [2, 10])
def test_concurrent_gstreamer_clients_each_get_the_file(daemon, short_ts_file, tmp_path, clients):
    outs = [str(tmp_path / f"c{i}.ts") for i in range(clients)]
    procs = [gst_receive(daemon.url("clips/short"), out) for out in outs]
    want = sha256(short_ts_file)
    for proc, out in zip(procs, outs):
        output, _ = proc.communicate(timeout=60)
        assert gst_finished(proc, output), output
        size = os.path.getsize(out) if os.path.exists(out) else None
        assert sha256(out) == want, (f"{out}: {size} bytes, want {os.path.getsize(short_ts_file)}; "
                                     f"gst said {output!r}; daemon log tail:\n{daemon.log()[-3000:]}")


def test_gst_race_filter_accepts_only_that_race():
    class Proc:
        returncode = 1
    race = (b"ERROR: from element /GstPipeline:pipeline0/GstRTSPSrc:rtspsrc0: Could not write "
            b"to resource.\nAdditional debug info:\n../gst/rtsp/gstrtspsrc.c(9240): "
            b"gst_rtspsrc_pause ():\nCould not send message. (Received end-of-file)\n")
    assert gst_finished(Proc(), race)
    assert gst_finished(Proc(), race * 2)
    assert not gst_finished(Proc(), b"")
    assert not gst_finished(Proc(), race + b"ERROR: from element x: Could not read from "
                                          b"resource.\nCould not receive message.\n")
    assert not gst_finished(Proc(), b"ERROR: Internal data stream error.\n")


# -- protocol behaviour, with kvod's own client --------------------------------------


def test_seek_starts_at_the_keyframe_at_or_before(daemon, ts_file):
    media = open(ts_file, "rb").read()
    with title_hints(daemon, "movie") as hints:
        index = hints.keyframe_at_or_before(8_000_000_000)
        first = hints.record(index)
    assert 7.0e9 <= first.send_ns <= 8.0e9
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        session, resp = play(client, receiver, "movie", "npt=8-")
        start = float(resp.headers.get("Range").split("=")[1].split("-")[0])
        assert start == pytest.approx(first.send_ns / 1e9, abs=0.001)
        deadline = time.monotonic() + 8
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.05)
        got = payloads(receiver)
        assert_contiguous([s for s, _ in got])
        assert b"".join(p for _, p in got) == media[first.offset:]
        info = resp.headers.get("RTP-Info")
        assert f"seq={got[0][0]}" in info
    finally:
        client.close()
        receiver.close()


def test_a_range_end_stops_the_stream_there_with_a_bye(daemon, ts_file):
    media = open(ts_file, "rb").read()
    with title_hints(daemon, "movie") as hints:
        start = hints.keyframe_at_or_before(2_000_000_000)
        stop = hints.index_at(3_500_000_000) + 1      # the records at or before 3.5 s
        first, after = hints.record(start), hints.record(stop)
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        session, resp = play(client, receiver, "movie", "npt=2-3.5")
        assert resp.headers.get("Range").endswith("-3.500")
        deadline = time.monotonic() + 6
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.got_bye()
        got = payloads(receiver)
        assert_contiguous([s for s, _ in got])
        assert b"".join(p for _, p in got) == media[first.offset:after.offset]
        # the same session plays on to the title's end when asked
        resp = client.request("PLAY", client.url("movie") + "/",
                              [("Session", session), ("Range", "npt=8-")])
        assert resp.status == 200 and resp.headers.get("Range").startswith("npt=")
        assert not resp.headers.get("Range").endswith("-3.500")
    finally:
        client.close()
        receiver.close()


def assert_keyframes_in_play_order(ts_path, scale: int) -> None:
    """The MPEG-TS at ``ts_path`` decodes (ffprobe) to keyframes only, at
    least 8 of the 10 s title's, their times rising (or, for a negative
    ``scale``, falling)."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "frame=pts_time,key_frame", "-of", "csv=p=0", str(ts_path)],
        capture_output=True, text=True, timeout=60, check=True)
    frames = [line.split(",")[:2] for line in probe.stdout.split() if line]
    times = [float(t) for _, t in frames]
    assert len(frames) >= 8 and all(k == "1" for k, _ in frames), frames
    steps = [b - a for a, b in zip(times, times[1:])]
    assert all(step > 0 for step in steps) if scale > 0 else all(step < 0 for step in steps)


@pytest.mark.parametrize("scale", [4, -4])
def test_gstreamer_trick_play_forwards_and_backwards(daemon, tmp_path, scale):
    """GStreamer asks for trick play as an application does, with a seek at
    a rate and the TRICKMODE flag: rtspsrc sends a PLAY with Scale (and,
    backwards, a Range from the later time to the earlier, which kvod
    answered 457 before) and gets the keyframes in play
    order, in about a quarter of the title's 10 s, then EOS."""
    out = tmp_path / "trick.ts"
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.gst_trick", daemon.url("movie"),
                           str(scale), str(out)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["error"] is None, result
    assert 1.5 < result["last_packet_s"] < 4.0, result
    assert result["eos_s"] is not None, result
    assert_keyframes_in_play_order(out, scale)


@pytest.mark.parametrize("scale", [4, -4])
def test_scale_plays_the_keyframes_faster_or_backwards(daemon, tmp_path, scale):
    """Scale 4 covers the 10 s title in about 2.5 s with its keyframes, in
    order; Scale -4 from the end runs backwards through them. What arrives
    is MPEG-TS that ffprobe decodes."""
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("movie")
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        resp = client.request("PLAY", url + "/", [
            ("Session", session), ("Scale", str(scale)),
            ("Range", "npt=0-" if scale > 0 else "npt=9.9-")])
        assert resp.status == 200 and resp.headers.get("Scale") == str(scale)
        deadline = time.monotonic() + 10
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.got_bye()
        wall = (receiver.packets[-1][0] - receiver.packets[0][0]) / 1e9
        assert 1.5 < wall < 4.0, wall          # a quarter of the title's 10 s
        assert_contiguous([s for s, _ in payloads(receiver)])
        out = tmp_path / "trick.ts"
        out.write_bytes(b"".join(p for _, p in payloads(receiver)))
        assert_keyframes_in_play_order(out, scale)
        # a PLAY without Scale goes back to normal play
        resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=5-")])
        assert resp.status == 200 and resp.headers.get("Scale") is None
    finally:
        client.close()
        receiver.close()


def test_pause_stops_packets_and_play_resumes_without_gap(daemon, ts_file):
    media = open(ts_file, "rb").read()
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        session, _ = play(client, receiver, "movie")
        url = client.url("movie") + "/"
        time.sleep(1.0)
        assert client.request("PAUSE", url, [("Session", session)]).status == 200
        time.sleep(0.2)  # packets in flight land
        paused_at = len(receiver.packets)
        assert paused_at > 50
        time.sleep(1.0)
        assert len(receiver.packets) == paused_at, "packets kept coming while paused"
        resp = client.request("PLAY", url, [("Session", session)])
        assert resp.status == 200
        time.sleep(1.0)
        assert client.request("PAUSE", url, [("Session", session)]).status == 200
        time.sleep(0.2)
        got = payloads(receiver)
        assert len(got) > paused_at + 50
        assert_contiguous([s for s, _ in got])
        data = b"".join(p for _, p in got)
        assert data == media[:len(data)]
        assert f"seq={got[paused_at][0]}" in resp.headers.get("RTP-Info")
        assert client.request("TEARDOWN", url, [("Session", session)]).status == 200
    finally:
        client.close()
        receiver.close()


def test_rtcp_sender_reports_and_bye(daemon):
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        play(client, receiver, "clips/short")
        deadline = time.monotonic() + 8
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.got_bye()
        from rtpengine.rtcp import Bye, SenderReport, parse_compound
        packets = [p for _, data in receiver.rtcp for p in parse_compound(data)]
        reports = [p for p in packets if isinstance(p, SenderReport)]
        assert len(reports) >= 2  # one a second, and one with the BYE
        last = reports[-1]
        assert last.packet_count == len(receiver.packets)
        assert last.octet_count == sum(len(parse_rtp(p)[1]) for _, p in receiver.packets)
        assert any(isinstance(p, Bye) for p in packets)
    finally:
        client.close()
        receiver.close()


# -- bad input --------------------------------------------------------------------------


def test_unknown_title_is_404(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        assert client.request("DESCRIBE", client.url("no/such/title")).status == 404
    finally:
        client.close()


def test_bad_transport_is_461_and_unknown_session_454(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("movie")
        # interleaved channels that are not an RTP/RTCP pair (TCP itself
        # is served: tests/test_tcp_integration.py)
        resp = client.request("SETUP", url + "/trackID=0",
                              [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-3")])
        assert resp.status == 461
        resp = client.request("PLAY", url + "/", [("Session", "0123456789ABCDEF")])
        assert resp.status == 454
        # the connection is still usable after errors
        assert client.request("OPTIONS", "*").status == 200
    finally:
        client.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02 not rtsp at all\r\n\r\n",
    b"DESCRIBE rtsp://x/movie RTSP/1.0\r\nContent-Length: -5\r\nCSeq: 1\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\n\r\n",  # no CSeq
])
def test_malformed_requests_get_400_and_others_are_unaffected(daemon, garbage):
    bad = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    good = RtspClient("127.0.0.1", daemon.port)
    try:
        bad.sendall(garbage)
        reply = b""
        while chunk := bad.recv(4096):
            reply += chunk
        assert reply.startswith(b"RTSP/1.0 400 "), reply[:80]
        assert good.request("OPTIONS", "*").status == 200
    finally:
        bad.close()
        good.close()


def test_vanished_client_is_reclaimed_after_the_timeout(tmp_path, ts_file):
    d = KvodDaemon(str(tmp_path), session_timeout=2)
    d.add(ts_file, "movie")
    d.start()
    receiver = RtpReceiver()
    try:
        client = RtspClient("127.0.0.1", d.port)
        play(client, receiver, "movie")
        client.close()  # gone without TEARDOWN, and sends no RTCP
        time.sleep(4.0)
        count = len(receiver.packets)
        time.sleep(1.0)
        assert len(receiver.packets) == count, "still streaming to a vanished client"
        # it stopped near the timeout, long before the 10 s title ended
        last = receiver.packets[-1][0] - receiver.packets[0][0]
        assert 1.5e9 < last < 3.5e9
        assert "timed out" in d.log()
    finally:
        receiver.close()
        assert d.stop() == 0


def test_daemon_refuses_a_bad_config_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[rtsp]\nsession_timeout = \"soon\"\n")
    result = subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..",
                                                              "bin", "kvod"),
                             "--config", str(config), "serve"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "rtsp.session_timeout" in result.stderr


def test_ffplay_from_the_readme_plays_to_the_end(daemon):
    """`ffplay rtsp://…` as the README says, headless: it plays the whole
    title at its rate and exits on its own when the stream ends."""
    env = dict(os.environ, SDL_AUDIODRIVER="dummy", SDL_VIDEODRIVER="dummy")
    started = time.monotonic()
    result = subprocess.run(["ffplay", "-nodisp", "-autoexit", "-loglevel", "error",
                             daemon.url("clips/short")],
                            capture_output=True, text=True, timeout=30, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # ffmpeg picks its client ports itself and, when one is taken by another
    # process on this shared machine, says so and tries the next: not ours
    errors = [line for line in result.stderr.splitlines()
              if not re.fullmatch(r"\[udp @ 0x[0-9a-f]+\] bind failed: Address already in use",
                                  line)]
    assert errors == [], result.stderr
    assert 2.5 < elapsed < 10
