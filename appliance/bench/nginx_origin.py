"""A local nginx origin (Debian's nginx-light) for benchmarks and tests.

Runs on loopback with a temporary config in its own folder (no root-owned
path is touched), serving a folder of titles under ``/media/``; its access
log says what each request carried, so callers count the bytes the origin
really sent. ``limit_rate`` makes it a slow origin.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from typing import Optional

from appliance.bench.daemon import free_tcp_port


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_LOG_LINE = re.compile(r'(\S+) (\d+) (\d+) "([^"]*)" "([^"]*)" (\d+)')


class NginxOrigin:
    """nginx serving ``root`` at ``http://127.0.0.1:PORT/media/``."""

    def __init__(self, folder: str, root: str, *, limit_rate: Optional[str] = None,
                 limit_rate_after: Optional[str] = None) -> None:
        self.folder = folder
        self.root = root
        self.port = free_tcp_port()
        os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
        self.access_log = os.path.join(folder, "access.log")
        rate = f"limit_rate {limit_rate};" if limit_rate else ""
        if limit_rate_after:
            rate += f" limit_rate_after {limit_rate_after};"
        # as root, nginx's workers would drop to 'nobody', who cannot read a
        # private temporary folder; the test's own user serves its own files
        user = "user root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    log_format kvod '$uri $status $body_bytes_sent "$http_range" "$http_if_range" $connection';
    access_log {self.access_log} kvod;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    sendfile on;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{self.port};
        location /media/ {{ alias {root}/; {rate} }}
    }}
}}
"""
        self.conf = os.path.join(folder, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            [NGINX, "-p", folder, "-e", os.path.join(folder, "error.log"), "-c", self.conf,
             "-g", f"daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_listening(self.port, self.proc, "nginx")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/media/"

    def requests(self) -> list[tuple[str, int, int, str, str]]:
        """(path, status, body bytes, Range, If-Range) of every request so far."""
        return [(m[1], int(m[2]), int(m[3]), m[4], m[5]) for m in self._log()]

    def connections(self) -> list[tuple[str, int]]:
        """(Range, nginx's connection number) of every request so far: a
        connection's requests share its number."""
        return [(m[4], int(m[6])) for m in self._log()]

    def _log(self) -> list[re.Match]:
        with open(self.access_log) as f:
            return [m for m in map(_LOG_LINE.fullmatch, f.read().splitlines()) if m]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``/media/PATH``."""
        return sum(n for p, _, n, _, _ in self.requests() if p == "/media/" + path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}")
