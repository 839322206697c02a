"""``GET``/``HEAD /titles/<name>``: a cached title's bytes over HTTP.

Ranges (one, or several as ``multipart/byteranges``), ``ETag``,
``Last-Modified``, ``If-Range``, ``If-None-Match``, ``If-Modified-Since``,
``If-Match`` and ``If-Unmodified-Since``, by the pure rules of
``appliance.http.ranges`` and ``appliance.http.conditional``. The body goes
out through :class:`SendfileBody`. A title that is not cached yet is made
servable the way DESCRIBE does it (``ProxyCache.prepare``: probe, enter as
``partial``, fill), and its bytes are sent as the fill brings them; a kvod
whose ``[origin] base_url`` is ``http://parent:8080/titles/`` fetches its
titles here.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import Counter
from typing import Optional

from twisted.internet.defer import Deferred
from twisted.web import resource, server

from appliance.cache.origin import OriginError
from appliance.http.conditional import Conditions, evaluate, http_date, title_etag
from appliance.http.ranges import (FilePart, Piece, Unsatisfiable, content_range,
                                   multipart_body, parse_range, piece_length, slice_pieces)
from appliance.http.sendfile_body import ReadBody, SendfileBody, can_sendfile
from catalog import InvalidTitleName, validate_title_name
from catalog.byte_ranges import end_from, normalize

log = logging.getLogger(__name__)

CONTENT_TYPES = {"mpegts": "video/mp2t", "mp4": "video/mp4"}


def content_type(container: str) -> str:
    """The media type of a title's container."""
    return CONTENT_TYPES.get(container, "application/octet-stream")


class FillSource:
    """The bytes of a title while its fill runs: what the fill holds, of
    the version the answer's headers named (a title that changes at the
    origin starts its fill over: its new bytes must not follow the old)."""

    def __init__(self, fill, owner: object) -> None:
        self.fill = fill
        self.owner = owner
        self.validator = fill.validator

    def available(self, pos: int) -> int:
        if self.fill.validator != self.validator:
            return pos
        return end_from(self.fill.held, pos)

    def broken(self) -> Optional[str]:
        if self.fill.validator != self.validator:
            return "the title changed at the origin"
        if self.fill.error is not None:
            return f"the fill stopped: {self.fill.error}"
        if self.fill.stopped:
            return "the fill stopped"
        return None

    def want(self, pos: Optional[int]) -> None:
        # the fill fetches what a waiting download needs next first
        self.fill.want(self.owner, pos)


class StaticSource:
    """The bytes of a title no fill is changing: complete, or what the
    catalog records of a partial one."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = normalize(ranges)

    def available(self, pos: int) -> int:
        return end_from(self.ranges, pos)

    def broken(self) -> Optional[str]:
        return "those bytes are not cached and no fill is running"

    def want(self, pos: Optional[int]) -> None:
        pass


class TitleDownloads(resource.Resource):
    """``/titles/``: every title of the cache, by name."""

    isLeaf = True

    def __init__(self, cache, reactor) -> None:
        super().__init__()
        self.cache = cache
        self.reactor = reactor
        self.serving: Counter[str] = Counter()   # downloads running, per title
        self.bytes_sent = 0

    def busy(self, name: str) -> bool:
        """Whether a download of ``name`` runs (eviction must wait)."""
        return self.serving[name] > 0

    def render_GET(self, request) -> int:  # noqa: N802 (Twisted API)
        d = Deferred.fromCoroutine(self._serve(request))
        d.addErrback(self._crashed, request)
        return server.NOT_DONE_YET

    render_HEAD = render_GET

    def _crashed(self, failure, request) -> None:
        log.error("download %s failed: %s", request.path.decode("latin-1"),
                  failure.getTraceback())
        if not request._disconnected and not request.startedWriting:
            error(request, 500, "internal error")

    async def _serve(self, request) -> None:
        title = await self.servable_title(request, request.postpath)
        if title is not None and not request._disconnected:
            self.answer(request, title)

    async def servable_title(self, request, path: list[bytes]):
        """The title named by ``path`` once it has bytes to send, starting
        its fill as DESCRIBE does; None after answering the error."""
        try:
            name = validate_title_name("/".join(p.decode("utf-8") for p in path))
        except (InvalidTitleName, UnicodeDecodeError) as exc:
            error(request, 404, f"no such title ({exc})")
            return None
        title = self.cache.get_title(name)
        if title is None or not self._has_bytes(title):
            if not self.cache.can_fetch(name, title):
                error(request, 404, f"no title {name!r}")
                return None
            try:
                await self.cache.prepare(name)
            except OriginError as exc:
                code = {404: 404, 503: 503, 504: 504}.get(exc.status, 502)
                error(request, code, str(exc))
                return None
            title = self.cache.get_title(name)
            if title is None or not self._has_bytes(title):
                error(request, 503, f"{name} cannot be served now")
                return None
        return title

    def _has_bytes(self, title) -> bool:
        if title.state == "complete":
            return True
        fill = self.cache.fill_for(title.name)
        return title.state == "partial" and bool(title.size) and fill is not None \
            and fill.error is None

    def answer(self, request, title) -> None:
        """Answer a GET or HEAD of servable ``title``'s bytes."""
        size = title.size or os.stat(title.media_path).st_size
        self.answer_pieces(request, title, [FilePart(0, size)], kind=content_type(
            title.container), etag=self.etag(title))

    def etag(self, title) -> str:
        """The strong ETag of ``title``'s bytes as they are cached."""
        size = title.size or os.stat(title.media_path).st_size
        return title_etag(title.name, title.created, size, title.etag, title.last_modified)

    def answer_pieces(self, request, title, body: list[Piece], *, kind: str,
                      etag: str) -> None:
        """Answer a GET or HEAD of a representation of servable ``title``
        made of ``body`` (literal bytes and parts of its file, which go out
        with sendfile), whose media type is ``kind`` and whose ETag is
        ``etag``: the conditions, ranges and validators of a download."""
        size = sum(piece_length(p) for p in body)
        modified = title.last_modified or http_date(title.created)
        method = request.method.decode("ascii", "replace")
        header = lambda name: _text(request.getHeader(name))  # noqa: E731
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"ETag", etag.encode())
        request.setHeader(b"Last-Modified", modified.encode("latin-1"))
        decision = evaluate(method, Conditions(
            if_match=header(b"if-match"), if_none_match=header(b"if-none-match"),
            if_modified_since=header(b"if-modified-since"),
            if_unmodified_since=header(b"if-unmodified-since"),
            if_range=header(b"if-range")), etag, modified)
        if decision.status is not None:
            request.setResponseCode(decision.status)
            if decision.status != 304:   # a 304 has no body, nor a length of one
                request.setHeader(b"Content-Length", b"0")
            request.finish()
            return
        ranges = None
        if decision.use_range:
            try:
                ranges = parse_range(header(b"range"), size)
            except Unsatisfiable:
                request.setResponseCode(416)
                request.setHeader(b"Content-Range", f"bytes */{size}".encode())
                request.setHeader(b"Content-Length", b"0")
                request.finish()
                return
        if ranges is None:
            pieces, length = body, size
            request.setHeader(b"Content-Type", kind.encode())
        elif len(ranges) == 1:
            (start, end), = ranges
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", content_range(start, end, size).encode())
            request.setHeader(b"Content-Type", kind.encode())
            pieces, length = slice_pieces(body, start, end), end - start
        else:
            boundary = secrets.token_hex(12)
            request.setResponseCode(206)
            request.setHeader(b"Content-Type",
                              f"multipart/byteranges; boundary={boundary}".encode())
            parts, length = multipart_body(ranges, size, kind, boundary)
            # each part's range of the representation, as pieces of the body
            pieces = [q for p in parts for q in
                      ([p] if isinstance(p, bytes) else slice_pieces(body, p.start, p.end))]
        request.setHeader(b"Content-Length", str(length).encode())
        if method == "HEAD":
            request.finish()
            return
        fill = self.cache.fill_for(title.name)
        file_size = title.size or os.stat(title.media_path).st_size
        source = FillSource(fill, request) if fill is not None and not fill.complete \
            else StaticSource([(0, file_size)] if title.state == "complete"
                              else self.cache.catalog.cached_ranges(title.name))
        fd = os.open(title.media_path, os.O_RDONLY | os.O_CLOEXEC)
        self.serving[title.name] += 1

        def ended(sent: int, error: Optional[str], name: str = title.name) -> None:
            self.serving[name] -= 1
            if not self.serving[name]:
                del self.serving[name]
            self.bytes_sent += sent
        sender = SendfileBody if can_sendfile(request.channel.transport) else ReadBody
        sender(request, self.reactor, fd, pieces, source, on_end=ended).start()


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("latin-1")


def error(request, code: int, message: str) -> None:
    """Answer ``code`` with ``message`` as plain text."""
    if request._disconnected:
        return
    body = (message + "\n").encode("utf-8", "replace")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()
