"""RTP interleaved on the RTSP connection, through the real daemon: ffmpeg,
ffprobe, ffplay and GStreamer over TCP get the title unchanged; replies
and frames share the connection without cutting each other (pipelined
requests, keep-alives and PAUSE during PLAY); a client reading slower than
the media is skipped to keyframes while the other viewers stay on time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine import rtcp
from tests.helpers.daemon import KvodDaemon, serving
from tests.helpers.interleaved import Frame, Message, StreamParser, frame, read_all
from tests.helpers.players import framemd5, gst_finished, gst_receive, sha256

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file, short_ts_file):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), extra="[rtcp]\nsr_interval = 1.0\n")
    yield from serving(d, {"movie": ts_file, "clips/short": short_ts_file})


def status(daemon: KvodDaemon) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/status",
                                timeout=5) as r:
        return json.loads(r.read())


def metrics(daemon: KvodDaemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/metrics",
                                timeout=5) as r:
        return r.read().decode()


class RawRtsp:
    """A client on a bare socket: requests out, everything read back cut
    into replies and frames (a byte that is neither fails the test)."""

    def __init__(self, daemon: KvodDaemon, *, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", daemon.port))
        self.url = daemon.url
        self.parser = StreamParser()
        self.cseq = 0

    def request_bytes(self, method: str, url: str, *headers: str) -> bytes:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", *headers, "", ""]
        return "\r\n".join(lines).encode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int, timeout: float = 10.0, **kw) -> list[Message]:
        read_all(self.sock, self.parser, until=lambda p: len(p.messages()) >= n,
                 timeout=timeout, **kw)
        return self.parser.messages()

    def close(self) -> None:
        self.sock.close()


def header(msg: Message, name: str) -> str | None:
    m = re.search(rb"\r\n" + name.encode() + rb":\s*([^\r\n]*)", msg.head, re.I)
    return m.group(1).decode() if m else None


def status_code(msg: Message) -> int:
    return int(msg.head.split(b" ", 2)[1])


# -- real players ----------------------------------------------------------------


def test_ffmpeg_over_tcp_receives_every_frame_unchanged(daemon, ts_file):
    received = framemd5(daemon.url("movie"), "-rtsp_transport", "tcp", timeout=40)
    assert received == framemd5(ts_file)


def test_ffprobe_over_tcp_counts_every_frame(daemon, short_ts_file):
    def count(source, *args):
        out = subprocess.run(["ffprobe", "-v", "error", *args, "-count_packets",
                              "-show_entries", "stream=codec_type,nb_read_packets",
                              "-of", "json", source],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}
    got = count(daemon.url("clips/short"), "-rtsp_transport", "tcp")
    assert got == count(short_ts_file)
    assert got["video"] > 50


def test_gstreamer_over_tcp_receives_bytes_identical_to_the_file(daemon, ts_file, tmp_path):
    out = str(tmp_path / "gst.ts")
    started = time.monotonic()
    proc = gst_receive(daemon.url("movie"), out, protocols="tcp")
    output, _ = proc.communicate(timeout=40)
    elapsed = time.monotonic() - started
    assert gst_finished(proc, output), output
    assert sha256(out) == sha256(ts_file), (os.path.getsize(out), output)
    assert 9.0 < elapsed < 15.0  # paced, as over UDP


def test_ffplay_over_tcp_plays_to_the_end(daemon):
    env = dict(os.environ, SDL_AUDIODRIVER="dummy", SDL_VIDEODRIVER="dummy")
    started = time.monotonic()
    result = subprocess.run(["ffplay", "-nodisp", "-autoexit", "-loglevel", "error",
                             "-rtsp_transport", "tcp", daemon.url("clips/short")],
                            capture_output=True, text=True, timeout=30, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert 2.5 < elapsed < 10


# -- one connection, two writers -------------------------------------------------


def test_pipelined_requests_keepalives_and_pause_during_play(daemon):
    """DESCRIBE, SETUP (TCP) and PLAY in one write: the replies come whole,
    in order, the PLAY reply before any frame; GET_PARAMETER, an RTCP
    receiver report and PAUSE during PLAY get whole replies between whole
    frames, and after PAUSE no frame follows its reply."""
    c = RawRtsp(daemon)
    url = c.url("movie")
    try:
        c.send(c.request_bytes("DESCRIBE", url, "Accept: application/sdp")
               + c.request_bytes("SETUP", url + "/trackID=0",
                                 "Transport: RTP/AVP/TCP;unicast;interleaved=0-1"))
        describe, setup = c.replies(2)
        assert status_code(describe) == 200 and describe.body.startswith(b"v=0")
        assert status_code(setup) == 200
        assert header(setup, "Transport").startswith("RTP/AVP/TCP;unicast;interleaved=0-1")
        session = header(setup, "Session").split(";")[0]
        ssrc = int(re.search(r"ssrc=([0-9A-Fa-f]+)", header(setup, "Transport")).group(1), 16)
        # PLAY and GET_PARAMETER pipelined
        c.send(c.request_bytes("PLAY", url + "/", f"Session: {session}", "Range: npt=0-")
               + c.request_bytes("GET_PARAMETER", url + "/", f"Session: {session}"))
        msgs = c.replies(4)
        assert [status_code(m) for m in msgs] == [200] * 4
        assert header(msgs[2], "RTP-Info") and header(msgs[2], "CSeq") == "3"
        assert header(msgs[3], "CSeq") == "4"
        read_all(c.sock, c.parser, until=lambda p: p.frames(0))
        first_frame = next(i for i, item in enumerate(c.parser.items)
                           if isinstance(item, Frame))
        assert c.parser.items.index(msgs[2]) < first_frame
        # keep-alives while frames flow, and the client's RTCP on channel 1
        for _ in range(5):
            time.sleep(0.3)
            rr = rtcp.build_compound(
                rtcp.build_receiver_report(0x1234, (rtcp.ReportBlock(
                    ssrc, fraction_lost=64, cumulative_lost=3, highest_seq=1, jitter=7,
                    lsr=0, dlsr=0),)),
                rtcp.build_sdes_cname(0x1234, "viewer"))
            c.send(frame(1, rr) + c.request_bytes("GET_PARAMETER", url + "/",
                                                 f"Session: {session}"))
        msgs = c.replies(9)
        assert [header(m, "CSeq") for m in msgs] == [str(i) for i in range(1, 10)]
        assert all(status_code(m) == 200 for m in msgs)
        frames = c.parser.frames(0)
        assert len(frames) > 100
        seqs = [struct.unpack_from("!H", f, 2)[0] for f in frames]
        assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:]))
        streams = next(s for s in status(daemon)["sessions"] if s["id"] == session)["streams"]
        assert streams["0"]["ports"] == "interleaved"
        assert streams["0"]["client"] == "127.0.0.1 tcp 0-1"
        assert streams["0"]["server_ports"] is None and streams["0"]["skips"] == 0
        assert streams["0"]["loss_fraction"] == 0.25 and streams["0"]["jitter"] == 7
        # PAUSE: its reply whole, and no frame after it
        c.send(c.request_bytes("PAUSE", url + "/", f"Session: {session}"))
        msgs = c.replies(10)
        assert status_code(msgs[-1]) == 200
        read_all(c.sock, c.parser, until=lambda p: False, timeout=0.5)
        tail = c.parser.items[c.parser.items.index(msgs[-1]) + 1:]
        assert not [i for i in tail if isinstance(i, Frame) and i.channel == 0]
        c.send(c.request_bytes("TEARDOWN", url + "/", f"Session: {session}"))
        msgs = c.replies(11)
        assert status_code(msgs[-1]) == 200
        c.send(c.request_bytes("OPTIONS", "*"))
        assert status_code(c.replies(12)[-1]) == 200
    finally:
        c.close()


def test_channels_per_connection(daemon):
    """Two sessions on one connection get their own channel pairs; a pair
    in use is refused (461); no interleaved= gets the next free pair;
    closing the connection ends its TCP sessions."""
    c = RawRtsp(daemon)
    url = c.url("clips/short") + "/trackID=0"
    try:
        c.send(c.request_bytes("SETUP", url, "Transport: RTP/AVP/TCP;unicast;interleaved=2-3"))
        c.send(c.request_bytes("SETUP", url, "Transport: RTP/AVP/TCP;unicast;interleaved=2-3"))
        c.send(c.request_bytes("SETUP", url, "Transport: RTP/AVP/TCP;unicast"))
        c.send(c.request_bytes("SETUP", url, "Transport: RTP/AVP/TCP;unicast;interleaved=4-6"))
        a, taken, auto, odd = c.replies(4)
        assert status_code(a) == 200 and "interleaved=2-3" in header(a, "Transport")
        assert status_code(taken) == 461
        assert status_code(auto) == 200 and "interleaved=0-1" in header(auto, "Transport")
        assert status_code(odd) == 461
        ids = {header(m, "Session").split(";")[0] for m in (a, auto)}
        assert ids <= {s["id"] for s in status(daemon)["sessions"]}
    finally:
        c.close()
    deadline = time.monotonic() + 5
    while ids & {s["id"] for s in status(daemon)["sessions"]}:
        assert time.monotonic() < deadline, "sessions outlived their connection"
        time.sleep(0.05)


# -- a slow reader among viewers ---------------------------------------------------


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_slow_tcp_reader_is_skipped_others_stay_on_time(tmp_path, ts_file):
    """A TCP viewer reading at half the media rate through a tiny receive
    buffer, beside a UDP viewer and a TCP viewer (ffmpeg): the slow one is
    skipped to keyframes (counted in status and metrics), the others get
    every frame on time, and the daemon's memory stays flat."""
    # a 10 s title: a lag bound and a send buffer that a slow reader meets soon
    d = KvodDaemon(str(tmp_path), extra="[rtcp]\nsr_interval = 1.0\n[interleaved]\n"
                   "max_lag = 1.0\nsend_buffer = 16384\n")
    d.add(ts_file, "busy")
    d.start()
    try:
        size = os.path.getsize(ts_file)
        rate = size / 10 / 2  # half the media rate
        slow = RawRtsp(d, rcvbuf=4096)
        url = d.url("busy")
        slow.send(slow.request_bytes("SETUP", url + "/trackID=0",
                                     "Transport: RTP/AVP/TCP;unicast;interleaved=0-1"))
        session = header(slow.replies(1)[0], "Session").split(";")[0]
        slow.send(slow.request_bytes("PLAY", url + "/", f"Session: {session}"))
        assert status_code(slow.replies(2)[-1]) == 200
        pid = d.proc.pid
        rss0 = rss_kb(pid)
        # the others: kvod's client over UDP, ffmpeg over TCP
        rx = RtpReceiver()
        udp = RtspClient("127.0.0.1", d.port)
        udp_session, _, _ = udp.setup_udp(url + "/trackID=0", rx.ports)
        assert udp.request("PLAY", url + "/", [("Session", udp_session)]).status == 200
        # to a file: a pipe nobody reads would make ffmpeg a slow reader too
        ff_out = open(tmp_path / "ff.framemd5", "w+")
        ff = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error",
                               "-rtsp_transport", "tcp", "-i", url, "-c", "copy",
                               "-f", "framemd5", "-"],
                              stdout=ff_out, stderr=subprocess.PIPE, text=True)
        rss = []
        reader = threading.Thread(target=read_all, args=(slow.sock, slow.parser),
                                  kwargs=dict(until=lambda p: False, timeout=9,
                                              chunk=2048, rate=rate))
        reader.start()
        while reader.is_alive():
            rss.append(rss_kb(pid))
            time.sleep(1)
        reader.join()
        _, err = ff.communicate(timeout=30)
        assert ff.returncode == 0, err
        ff_out.seek(0)
        out = ff_out.read()
        ff_out.close()
        ff_frames = [",".join(f.strip() for i, f in enumerate(line.split(",")) if i in (0, 4, 5))
                     for line in out.splitlines() if line and not line.startswith("#")]
        assert ff_frames == framemd5(ts_file)
        st = status(d)
        slow_stream = next(s for s in st["sessions"] if s["id"] == session)["streams"]["0"]
        assert slow_stream["skips"] >= 1 and slow_stream["packets_skipped"] > 100
        assert slow_stream["out_queued_max"] <= 4 + 65535 + 65536
        assert st["traffic"]["skips"] >= 1
        assert re.search(r"^kvod_interleaved_skips_total [1-9]", metrics(d), re.M)
        udp_stream = next(s for s in st["sessions"] if s["id"] == udp_session)["streams"]["0"]
        # on time, but for what a shared 2-core machine's scheduling costs
        assert udp_stream["late_5ms"] <= udp_stream["packets_sent"] // 100
        # memory: flat, whatever the slow reader leaves unread
        assert max(rss) - rss0 < 8 * 1024, (rss0, rss)
        # whole frames only: every frame parses as RTP of our stream
        assert all(f[0] >> 6 == 2 for f in slow.parser.frames(0))
        assert "reads slower than the media" in d.log()
        slow.close()
        udp.close()
        rx.close()
    finally:
        assert d.stop() == 0, d.log()


def test_stalled_tcp_reader_is_cut_off(tmp_path, ts_file):
    """A TCP client that stops reading after the PLAY reply: after the stall
    time its connection is closed and its session ends, logged once and
    counted in /metrics; the daemon serves the next client. The stall time
    and the send buffer come from a reload (SIGHUP), not a restart."""
    d = KvodDaemon(str(tmp_path), extra="[interleaved]\nstall_timeout = 30.0\n"
                   "send_buffer = 131072\n")
    d.add(ts_file, "movie")
    d.start()
    try:
        with open(d.config) as f:
            text = f.read()
        with open(d.config, "w") as f:
            f.write(text.replace("stall_timeout = 30.0", "stall_timeout = 1.5")
                    .replace("send_buffer = 131072", "send_buffer = 4096"))
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload: interleaved.send_buffer is now 4096" not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        assert "reload: interleaved.stall_timeout is now 1.5" in d.log()
        c = RawRtsp(d, rcvbuf=4096)
        url = d.url("movie")
        c.send(c.request_bytes("SETUP", url + "/trackID=0", "Transport: RTP/AVP/TCP;unicast"))
        session = header(c.replies(1)[0], "Session").split(";")[0]
        c.send(c.request_bytes("PLAY", url + "/", f"Session: {session}"))
        assert status_code(c.replies(2)[-1]) == 200
        started = time.monotonic()
        while session in {s["id"] for s in status(d)["sessions"]}:
            assert time.monotonic() - started < 10, "the stalled session lives on"
            time.sleep(0.1)
        assert 1.4 < time.monotonic() - started < 6
        assert re.search(r"^kvod_interleaved_stalls_total 1", metrics(d), re.M)
        assert d.log().count("the client took nothing") == 1
        # the connection is gone: reading drains what was queued, then ends
        c.sock.settimeout(5)
        try:
            while c.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        c.close()
        assert framemd5(d.url("movie"), "-rtsp_transport", "tcp", timeout=40) == \
            framemd5(ts_file)
    finally:
        assert d.stop() == 0, d.log()
