"""The real kvod daemon as a process, for integration tests."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
KVOD = [PYTHON, os.path.join(ROOT, "bin", "kvod")]


def free_tcp_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """A config folder, a catalog, and ``kvod serve`` running on loopback."""

    def __init__(self, folder: str, *, session_timeout: float = 60, extra: str = "",
                 env: dict | None = None, cache: str = "", rtsp: str = ""):
        """``extra`` is TOML added at the end; ``cache`` and ``rtsp`` more keys
        of ``[cache]`` and ``[rtsp]``."""
        self.folder = folder
        self.env = dict(os.environ, **(env or {}))
        self.port = free_tcp_port()
        self.admin_port = free_tcp_port()
        rtp_min = random.randrange(30000, 60000, 2)
        self.config = os.path.join(folder, "kvod.toml")
        with open(self.config, "w") as f:
            f.write(f'[rtsp]\nlisten = "tcp:{self.port}:interface=127.0.0.1"\n'
                    f"session_timeout = {session_timeout}\n"
                    f"rtp_port_min = {rtp_min}\nrtp_port_max = {rtp_min + 400}\n{rtsp}"
                    f'[cache]\ndir = "cache"\n{cache}[catalog]\npath = "catalog.db"\n'
                    f'[log]\nlevel = "debug"\n'
                    f'[admin]\nlisten = "tcp:{self.admin_port}:interface=127.0.0.1"\n{extra}')
        self.log_path = os.path.join(folder, "kvod.log")
        self.proc: subprocess.Popen | None = None

    def kvod(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a kvod CLI command against this daemon's config."""
        return subprocess.run(KVOD + ["--config", self.config, *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def add(self, path: str, name: str) -> None:
        """Add ``path`` as title ``name``."""
        self.kvod("catalog", "add", path, "--name", name)

    def start(self, timeout: float = 15) -> None:
        """Start ``kvod serve`` and wait until RTSP accepts connections."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(KVOD + ["--config", self.config, "serve"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvod serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"kvod serve did not listen within {timeout} s:\n{self.log()}")

    def url(self, name: str) -> str:
        """The RTSP URL of title ``name``."""
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        """Everything the daemon has logged."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the daemon dies wherever it is, as in a crash."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        self.proc = None

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"kvod serve ignored SIGTERM:\n{self.log()}")
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code
