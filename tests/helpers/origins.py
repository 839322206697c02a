"""Origins for the proxy-cache tests, on loopback.

:class:`NginxOrigin` (from ``appliance.bench.nginx_origin``) is Debian's nginx
with a temporary config, serving a folder of titles.

:class:`FaultOrigin` is a small threaded HTTP server for the faults nginx
cannot make on demand: a body cut off halfway, a wrong Content-Range, 5xx,
a title that changes (new ETag and bytes) mid-fill, bytes that trickle,
Range or If-Range ignored, an ETag that changes on every answer.

:class:`PlainOrigin` is Python's own ``http.server`` serving a folder: no
Range support at all, as a newcomer's first origin.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pathlib
import re
import socketserver
import threading
import time
from collections import defaultdict
from typing import Callable, Optional

from appliance.bench.nginx_origin import NginxOrigin  # noqa: F401 (the tests' origin)


def nginx_folder(folder, limit_rate: Optional[str] = None) -> NginxOrigin:
    """Debian's nginx serving ``folder``/root (made here, and kept as the
    origin's ``root_path``); ``limit_rate`` per request (nginx's syntax,
    e.g. "60k") makes a fill run for seconds."""
    root = pathlib.Path(folder) / "root"
    root.mkdir(parents=True, exist_ok=True)
    nginx = NginxOrigin(str(folder), str(root), limit_rate=limit_rate)
    nginx.root_path = root
    return nginx


def publish(origin: NginxOrigin, name: str, source: str) -> str:
    """Make ``name`` a title of ``origin`` (one of :func:`nginx_folder`)
    with the bytes of ``source``."""
    path = origin.root_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.symlink(source, path)
    return name


class FaultOrigin:
    """A threaded HTTP/1.1 origin whose answers a test can break.

    ``titles`` maps a path to its bytes; ``fault(path, start, end, count)``
    (the ``count``-th request for the path) returns None for a correct
    answer or one of: ``("status", code)``, ``("cut", nbytes)`` (close after
    that many body bytes), ``("content_range", text)``, ``("slow", bytes_per_s)``,
    ``("hang", seconds)``, ``("whole",)`` (200 with the whole title, Range
    ignored), ``("trickle", seconds, headers_too)`` (one byte, then wait: the
    body, and the headers too if ``headers_too``), ``("redirect", location)`` (302), ``("header", nbytes)`` (a header
    line that long), ``("length", extra)`` (a Content-Length ``extra`` bytes
    longer than the body sent), ``("chunked",)`` (the body in chunked coding,
no Content-Length). ``change(path, data)`` swaps in a new
    version (new bytes, new ETag). ``ignore_if_range``: any If-Range gets 200
    and the whole title; ``etag_per_request``: every answer has a new ETag
    (backends that disagree); ``last_modified``: a Last-Modified header that
    never changes. ``most_at_once()`` says how many requests or titles were answered at once."""

    def __init__(self, titles: dict[str, bytes],
                 fault: Callable[[str, int, int, int], Optional[tuple]] = lambda *a: None,
                 *, ignore_if_range: bool = False, etag_per_request: bool = False,
                 last_modified: Optional[str] = None):
        self.titles = dict(titles)
        self.etags = {p: self._etag(d) for p, d in titles.items()}
        self.fault = fault
        self.ignore_if_range = ignore_if_range
        self.etag_per_request = etag_per_request
        self.last_modified = last_modified
        self.count: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)
        self.log: list[tuple[str, str, str, int]] = []
        self.lock = threading.Lock()
        self.spans: list[tuple[str, float, float]] = []   # (path, start, end) per request
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (stdlib API)
                started = time.monotonic()
                try:
                    origin._serve(self)
                finally:
                    with origin.lock:
                        origin.spans.append((self.path, started, time.monotonic()))

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

    def most_at_once(self, *, titles: bool = False, slack: float = 0.05) -> int:
        """The most requests (``titles``: the most titles, from the start of
        a title's first request to the end of its last) answered at once.
        ``slack`` seconds of an answer's end do not count: the client has
        every byte before this server's thread notes that it is done."""
        with self.lock:
            spans = list(self.spans)
        if titles:
            by_path: dict[str, tuple[float, float]] = {}
            for path, start, end in spans:
                first, last = by_path.get(path, (start, end))
                by_path[path] = (min(first, start), max(last, end))
            spans = [(p, s, e) for p, (s, e) in by_path.items()]
        events = sorted([(s, 1) for _, s, e in spans] +
                        [(max(s, e - slack), -1) for _, s, e in spans])
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most

    def requests(self, path: str) -> int:
        """How many requests asked for ``path`` so far."""
        with self.lock:
            return self.count[path]

    def _serve(self, h) -> None:
        path = h.path[len("/media/"):] if h.path.startswith("/media/") else None
        with self.lock:
            data = self.titles.get(path) if path is not None else None
            if path is not None:
                self.count[path] += 1
                if self.etag_per_request and data is not None:
                    self.etags[path] = f'"{self.count[path]}-{self._etag(data)[1:-1]}"'
            etag = self.etags.get(path)
            count = self.count[path] if path is not None else 0
        rng = h.headers.get("Range", "")
        if_range = h.headers.get("If-Range")
        self.log.append((path or h.path, rng, if_range or "", count))
        if data is None:
            return self._reply(h, 404, b"not found")
        size = len(data)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
        start, end = 0, size
        ranged = bool(m) and (if_range is None or if_range == etag
                              or if_range == self.last_modified)
        if if_range is not None and self.ignore_if_range:
            ranged = False
        if ranged:
            if m[1]:
                start = int(m[1])
                end = min(int(m[2]) + 1, size) if m[2] else size
            else:
                start, end = max(size - int(m[2]), 0), size
        fault = self.fault(path, start, end, count)
        if fault and fault[0] == "whole":
            ranged, start, end = False, 0, size
        if fault and fault[0] == "status":
            return self._reply(h, fault[1], b"fault")
        if fault and fault[0] == "hang":
            time.sleep(fault[1])
            return
        if fault and fault[0] == "redirect":
            h.send_response(302)
            h.send_header("Location", fault[1])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault and fault[0] == "trickle":
            return self._trickle(h, data[start:end], fault[1], fault[2])
        h.send_response(206 if ranged else 200)
        h.send_header("ETag", etag)
        if self.last_modified:
            h.send_header("Last-Modified", self.last_modified)
        if fault and fault[0] == "header":
            h.send_header("X-Padding", "x" * fault[1])
        chunked = bool(fault) and fault[0] == "chunked"
        extra = fault[1] if fault and fault[0] == "length" else 0
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(end - start + extra))
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
            elif chunked:
                step = 1 << 16
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    h.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    self._count(path, len(piece))
                h.wfile.write(b"0\r\n\r\n")
            else:
                h.wfile.write(body)
                self._count(path, len(body))
        except OSError:
            return
        if fault and fault[0] in ("cut", "length"):
            h.close_connection = True
            h.wfile.flush()
            h.connection.shutdown(2)

    def _trickle(self, h, body: bytes, pause: float, head_too: bool) -> None:
        """The body (and with ``head_too`` the status line and headers) one
        byte at a time, ``pause`` seconds apart; at most 4096 such bytes."""
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        h.close_connection = True
        try:
            if not head_too:
                h.wfile.write(head)
                h.wfile.flush()
            stream = (head if head_too else b"") + body
            for i in range(min(len(stream), 4096)):
                h.wfile.write(stream[i:i + 1])
                h.wfile.flush()
                time.sleep(pause)
        except OSError:
            return

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


class PlainOrigin:
    """Python's ``http.server`` serving ``folder`` under ``/media/``: 200 and
    the whole file for every GET (no Range, no ETag; Last-Modified)."""

    def __init__(self, folder: str, on_request=lambda path, count: None):
        """``on_request(path, count)`` runs before the ``count``-th request
        is answered (to change a file between two requests)."""
        self.folder = folder
        self.requests: list[str] = []
        origin = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def translate_path(self, path: str) -> str:
                origin.requests.append(path)
                on_request(path, len(origin.requests))
                if path.startswith("/media/"):
                    path = path[len("/media"):]
                return super().translate_path(path)

            def copyfile(self, source, outputfile) -> None:
                try:
                    super().copyfile(source, outputfile)
                except OSError:  # the client hung up: not this test's business
                    pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/media/"

    def publish(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.folder, name), "wb") as f:
            f.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
