"""The real kvod daemon as a process, for integration tests."""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from appliance.bench.daemon import (ROOT, ServeProcess, free_tcp_port, loopback_config,
                                    wait_listening)
from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from appliance.media.server_ports import ephemeral_floor

PYTHON = "/usr/bin/python3"
KVOD = [PYTHON, os.path.join(ROOT, "bin", "kvod")]

__all__ = ["KVOD", "KvodDaemon", "Playing", "ROOT", "free_tcp_port", "free_udp_pair",
           "play_movie", "tracebacks", "wait_listening"]


def tracebacks(log: str) -> list[str]:
    """The Python tracebacks in a daemon's log, each with the line before it
    (what logged it) and its last lines (what it was): an origin, a file or a
    client may make kvod log an error, never a traceback."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)") or \
                "Unhandled error in Deferred" in line:
            found.append("\n".join(lines[max(i - 1, 0):i + 25]))
    return found


def _udp_free(family: int, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError as exc:
        return exc.errno == errno.EAFNOSUPPORT  # no IPv6 here: nothing to collide with
    return True


def free_udp_pair() -> int:
    """An even port whose pair is free on the IPv4 and IPv6 wildcards now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port % 2 or port >= 65534:
            continue
        if all(_udp_free(family, port + i) for family in (socket.AF_INET, socket.AF_INET6)
               for i in (0, 1)):
            return port
    raise OSError("no free UDP port pair")


class KvodDaemon:
    """A config folder, a catalog, and ``kvod serve`` running on loopback.

    ``KvodDaemon.started`` lists every daemon started, so a test module can
    scan their logs after each test (:func:`tracebacks`)."""

    started: list["KvodDaemon"] = []

    def __init__(self, folder: str, *, session_timeout: float = 60, extra: str = "",
                 env: dict | None = None, cache: str = "", rtsp: str = "",
                 admin_listen: str = "tcp:{port}:interface=127.0.0.1", http: bool = False,
                 http_keys: str = ""):
        """``extra`` is TOML added at the end; ``cache`` and ``rtsp`` more keys
        of ``[cache]`` and ``[rtsp]``; ``admin_listen`` the admin endpoint, with
        ``{port}`` for a free port; ``http``: listen for HTTP on ``http_port`` (``http_keys``
        more keys of ``[http]``)."""
        self.folder = folder
        self.port = free_tcp_port()
        self.admin_port = free_tcp_port()
        self.http_port = free_tcp_port() if http else None
        if http:
            extra += f'\n[http]\nlisten = "tcp:{self.http_port}:interface=127.0.0.1"\n{http_keys}'

        # below the kernel's ephemeral ports, where the tests' clients bind theirs
        low = ephemeral_floor()
        rtp_min = random.randrange(10000, max(10002, low - 402), 2)
        self.config = os.path.join(folder, "kvod.toml")
        with open(self.config, "w") as f:
            f.write(loopback_config(
                self.port, self.admin_port, log_level="debug", admin_listen=admin_listen,
                rtsp=f"session_timeout = {session_timeout}\n"
                     f"rtp_port_min = {rtp_min}\nrtp_port_max = {rtp_min + 400}\n{rtsp}",
                sections=f'[cache]\ndir = "cache"\n{cache}{extra}'))
        self.log_path = os.path.join(folder, "kvod.log")
        self.serve = ServeProcess(self.config, self.port, self.log_path,
                                  env=dict(os.environ, **(env or {})))

    @property
    def proc(self) -> subprocess.Popen | None:
        """The running ``kvod serve``, if any."""
        return self.serve.proc

    def kvod(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a kvod CLI command against this daemon's config."""
        return subprocess.run(KVOD + ["--config", self.config, *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def add(self, path: str, name: str) -> None:
        """Add ``path`` as title ``name``."""
        self.kvod("catalog", "add", path, "--name", name)

    def title_info(self, name: str) -> dict:
        """``kvod catalog show NAME --json``: the title as the catalog has it."""
        return json.loads(self.kvod("catalog", "show", name, "--json").stdout)

    def wait_complete(self, name: str, timeout: float = 30) -> dict:
        """The title's info once its state is complete (a proxied title's
        fill ended); AssertionError, with the log's tail, after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.title_info(name)
            if info["state"] == "complete":
                return info
            time.sleep(0.1)
        raise AssertionError(f"{name} did not complete: {self.title_info(name)}\n"
                             f"{self.log()[-3000:]}")

    def start(self, timeout: float = 15) -> None:
        """Start ``kvod serve`` and wait until RTSP accepts connections."""
        KvodDaemon.started.append(self)
        self.serve.start(timeout)
        if self.http_port is not None:
            wait_listening(self.http_port, timeout)

    def http_url(self, name: str) -> str:
        """The HTTP download URL of title ``name``."""
        return f"http://127.0.0.1:{self.http_port}/titles/{name}"

    def url(self, name: str) -> str:
        """The RTSP URL of title ``name``."""
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        """Everything the daemon has logged."""
        return self.serve.log()

    def kill(self) -> None:
        """SIGKILL: the daemon dies wherever it is, as in a crash."""
        self.serve.kill()

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it hangs)."""
        try:
            return self.serve.stop(timeout)
        except TimeoutError as exc:
            raise RuntimeError(str(exc)) from None


def serving(daemon: KvodDaemon, titles: dict[str, str]) -> Iterator[KvodDaemon]:
    """``daemon`` with ``titles`` (name -> media path) added, started, for a
    fixture to ``yield from``; it must stop cleanly after."""
    for name, path in titles.items():
        daemon.add(path, name)
    daemon.start()
    yield daemon
    assert daemon.stop() == 0, daemon.log()


@dataclass
class Playing:
    """A daemon with one session playing "movie" to a receiver."""

    daemon: KvodDaemon
    client: RtspClient
    receiver: RtpReceiver
    session: str
    server_ports: tuple


@contextmanager
def play_movie(folder, ts_file: str, packets: int = 20, **daemon_kw) -> Iterator[Playing]:
    """Start a daemon (``daemon_kw`` to KvodDaemon), add and play the
    title until ``packets`` have come; stop everything after."""
    daemon = KvodDaemon(str(folder), **daemon_kw)
    daemon.add(ts_file, "movie")
    daemon.start()
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("movie")
        session, server_ports, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
        assert receiver.wait_for(packets)
        yield Playing(daemon, client, receiver, session, server_ports)
    finally:
        client.close()
        receiver.close()
        assert daemon.stop() == 0
