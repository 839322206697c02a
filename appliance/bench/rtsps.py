"""What RTSPS costs (``kvod bench rtsps``): the daemon's CPU per
stream-second for viewers of RTP interleaved on TLS connections, against the
same viewers on plain RTSP/TCP, alternated in one run against one daemon.

Over TLS the engine writes its frames into a socket pair and the reactor
encrypts them (``appliance.media.tls_relay``); over TCP the engine writes the
connection itself. The viewers are threads of this process that set up one
interleaved stream each and read what comes; the daemon's CPU is its
utime + stime from /proc over the measured seconds.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Callable, Optional

from appliance.bench.daemon import (ServeProcess, cpu_seconds, free_tcp_port, loopback_config,
                                    wait_listening)


def self_signed(folder: str, name: str = "127.0.0.1") -> tuple[str, str]:
    """(key, certificate) PEM files in ``folder`` for ``name``, made by
    openssl, valid a day (the bench's RTSPS listener; tests use it too)."""
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


class _Viewer(threading.Thread):
    """One interleaved stream of title ``t``, read until told to stop."""

    def __init__(self, port: int, tls: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.tls = port, tls
        self.stop = threading.Event()
        self.received = 0
        self.error: Optional[str] = None

    def _request(self, sock, text: str) -> str:
        sock.sendall(text.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise OSError("connection closed")
            head += data
        return head.decode(errors="replace")

    def run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            if self.tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock)
            url = f"{'rtsps' if self.tls else 'rtsp'}://127.0.0.1:{self.port}/t"
            answer = self._request(sock, f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
                                         "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
            session = re.search(r"Session: ([^;\r]+)", answer).group(1)
            sock.sendall(f"PLAY {url}/ RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n"
                         .encode())
            while not self.stop.is_set():
                data = sock.recv(1 << 20)
                if not data:
                    break
                self.received += len(data)
            sock.close()
        except (OSError, AttributeError) as exc:
            self.error = str(exc)


def run_rtsps(media_path: str, viewers: int = 20, seconds: float = 10.0, rounds: int = 2,
              progress: Optional[Callable[[float], None]] = None) -> dict:
    """``rounds`` of plain RTSP/TCP and RTSPS, ``viewers`` streams each for
    ``seconds``; daemon CPU ms per stream-second, medians and their ratio."""
    with tempfile.TemporaryDirectory(prefix="kvod-bench-rtsps-") as tmp:
        key, cert = self_signed(tmp)
        port, tls_port = free_tcp_port(), free_tcp_port()
        config = os.path.join(tmp, "kvod.toml")
        with open(config, "w") as f:
            f.write(loopback_config(
                port, free_tcp_port(),
                rtsp=f'tls_listen = "ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:'
                     f'certKey={cert}"\n', sections='[cache]\ndir = "cache"\n'))
        serve = ServeProcess(config, port, os.path.join(tmp, "kvod.log"))
        subprocess.run(serve.command("catalog", "add", media_path, "--name", "t"),
                       check=True, capture_output=True, timeout=300)
        serve.start()
        wait_listening(tls_port, 15)
        figures: dict[str, list[float]] = {"tcp": [], "tls": []}
        rates: dict[str, list[float]] = {"tcp": [], "tls": []}
        errors: list[str] = []
        try:
            steps = [(kind, r) for r in range(rounds) for kind in ("tcp", "tls")]
            for i, (kind, _) in enumerate(steps):
                group = [_Viewer(tls_port if kind == "tls" else port, kind == "tls")
                         for _ in range(viewers)]
                for v in group:
                    v.start()
                time.sleep(1.0)                 # set up and past the first burst
                before = sum(v.received for v in group)
                cpu0, t0 = cpu_seconds(serve.proc.pid), time.monotonic()
                time.sleep(seconds)
                cpu1, t1 = cpu_seconds(serve.proc.pid), time.monotonic()
                got = sum(v.received for v in group) - before
                for v in group:
                    v.stop.set()
                for v in group:
                    v.join(5)
                errors += [v.error for v in group if v.error]
                figures[kind].append((cpu1 - cpu0) * 1e3 / (viewers * (t1 - t0)))
                rates[kind].append(got * 8 / 1e6 / (t1 - t0) / viewers)
                if progress:
                    progress((i + 1) / len(steps))
                time.sleep(1.0)                 # the sessions close
        finally:
            try:
                serve.stop()
            except TimeoutError:
                pass
    tcp, tls = statistics.median(figures["tcp"]), statistics.median(figures["tls"])
    return {"viewers": viewers, "seconds": seconds, "rounds": rounds,
            "tcp_cpu_ms_per_stream_s": round(tcp, 3), "rtsps_cpu_ms_per_stream_s": round(tls, 3),
            "rtsps_to_tcp": round(tls / tcp, 2) if tcp else None,
            "tcp_mbit_per_viewer": round(statistics.median(rates["tcp"]), 2),
            "rtsps_mbit_per_viewer": round(statistics.median(rates["tls"]), 2),
            "each": figures, "errors": sorted(set(errors))[:5]}
