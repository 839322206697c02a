"""``[rtsp] server_ports = "shared"`` with the real daemon and real clients.

Every session sends from one server RTP/RTCP port pair: clients must still
get their whole title, RTCP from each must reach its own session, and one
session's end must not disturb another's.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine import rtcp
from rtpengine.rtp import parse_rtp
from tests.helpers.daemon import KVOD, KvodDaemon, free_udp_pair, serving
from tests.helpers.players import (
    assert_contiguous,
    framemd5,
    gst_finished,
    gst_receive,
    payloads,
    sha256,
)

pytestmark = pytest.mark.integration


def shared_daemon(folder: str, *, session_timeout: float = 60) -> KvodDaemon:
    port = free_udp_pair()
    # the pair outside the per-session range: it must be the one used
    d = KvodDaemon(folder, session_timeout=session_timeout,
                   rtsp=f'server_ports = "shared"\nshared_rtp_port = {port}\n',
                   extra="[rtcp]\nsr_interval = 1.0\n")
    d.shared_port = port
    return d


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file, short_ts_file):
    d = shared_daemon(str(tmp_path_factory.mktemp("kvod-shared")))
    yield from serving(d, {"movie": ts_file, "clips/short": short_ts_file})


def status(daemon: KvodDaemon) -> dict:
    return json.loads(daemon.kvod("status", "--json").stdout)


def setup_play(client: RtspClient, receiver: RtpReceiver, name: str):
    """DESCRIBE, SETUP, PLAY; returns (session id, server ports)."""
    url = client.url(name)
    assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
    session, server_ports, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
    assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
    return session, server_ports


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_gstreamer_and_ffmpeg_at_once_from_one_port_pair(daemon, ts_file, short_ts_file,
                                                         tmp_path):
    """Two GStreamer clients (byte-exact) and ffmpeg (every frame) play at
    once; the engine sends all of them from the one shared socket, and the
    streams' server ports (what SETUP answered) are the shared pair."""
    outs = [str(tmp_path / f"gst{i}.ts") for i in range(2)]
    gsts = [gst_receive(daemon.url("clips/short"), out) for out in outs]
    pool = ThreadPoolExecutor(1)
    ffmpeg = pool.submit(framemd5, daemon.url("movie"), "-rtsp_transport", "udp", timeout=60)
    seen_shared = set()
    try:
        # while they play: every stream is on a shared socket, one pair in status
        def all_playing() -> bool:
            info = status(daemon)
            streams = [st for s in info["sessions"] for st in s["streams"].values()]
            for st in streams:
                if st.get("packets_sent"):
                    seen_shared.add((st["client"], st["shared"], tuple(st["server_ports"])))
            return len(streams) == 3 and all(st.get("packets_sent") for st in streams)
        assert wait_until(all_playing, 20), status(daemon)
        info = status(daemon)
        assert info["server_ports"]["mode"] == "shared"
        assert info["server_ports"]["rtp"] == daemon.shared_port
        assert info["server_ports"]["streams"] == 3
        assert {(shared, ports) for _, shared, ports in seen_shared} == {
            (True, (daemon.shared_port, daemon.shared_port + 1))}
        assert len(seen_shared) == 3  # three clients, each by its own ports
        for proc, out in zip(gsts, outs):
            output, _ = proc.communicate(timeout=60)
            assert gst_finished(proc, output), output[-2000:]
            assert sha256(out) == sha256(short_ts_file), output[-2000:]
        assert ffmpeg.result(timeout=70) == framemd5(ts_file)
    finally:
        for proc in gsts:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        pool.shutdown()  # framemd5 is bounded by its own timeout


def test_every_session_gets_the_same_server_port_and_its_own_bytes(daemon, ts_file):
    """kvod's own client, twice from one host: the same server_port in both
    replies, and teardown of one leaves the other whole and gap-free."""
    media = open(ts_file, "rb").read()
    receivers = [RtpReceiver(), RtpReceiver()]
    clients = [RtspClient("127.0.0.1", daemon.port) for _ in receivers]
    try:
        (s1, ports1), (s2, ports2) = (setup_play(c, r, "movie")
                                      for c, r in zip(clients, receivers))
        assert ports1 == ports2 == (daemon.shared_port, daemon.shared_port + 1)
        assert receivers[0].wait_for(50) and receivers[1].wait_for(50)
        url = clients[0].url("movie") + "/"
        assert clients[0].request("TEARDOWN", url, [("Session", s1)]).status == 200
        assert wait_until(receivers[0].got_bye, 5)  # its BYE, from the shared RTCP port
        assert wait_until(receivers[1].got_bye, 15), "the other session did not end"
        assert not [p for _, d in receivers[1].rtcp for p in rtcp.parse_compound(d)
                    if isinstance(p, rtcp.Bye)][:-1]  # one BYE: its own end
        got = payloads(receivers[1])
        assert_contiguous([seq for seq, _ in got])
        assert b"".join(p for _, p in got) == media
        ssrcs = {parse_rtp(p)[0].ssrc for r in receivers for _, p in r.packets}
        assert len(ssrcs) == 2
    finally:
        for c in clients:
            c.close()
        for r in receivers:
            r.close()


def test_rtcp_reports_reach_their_session_by_address_and_by_ssrc(daemon):
    """Receiver reports from the announced RTCP port, and from another port
    of the same host (found by the SSRC they name), land in the right
    session's figures; a stranger's report is ignored."""
    receivers = [RtpReceiver(), RtpReceiver()]
    clients = [RtspClient("127.0.0.1", daemon.port) for _ in receivers]
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        sessions = [setup_play(c, r, "movie")[0] for c, r in zip(clients, receivers)]
        assert receivers[0].wait_for(5) and receivers[1].wait_for(5)
        ssrcs = [parse_rtp(r.packets[0][1])[0].ssrc for r in receivers]
        server = ("127.0.0.1", daemon.shared_port + 1)

        def report(ssrc: int, lost: int, jitter: int) -> bytes:
            block = rtcp.ReportBlock(ssrc=ssrc, fraction_lost=64, cumulative_lost=lost,
                                     highest_seq=1, jitter=jitter, lsr=0, dlsr=0)
            return rtcp.build_receiver_report(0x1234, (block,))
        # session 0 from its announced RTCP port; session 1 from elsewhere
        receivers[0].rtcp_sock.sendto(report(ssrcs[0], 11, 111), server)
        other.sendto(report(ssrcs[1], 22, 222), server)
        # a report on nobody's SSRC from an unknown port: ignored
        other.sendto(report(ssrcs[0] ^ 0xFFFFFFFF, 33, 333), server)

        def figures():
            by_id = {s["id"]: s["streams"]["0"] for s in status(daemon)["sessions"]}
            return [(by_id[s]["cumulative_lost"], by_id[s]["jitter"]) for s in sessions]
        assert wait_until(lambda: figures() == [(11, 111), (22, 222)], 5), figures()
        rtcp_in = status(daemon)["server_ports"]["rtcp_in"]
        assert rtcp_in["by_ssrc"] >= 1 and rtcp_in["unknown"] >= 1
        for c, r, s in zip(clients, receivers, sessions):
            assert c.request("TEARDOWN", c.url("movie") + "/", [("Session", s)]).status == 200
    finally:
        other.close()
        for c in clients:
            c.close()
        for r in receivers:
            r.close()


def test_rtcp_alone_keeps_a_session_alive_on_the_shared_port(tmp_path, ts_file):
    """No RTSP after PLAY: a client that sends receiver reports to the
    shared RTCP port outlives the session timeout; a silent one does not."""
    d = shared_daemon(str(tmp_path), session_timeout=2)
    d.add(ts_file, "movie")
    d.start()
    receivers = [RtpReceiver(), RtpReceiver()]
    clients = [RtspClient("127.0.0.1", d.port) for _ in receivers]
    try:
        for c, r in zip(clients, receivers):
            setup_play(c, r, "movie")
        assert receivers[0].wait_for(5)
        ssrc = parse_rtp(receivers[0].packets[0][1])[0].ssrc
        block = rtcp.ReportBlock(ssrc=ssrc, fraction_lost=0, cumulative_lost=0,
                                 highest_seq=1, jitter=0, lsr=0, dlsr=0)
        report = rtcp.build_receiver_report(0x4321, (block,))
        server = ("127.0.0.1", d.shared_port + 1)
        started = time.monotonic()
        while time.monotonic() - started < 5.0:  # well past the 2 s timeout
            receivers[0].rtcp_sock.sendto(report, server)
            time.sleep(0.5)
        sessions = status(d)["sessions"]
        assert len(sessions) == 1 and sessions[0]["state"] == "playing", sessions
        count = len(receivers[1].packets)
        time.sleep(0.5)
        assert len(receivers[1].packets) == count, "still streaming to the silent client"
        assert "timed out" in d.log()
    finally:
        for c in clients:
            c.close()
        for r in receivers:
            r.close()
        assert d.stop() == 0, d.log()


def test_shared_pair_in_use_stops_the_daemon_naming_it(tmp_path):
    d = shared_daemon(str(tmp_path))
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("0.0.0.0", d.shared_port + 1))
    try:
        result = subprocess.run(KVOD + ["--config", d.config, "serve"],
                                capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert result.returncode == 1
    assert f"shared server ports {d.shared_port}-{d.shared_port + 1}" in result.stderr
