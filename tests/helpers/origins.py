"""Origins for the proxy-cache tests, on loopback.

:class:`NginxOrigin` (from ``appliance.bench.nginx_origin``) is Debian's nginx
with a temporary config, serving a folder of titles.

:class:`FaultOrigin` is a small threaded HTTP server for the faults nginx
cannot make on demand: a body cut off halfway, a wrong Content-Range, 5xx,
a title that changes (new ETag and bytes) mid-fill, bytes that trickle.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socketserver
import threading
import time
from collections import defaultdict
from typing import Callable, Optional

from appliance.bench.nginx_origin import NginxOrigin  # noqa: F401 (the tests' origin)


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
