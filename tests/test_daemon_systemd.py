"""The daemon as systemd sees it, with a notify socket of the test's own
(no systemd needed): READY=1 once RTSP answers, STATUS= lines with live
figures, WATCHDOG=1 while streams play, STOPPING=1 and then BYE to every
viewer; and SIGHUP reloads the config without dropping a stream."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.rtp import parse_rtp
from tests.helpers.daemon import KvodDaemon, play_movie
from tests.helpers.players import assert_contiguous

pytestmark = pytest.mark.integration


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, prefix: str, timeout: float = 15.0) -> str:
        """The next message with a line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536).decode()
            except socket.timeout:
                break
            self.messages.append((time.monotonic(), data))
            for line in data.splitlines():
                if line.startswith(prefix):
                    return line
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_ready_status_watchdog_stopping_then_bye(tmp_path, ts_file, notify):
    d = KvodDaemon(str(tmp_path), env={"NOTIFY_SOCKET": notify.path,
                                       "WATCHDOG_USEC": "1000000"})
    d.add(ts_file, "movie")
    starting = threading.Thread(target=d.start)
    starting.start()
    try:
        notify.wait_for("READY=1")
        # READY came after listening: RTSP answers at once
        with socket.create_connection(("127.0.0.1", d.port), timeout=1):
            pass
        starting.join(15)
        assert notify.wait_for("STATUS=").startswith("STATUS=0 sessions (0 playing)")
        receiver = RtpReceiver()
        client = RtspClient("127.0.0.1", d.port)
        url = client.url("movie")
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
        assert receiver.wait_for(50, timeout=10)
        # the watchdog is fed every half second while the stream plays
        pings = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and pings < 3:
            notify.wait_for("WATCHDOG=1", timeout=3)
            pings += 1
        assert pings == 3
        status = notify.wait_for("STATUS=1 sessions (1 playing)", timeout=10)
        assert "Mb/s out" in status and "engine gso" in status
        rate = float(status.split("playing), ")[1].split(" Mb/s")[0])
        assert 0.3 < rate < 5.0, status   # the 10 s title's ~1 Mb/s
        d.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", timeout=5)
        assert d.proc.wait(10) == 0
        deadline = time.monotonic() + 2
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.got_bye(), "no RTCP BYE when the daemon stopped"
        client.close()
        receiver.close()
    finally:
        starting.join(15)
        d.stop()
    assert "Traceback" not in d.log()


def _write_config(d: KvodDaemon, replace: dict[str, str]) -> None:
    with open(d.config) as f:
        text = f.read()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    with open(d.config, "w") as f:
        f.write(text)


def _quota(d: KvodDaemon) -> int:
    # from the daemon itself: the CLI would read the config file, which the
    # test makes bad on purpose
    with urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/cache", timeout=5) as r:
        return json.load(r)["quota_bytes"]


def test_sighup_applies_runtime_keys_without_a_gap_and_refuses_a_bad_config(tmp_path,
                                                                            ts_file):
    with play_movie(tmp_path, ts_file, cache="max_bytes = \"1GiB\"\n") as p:
        d, receiver = p.daemon, p.receiver
        assert _quota(d) == 1 << 30
        _write_config(d, {'max_bytes = "1GiB"': 'max_bytes = "2GiB"',
                          'level = "debug"': 'level = "info"',
                          "tcp:%d:interface=127.0.0.1" % d.port:
                          "tcp:%d:interface=127.0.0.1" % (d.port + 1)})
        before = len(receiver.packets)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _quota(d) != 2 << 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _quota(d) == 2 << 30
        log = d.log()
        assert "reload: cache.max_bytes is now 2147483648" in log
        assert "reload: rtsp.listen changed" in log and "after a restart" in log
        # a config that does not load is refused, naming the key; all stays
        _write_config(d, {'max_bytes = "2GiB"': 'max_bytes = "lots"'})
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload refused" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "reload refused, the running config stays: cache.max_bytes" in d.log()
        assert _quota(d) == 2 << 30
        # the stream went on through both, without a sequence gap
        assert receiver.wait_for(before + 100, timeout=10)
        seqs = [parse_rtp(packet)[0].seq for _, packet in receiver.packets]
        assert_contiguous(seqs)
        assert d.proc.poll() is None
        assert "Traceback" not in d.log()
