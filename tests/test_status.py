"""``kvod status``, ``/status`` and ``/metrics`` against the real daemon."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from appliance.cli.common import admin_address as _admin_address
from appliance.metrics import DaemonMetrics
from tests.helpers.daemon import KvodDaemon, play_movie

pytestmark = pytest.mark.integration


def get(daemon: KvodDaemon, path: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}{path}", timeout=5) as r:
        return r.headers["Content-Type"], r.read()


@pytest.fixture
def playing(tmp_path, ts_file):
    """A daemon with one session playing."""
    with play_movie(tmp_path, ts_file) as p:
        yield p.daemon, p.session


def test_status_lists_engine_and_playing_session(playing):
    daemon, session = playing
    info = json.loads(daemon.kvod("status", "--json").stdout)
    assert info["engine"]["strategy"] == "gso"
    assert info["engine"]["fallback"] is None
    # the [engine] defaults reach the engine
    assert (info["engine"]["lookahead_ms"], info["engine"]["burst_ms"]) == (2.0, 20.0)
    (listed,) = info["sessions"]
    assert listed["id"] == session and listed["title"] == "movie"
    assert listed["state"] == "playing"
    stream = listed["streams"]["0"]
    assert stream["packets_sent"] >= 20 and stream["state"] == "playing"
    assert info["server_ports"]["mode"] == "per-session"
    assert stream["shared"] is False and stream["ports"] == "per-session"
    text = daemon.kvod("status").stdout
    assert "engine: gso (asked auto)" in text
    assert "engine in use: gso strategy (asked auto)" in text and "user space" in text
    assert "server ports: per-session pairs from " in text
    assert "warning:" not in text       # the test daemons' ports are clear of the kernel's
    assert session in text and "movie" in text


def test_metrics_are_prometheus_text(playing):
    daemon, session = playing
    content_type, body = get(daemon, "/metrics")
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE kvod_sent_packets_total counter" in text
    sent = [line for line in text.splitlines() if line.startswith("kvod_sent_packets_total ")]
    assert len(sent) == 1 and float(sent[0].rsplit(" ", 1)[1]) > 0
    assert 'kvod_sessions{state="playing"} 1.0' in text
    # aggregate series only: no label per session (an unbounded set)
    assert session not in text and "movie" not in text
    assert 'kvod_rtsp_request_seconds_count{method="PLAY"} 1.0' in text


@pytest.mark.parametrize("mode", ["per-session", "shared"])
def test_client_receiver_reports_show_in_status(tmp_path, ts_file, mode):
    """A client's RTCP receiver report, sent to the server RTCP port its
    SETUP reply named, gives the session's loss and jitter figures."""
    from rtpengine import rtcp
    from rtpengine.rtp import parse_rtp
    with play_movie(tmp_path, ts_file, packets=1, rtsp=f'server_ports = "{mode}"\n') as p:
        daemon, receiver, server_ports = p.daemon, p.receiver, p.server_ports
        block = rtcp.ReportBlock(ssrc=parse_rtp(receiver.packets[0][1])[0].ssrc,
                                 fraction_lost=128, cumulative_lost=7, highest_seq=1,
                                 jitter=90, lsr=0, dlsr=0)
        receiver.rtcp_sock.sendto(rtcp.build_receiver_report(1, (block,)),
                                  ("127.0.0.1", server_ports[1]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            info = json.loads(daemon.kvod("status", "--json").stdout)
            stream = info["sessions"][0]["streams"]["0"]
            if stream["cumulative_lost"]:
                break
            time.sleep(0.1)
        assert (stream["loss_fraction"], stream["cumulative_lost"], stream["jitter"]) == \
            (0.5, 7, 90)
        assert info["server_ports"]["mode"] == mode
        assert stream["shared"] is (mode == "shared")
        metrics = get(daemon, "/metrics")[1].decode()
        assert f'kvod_server_ports_info{{mode="{mode}"' in metrics


def test_admin_http_is_read_only(playing):
    daemon, _ = playing
    req = urllib.request.Request(f"http://127.0.0.1:{daemon.admin_port}/status", data=b"x",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/nothing", timeout=5)
    assert info.value.code == 404


def test_refused_kernel_feature_shows_as_fallback(tmp_path, ts_file):
    daemon = KvodDaemon(str(tmp_path), extra='[engine]\nstrategy = "gso"\n',
                        env={"KVOD_ENGINE_REFUSE": "udp_segment"})
    daemon.start()
    try:
        info = json.loads(daemon.kvod("status", "--json").stdout)
        assert info["engine"]["strategy"] == "sendmmsg"
        assert info["engine"]["requested_strategy"] == "gso"
        assert "UDP_SEGMENT" in info["engine"]["fallback"]
        assert "engine fallback:" in daemon.kvod("status").stdout
        assert "engine fallback:" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_status_without_a_daemon_fails_clearly(tmp_path):
    daemon = KvodDaemon(str(tmp_path))
    result = daemon.kvod("status", check=False)
    assert result.returncode == 1
    assert "not answering" in result.stderr


@pytest.mark.parametrize("listen,address", [
    ("tcp:8555:interface=127.0.0.1", ("127.0.0.1", 8555)),
    ("tcp:port=9000", ("127.0.0.1", 9000)),
    ("tcp6:8555:interface=\\:\\:1", ("::1", 8555)),
    ("tcp:8555:interface=0.0.0.0", ("127.0.0.1", 8555)),
])
def test_admin_address(listen, address):
    assert _admin_address(listen) == address


def test_metrics_have_no_per_session_labels_and_escape_values():
    status = {"uptime_s": 1.0, "engine": {"strategy": "gso", "requested_strategy": "auto",
                                          "fallback": 'we"ird\\why\n', "threads": 2},
              "sessions": [{"id": "SESSION1", "title": "a-title", "state": "playing",
                            "streams": {"0": {"packets_sent": 5}}}],
              "traffic": {"packets_sent": 7, "payload_octets": 9212}}
    cache = {"used_bytes": 10, "quota_bytes": 100, "hits": 3, "misses": 1, "fills": 1,
             "fill_errors": 0}
    metrics = DaemonMetrics(lambda: status, lambda: cache)
    metrics.answered("PLAY", 0.002)
    metrics.answered("BOGUS", 0.1)
    text = metrics.text().decode()
    assert 'fallback="we\\"ird\\\\why\\n"' in text
    assert "SESSION1" not in text and "a-title" not in text
    assert "kvod_sent_packets_total 7.0" in text
    assert "kvod_sent_payload_bytes_total 9212.0" in text
    assert 'kvod_sessions{state="playing"} 1.0' in text
    assert "kvod_cache_hits_total 3.0" in text and "kvod_fills 1.0" in text
    assert 'kvod_rtsp_request_seconds_bucket{le="0.005",method="PLAY"} 1.0' in text
    assert 'kvod_rtsp_request_seconds_count{method="other"} 1.0' in text


def test_status_shows_pacing(tmp_path, ts_file):
    """[engine] pacing = "kernel" reaches the engine: the stream is
    kernel-paced (here SO_TXTIME is taken and ignored), and kvod status
    says so; the default, auto, finds no fq on lo and paces in the engine."""
    for pacing, want, note in (("kernel", "kernel", None),
                               ("auto", "engine", "lo: root qdisc is noqueue, not fq")):
        (tmp_path / pacing).mkdir()
        with play_movie(tmp_path / pacing, ts_file,
                        extra=f'[engine]\npacing = "{pacing}"\n') as p:
            daemon = p.daemon
            info = json.loads(daemon.kvod("status", "--json").stdout)
            engine = info["engine"]
            assert engine["pacing"] == pacing
            assert engine["paced_streams"] == {want: 1, ({"kernel", "engine"} - {want}).pop(): 0}
            assert info["sessions"][0]["streams"]["0"]["pacing"] == want
            text = daemon.kvod("status").stdout
            assert f"{engine['paced_streams']['kernel']} stream(s) kernel-paced" in text
            assert text.rstrip().endswith(want)  # the stream's PACING column
            if note:
                assert any(note in n for n in engine["pacing_notes"])
                assert "pacing note: auto: no fq on the way" in text
