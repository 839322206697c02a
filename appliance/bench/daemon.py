"""``kvod serve`` as a child process on loopback, for the control-plane
benchmarks and the integration tests: one launcher, one config writer.

The daemon's output goes to a log file in its folder, so that a daemon
that fails to start says why in the error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from appliance.media.server_ports import ephemeral_floor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_tcp_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float) -> None:
    """Return once a TCP connection to loopback ``port`` is accepted
    (OSError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid``'s live threads have used so far.

    From each thread's ``schedstat`` (nanoseconds), not the process's
    ``stat`` (ticks of 10 ms): a benchmark of a few viewers over a second
    uses less than a tick. A thread running as it is read is counted up
    to the scheduler's last tick. Threads that ended meanwhile are not
    counted; the daemon's threads live as long as it does."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended between the listing and the read
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return total / 1e9


def rtp_port_config(pairs: int) -> str:
    """``[rtsp]`` lines giving the server RTP ports for ``pairs`` streams and
    a quarter more, below the kernel's ephemeral ports where they fit: a
    bench's clients bind thousands of ephemeral ports on the same machine,
    and each one inside the server's range costs the server a failed bind
    (about a thousand in a crowd of 1000 with the range inside it)."""
    need = 2 * (pairs + pairs // 4 + 16)
    low = ephemeral_floor()
    start = 20000 if 20000 + need < low else max(1024, low - 2 - need)
    start -= start % 2
    return f"rtp_port_min = {start}\nrtp_port_max = {min(65534, start + need)}\n"


def loopback_config(port: int, admin_port: int, *, log_level: str = "warning",
                    rtsp: str = "", sections: str = "",
                    admin_listen: str = "tcp:{port}:interface=127.0.0.1") -> str:
    """A config's TOML for a daemon on loopback: RTSP on ``port``, admin on
    ``admin_port`` (``admin_listen`` with ``{port}``), cache and catalog in
    the config's folder; ``rtsp`` more ``[rtsp]`` keys and ``sections``
    whole sections appended (``[cache]``'s own keys may follow it)."""
    return (f'[rtsp]\nlisten = "tcp:{port}:interface=127.0.0.1"\n{rtsp}'
            f'[log]\nlevel = "{log_level}"\n'
            f'[admin]\nlisten = "{admin_listen.format(port=admin_port)}"\n'
            # in the config's folder, never the system's /var/lib/kvod
            f'token_file = "admin.token"\n'
            f'[catalog]\npath = "catalog.db"\n'
            f'{sections}')


class ServeProcess:
    """``kvod --config CONFIG serve``, started and stopped on demand."""

    def __init__(self, config: str, port: int, log_path: str,
                 env: Optional[dict] = None, user: Optional[int] = None) -> None:
        """``user``: run the daemon as that uid (and its group), as the
        service runs as its own user."""
        self.config = config
        self.port = port
        self.log_path = log_path
        self.env = env
        self.user = user
        #: run in the child before the daemon starts (tests: resource limits)
        self.preexec = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def command(self, *args: str) -> list[str]:
        """The argv of a kvod command with this daemon's config."""
        return [sys.executable, "-m", "appliance", "--config", self.config, *args]

    def start(self, timeout: float = 15) -> None:
        """Start the daemon and return once RTSP accepts connections."""
        self._log = open(self.log_path, "ab")
        as_user = {} if self.user is None else dict(user=self.user, group=self.user,
                                                     extra_groups=[])
        self.proc = subprocess.Popen(self.command("serve"), cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=self.preexec, **as_user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvod serve exited with {self.proc.returncode}:\n"
                                   f"{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"kvod serve did not listen within {timeout} s:\n{self.log()}")

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
        self._close()

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, wait, and return the exit code; a daemon that ignores
        SIGTERM is killed and TimeoutError raised."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(f"kvod serve ignored SIGTERM:\n{self.log()}") from None
        code = self.proc.returncode
        self._close()
        return code

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
