"""Origins for the proxy-cache tests, on loopback.

:class:`NginxOrigin` is Debian's nginx with a temporary config (no
root-owned path is touched), serving a folder of titles under ``/media/``;
its access log says what each request carried, so tests count the bytes
the origin really sent. ``limit_rate`` makes it a slow origin.

:class:`FaultOrigin` is a small threaded HTTP server for the faults nginx
cannot make on demand: a body cut off halfway, a wrong Content-Range, 5xx,
a title that changes (new ETag and bytes) mid-fill, bytes that trickle.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import socketserver
import subprocess
import threading
import time
from collections import defaultdict
from typing import Callable, Optional

from tests.kvod_daemon import free_tcp_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_LOG_LINE = re.compile(r'(\S+) (\d+) (\d+) "([^"]*)" "([^"]*)"')


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
    log_format kvod '$uri $status $body_bytes_sent "$http_range" "$http_if_range"';
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
        with open(self.access_log) as f:
            return [(m[1], int(m[2]), int(m[3]), m[4], m[5])
                    for m in map(_LOG_LINE.fullmatch, f.read().splitlines()) if m]

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
    import socket
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


class FaultOrigin:
    """A threaded HTTP/1.1 origin whose answers a test can break.

    ``titles`` maps a path to its bytes; ``fault(path, start, end, count)``
    (the ``count``-th request for the path) returns None for a correct
    answer or one of: ``("status", code)``, ``("cut", nbytes)`` (close after
    that many body bytes), ``("content_range", text)``, ``("slow", bytes_per_s)``,
    ``("hang", seconds)``. ``change(path, data)`` swaps in a new version
    (new bytes, new ETag)."""

    def __init__(self, titles: dict[str, bytes],
                 fault: Callable[[str, int, int, int], Optional[tuple]] = lambda *a: None):
        self.titles = dict(titles)
        self.etags = {p: self._etag(d) for p, d in titles.items()}
        self.fault = fault
        self.count: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)
        self.log: list[tuple[str, str, str, int]] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (stdlib API)
                origin._serve(self)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _etag(data: bytes) -> str:
        return '"' + hashlib.sha1(data).hexdigest()[:16] + '"'

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/media/"

    def change(self, path: str, data: bytes) -> None:
        with self.lock:
            self.titles[path] = data
            self.etags[path] = self._etag(data)

    def _serve(self, h) -> None:
        path = h.path[len("/media/"):] if h.path.startswith("/media/") else None
        with self.lock:
            data = self.titles.get(path) if path is not None else None
            etag = self.etags.get(path)
            if path is not None:
                self.count[path] += 1
            count = self.count[path] if path is not None else 0
        rng = h.headers.get("Range", "")
        if_range = h.headers.get("If-Range")
        self.log.append((path or h.path, rng, if_range or "", count))
        if data is None:
            return self._reply(h, 404, b"not found")
        size = len(data)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
        start, end = 0, size
        ranged = bool(m) and (if_range is None or if_range == etag)
        if ranged:
            if m[1]:
                start = int(m[1])
                end = min(int(m[2]) + 1, size) if m[2] else size
            else:
                start, end = max(size - int(m[2]), 0), size
        fault = self.fault(path, start, end, count)
        if fault and fault[0] == "status":
            return self._reply(h, fault[1], b"fault")
        if fault and fault[0] == "hang":
            time.sleep(fault[1])
            return
        h.send_response(206 if ranged else 200)
        h.send_header("ETag", etag)
        h.send_header("Content-Length", str(end - start))
        if ranged:
            content_range = f"bytes {start}-{end - 1}/{size}"
            if fault and fault[0] == "content_range":
                content_range = fault[1]
            h.send_header("Content-Range", content_range)
        h.end_headers()
        body = data[start:end]
        if fault and fault[0] == "cut":
            body = body[:fault[1]]
        try:
            if fault and fault[0] == "slow":
                step = max(fault[1] // 20, 188)
                for i in range(0, len(body), step):
                    h.wfile.write(body[i:i + step])
                    h.wfile.flush()
                    self._count(path, len(body[i:i + step]))
                    time.sleep(step / fault[1])
            else:
                h.wfile.write(body)
                self._count(path, len(body))
        except OSError:
            return
        if fault and fault[0] == "cut":
            h.close_connection = True
            h.wfile.flush()
            h.connection.shutdown(2)

    def _count(self, path: str, n: int) -> None:
        with self.lock:
            self.sent[path] += n

    @staticmethod
    def _reply(h, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
