"""A flash crowd against a real daemon (``kvod bench crowd``): ``sessions``
viewers arrive at once, ``concurrency`` of them being set up at a time,
and each plays until every one has had its first RTP packet.

Measured: the time from the first connect until every session had its
first packet (the target is 0.5 s for 1000 sessions, 100 at once), PLAY to
first packet under the crowd (p50, p99), failures (an answer other than
200, or no packet within the timeout), and the daemon's CPU per session
set up (its utime + stime over the crowd, from /proc).

The client is one process: ``concurrency`` threads speak RTSP, one thread
waits on every RTP socket with a selector and stamps first arrivals.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from appliance.bench.daemon import ServeProcess, free_tcp_port, loopback_config
from appliance.bench.rtsp_client import RtspClient, RtspClientError
from rtpengine.bench.stats import percentile


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """An even/odd UDP port pair on loopback."""
    while True:
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65534:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()


class _FirstPackets:
    """Stamps the first packet on each registered socket (one thread)."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}     # fileno -> monotonic ns
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self._lock:
            self._sel.register(sock, selectors.EVENT_READ)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sel.get_map():
                time.sleep(0.001)
                continue
            # epoll may be waited on while other threads register sockets
            ready = self._sel.select(0.005)
            now = time.monotonic_ns()
            for key, _ in ready:
                sock = key.fileobj
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
                with self._lock:
                    self.first.setdefault(sock.fileno(), now)
                    self._sel.unregister(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sel.close()


def run_crowd(media_path: str, sessions: int = 1000, concurrency: int = 100,
              timeout: float = 10.0, progress: Optional[Callable[[float], None]] = None,
              folder: Optional[str] = None) -> dict:
    """Set up ``sessions`` sessions, ``concurrency`` at a time, against a
    fresh daemon serving ``media_path``; times in milliseconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sessions * 4 + 256 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.TemporaryDirectory(prefix="kvod-crowd-", dir=folder)
    port, admin = free_tcp_port(), free_tcp_port()
    config = os.path.join(tmp.name, "kvod.toml")
    with open(config, "w") as f:
        f.write(loopback_config(
            port, admin,
            # the crowd comes from one address: its per-address limits are the crowd's size
            rtsp=(f"max_sessions = {sessions + 10}\nmax_connections = {sessions + 10}\n"
                  f"max_sessions_per_address = {sessions + 10}\n"
                  f"max_connections_per_address = {sessions + 10}\n"
                  "rtp_port_min = 30000\nrtp_port_max = 59998\nsession_timeout = 120\n"),
            sections='[cache]\ndir = "cache"\n'))
    serve = ServeProcess(config, port, os.path.join(tmp.name, "kvod.log"))
    subprocess.run(serve.command("catalog", "add", media_path, "--name", "crowd"),
                   check=True, capture_output=True, timeout=300)
    serve.start()
    firsts = _FirstPackets()
    clients: list[RtspClient] = []
    sockets: list[socket.socket] = []
    plays: dict[int, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    done = [0]

    def one(i: int) -> None:
        rtp, rtcp = _udp_pair()
        try:
            client = RtspClient("127.0.0.1", port, timeout=timeout)
        except OSError as exc:
            with lock:
                failures.append(f"connect: {exc}")
            rtp.close()
            rtcp.close()
            return
        with lock:
            clients.append(client)
            sockets.extend((rtp, rtcp))
        firsts.add(rtp)
        try:
            url = client.url("crowd")
            if client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status != 200:
                raise RtspClientError("DESCRIBE failed")
            session, _, _ = client.setup_udp(url + "/trackID=0",
                                             (rtp.getsockname()[1], rtcp.getsockname()[1]))
            t_play = time.monotonic_ns()
            status = client.request("PLAY", url + "/", [("Session", session),
                                                        ("Range", "npt=0-")]).status
            if status != 200:
                raise RtspClientError(f"PLAY answered {status}")
            with lock:
                plays[rtp.fileno()] = t_play
        except (RtspClientError, OSError) as exc:
            with lock:
                failures.append(str(exc))
        with lock:
            done[0] += 1
            if progress:
                progress(done[0] / sessions * 0.9)

    cpu_before = cpu_seconds(serve.proc.pid)
    started = time.monotonic_ns()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(sessions)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                missing = [fd for fd in plays if fd not in firsts.first]
            if not missing:
                break
            time.sleep(0.005)
        cpu = cpu_seconds(serve.proc.pid) - cpu_before
        got = {fd: firsts.first[fd] for fd in plays if fd in firsts.first}
        no_packet = len(plays) - len(got)
        latency = [(got[fd] - plays[fd]) / 1e6 for fd in got]
        all_first = (max(got.values()) - started) / 1e6 if got else None
    finally:
        firsts.close()
        for client in clients:
            client.close()
        for sock in sockets:
            sock.close()
        try:
            serve.stop(30)
        except TimeoutError:
            pass
        tmp.cleanup()
    if progress:
        progress(1.0)
    return {
        "sessions": sessions, "concurrency": concurrency,
        "all_first_packet_ms": round(all_first, 1) if all_first is not None else None,
        "play_to_first_rtp_ms": {"p50": round(percentile(latency, 0.5), 3),
                                 "p99": round(percentile(latency, 0.99), 3)},
        "failures": len(failures) + no_packet,
        "failure_examples": sorted(set(failures))[:5]
        + ([f"{no_packet} session(s) without a packet in {timeout:g} s"] if no_packet else []),
        "server_cpu_ms_per_session": round(cpu * 1000 / max(len(plays), 1), 3),
    }
