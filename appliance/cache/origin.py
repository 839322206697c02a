"""Fetching title bytes from the origin: HTTP(S) Range requests, or file:// reads.

One request per call, no retries here (the fill decides when to retry and
how long to back off). Every answer is checked before a byte is handed on:
the status, the validator (ETag / Last-Modified) against the one recorded
at the probe, and the Content-Range against the range asked for. Bytes go
to a ``sink(offset, data)`` as they arrive, so a body cut off halfway still
leaves what came in the cache; the error says how much that was.

Errors say whose fault it is and what to answer a viewer (``status``):
:class:`OriginNotFound` (404), :class:`OriginChanged` (the title changed:
start over), :class:`OriginUnavailable` (down, slow, 5xx: retry) and
:class:`OriginProtocolError` (a wrong answer: retry).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

from twisted.internet import defer, threads
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

Sink = Callable[[int, bytes], None]

USER_AGENT = b"kvod"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class OriginError(Exception):
    """A request to the origin failed; ``status`` is the RTSP status to answer
    a viewer with, ``received`` the bytes handed to the sink before it failed."""

    status = 502
    retryable = True

    def __init__(self, message: str, *, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


class OriginNotFound(OriginError):
    """The origin has no such title (404/410)."""

    status = 404
    retryable = False


class OriginChanged(OriginError):
    """The title at the origin is not the one the cache holds bytes of."""

    retryable = False


class OriginUnavailable(OriginError):
    """Cannot reach the origin, it timed out, or it answered 5xx."""

    status = 504


class OriginProtocolError(OriginError):
    """The origin answered, but not as asked (wrong Content-Range, short body)."""


@dataclass(frozen=True)
class Validator:
    """What identifies one version of a title at the origin."""

    etag: Optional[str] = None
    last_modified: Optional[str] = None

    def if_range(self) -> Optional[str]:
        """The If-Range value: a strong ETag, else the Last-Modified date
        (RFC 7233 refuses weak validators), else None."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def matches(self, other: "Validator") -> bool:
        """Whether ``other`` (from a later answer) names the same version; a
        field the later answer leaves out is not held against it."""
        if self.etag and other.etag and self.etag != other.etag:
            return False
        if self.last_modified and other.last_modified and \
                self.last_modified != other.last_modified:
            return False
        return True


@dataclass(frozen=True)
class Probe:
    """What the origin says about a title: its size, its version, and its
    first bytes."""

    url: str
    size: int
    validator: Validator
    head: bytes


def parse_content_range(value: Optional[str]) -> tuple[int, int, Optional[int]]:
    """``bytes START-END/SIZE`` as (start, end exclusive, size or None)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        raise OriginProtocolError(f"bad Content-Range {value!r}")
    first, last = int(match[1]), int(match[2])
    size = None if match[3] == "*" else int(match[3])
    if last < first or (size is not None and last >= size):
        raise OriginProtocolError(f"bad Content-Range {value!r}")
    return first, last + 1, size


class _Body(Protocol):
    """Hands a response body to a sink, bounded by the bytes expected."""

    def __init__(self, start: int, length: int, sink: Sink, reactor,
                 read_timeout: float) -> None:
        self.start = start
        self.length = length
        self.sink = sink
        self.received = 0
        self.done: defer.Deferred = defer.Deferred()
        self._reactor = reactor
        self._read_timeout = read_timeout
        self._timer = None
        self._error: Optional[OriginError] = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._read_timeout)
        else:
            self._timer = self._reactor.callLater(self._read_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._abort(OriginUnavailable(
            f"no byte for {self._read_timeout:g} s after {self.received} of {self.length}",
            received=self.received))

    def _abort(self, error: OriginError) -> None:
        if self._error is None:
            self._error = error
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._error is not None:
            return
        self._arm()
        room = self.length - self.received
        if len(data) > room:
            data = data[:room]
            self._error = OriginProtocolError(
                f"body longer than the {self.length} bytes asked for")
        if data:
            try:
                self.sink(self.start + self.received, data)
            except Exception as exc:  # the cache could not take them (disk full)
                error = exc if isinstance(exc, OriginError) else OriginError(
                    f"cannot store bytes: {exc}")
                error.received = self.received
                if error is not exc:
                    error.__cause__ = exc
                self._abort(error)
                return
            self.received += len(data)
        if self._error is not None:
            self._error.received = self.received
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._error is not None:
            self.done.errback(self._error)
        elif reason.check(ResponseDone, PotentialDataLoss) and self.received == self.length:
            self.done.callback(self.received)
        else:
            self.done.errback(OriginProtocolError(
                f"truncated body: {self.received} of {self.length} bytes "
                f"({reason.getErrorMessage()})", received=self.received))


def _header(response, name: bytes) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    return values[-1].decode("latin-1") if values else None


def _validator_of(response) -> Validator:
    return Validator(_header(response, b"etag"), _header(response, b"last-modified"))


class HttpOrigin:
    """Range requests over a pool of persistent HTTP connections."""

    def __init__(self, reactor, *, connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connections: int = 8) -> None:
        self.reactor = reactor
        self.read_timeout = read_timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = connections
        self.pool.retryAutomatically = False  # the fill retries, with back-off
        self.agent = Agent(reactor, connectTimeout=connect_timeout, pool=self.pool)
        self.bytes_fetched = 0

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.pool.closeCachedConnections()

    async def _request(self, url: str, headers: dict[bytes, bytes]):
        all_headers = Headers({b"user-agent": [USER_AGENT]})
        for name, value in headers.items():
            all_headers.setRawHeaders(name, [value])
        d = self.agent.request(b"GET", url.encode("ascii"), all_headers)
        timer = self.reactor.callLater(self.read_timeout, d.cancel)
        try:
            return await d
        except defer.CancelledError:
            raise OriginUnavailable(f"{url}: no answer within {self.read_timeout:g} s") from None
        except (ConnectError, TimeoutError) as exc:
            raise OriginUnavailable(f"{url}: cannot connect: {exc}") from None
        except (ResponseFailed, ConnectionLost, ConnectionDone) as exc:
            raise OriginUnavailable(f"{url}: connection failed: {_reasons(exc)}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _body(self, response, start: int, length: int, sink: Sink) -> int:
        body = _Body(start, length, sink, self.reactor, self.read_timeout)
        response.deliverBody(body)
        try:
            return await body.done
        finally:
            self.bytes_fetched += body.received

    @staticmethod
    def _check_status(url: str, response) -> None:
        code = response.code
        if code in (404, 410):
            raise OriginNotFound(f"{url}: {code} {response.phrase.decode('latin-1')}")
        if code >= 500:
            raise OriginUnavailable(f"{url}: {code} {response.phrase.decode('latin-1')}")

    @staticmethod
    def _discard(response) -> None:
        # closing the connection is cheaper than reading a body we do not want
        response.deliverBody(_Discard())

    async def fetch(self, url: str, start: int, end: int, validator: Validator,
                    sink: Sink, *, size: int) -> int:
        """Bytes ``[start, end)`` of the title of ``size`` bytes into ``sink``.

        If-Range carries ``validator``: an origin whose title changed answers
        200 with the whole new title, which is refused (OriginChanged)
        without reading it.
        """
        headers = {b"range": f"bytes={start}-{end - 1}".encode()}
        if validator.if_range():
            headers[b"if-range"] = validator.if_range().encode("latin-1")
        response = await self._request(url, headers)
        try:
            self._check_status(url, response)
            if response.code == 200 or response.code == 416:
                raise OriginChanged(f"{url}: answered {response.code} to If-Range "
                                    f"{validator.if_range()!r}: the title changed")
            if response.code != 206:
                raise OriginProtocolError(f"{url}: unexpected status {response.code}")
            if not validator.matches(_validator_of(response)):
                raise OriginChanged(f"{url}: validator {_validator_of(response)} is not "
                                    f"{validator}: the title changed")
            first, last, total = parse_content_range(_header(response, b"content-range"))
            if (first, last) != (start, end) or total not in (size, None):
                raise OriginProtocolError(
                    f"{url}: asked for bytes {start}-{end - 1}/{size}, got Content-Range "
                    f"{_header(response, b'content-range')!r}")
        except OriginError:
            self._discard(response)
            raise
        return await self._body(response, start, end - start, sink)

    async def probe(self, url: str, head_bytes: int) -> Probe:
        """The title's size and validator and its first ``head_bytes``, in one
        Range request: its answer carries what a HEAD would (Content-Range
        gives the size), and the bytes a viewer starts with."""
        head, size, validator = await self._probe_part(url, 0, head_bytes - 1)
        return Probe(url, size, validator, head)

    async def _probe_part(self, url: str, first_byte: int, last_byte: int):
        response = await self._request(url, {b"range": f"bytes={first_byte}-{last_byte}".encode()})
        validator = _validator_of(response)
        try:
            self._check_status(url, response)
            if response.code == 200 and first_byte == 0:
                length = response.length
                if not isinstance(length, int) or length > last_byte + 1:
                    raise OriginProtocolError(f"{url}: ignores Range requests")
                first, last, total = 0, length, length
            elif response.code == 206:
                first, last, total = parse_content_range(_header(response, b"content-range"))
                if total is None:
                    raise OriginProtocolError(f"{url}: does not say the title's size")
                if first != first_byte or last > last_byte + 1:
                    raise OriginProtocolError(
                        f"{url}: asked for bytes {first_byte}-{last_byte}, got Content-Range "
                        f"{_header(response, b'content-range')!r}")
            elif response.code == 416:
                raise OriginProtocolError(f"{url}: answered 416 (empty title?)")
            else:
                raise OriginProtocolError(f"{url}: unexpected status {response.code}")
        except OriginError:
            self._discard(response)
            raise
        parts: list[bytes] = []
        await self._body(response, first, last - first, lambda _off, data: parts.append(data))
        return b"".join(parts), total, validator


class _Discard(Protocol):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted API)
        pass


def _reasons(exc: Exception) -> str:
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(exc) or type(exc).__name__


class FileOrigin:
    """file:// URLs: the same calls, reading a local file in a worker thread.

    The validator is made from the file's inode, size and modification time,
    so a replaced or rewritten file counts as changed.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.bytes_fetched = 0

    async def close(self) -> None:
        """Nothing to close."""

    @staticmethod
    def path_of(url: str) -> str:
        """The local path of a file:/// URL."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise OriginNotFound(f"{url}: not a local file URL")
        return unquote(parts.path)

    @staticmethod
    def _validator(st: os.stat_result) -> Validator:
        return Validator(etag=f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"')

    def _read(self, url: str, start: int, end: int, validator: Optional[Validator]):
        path = self.path_of(url)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OriginNotFound(f"{url}: no such file") from None
        except OSError as exc:
            raise OriginUnavailable(f"{url}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            found = self._validator(st)
            if validator is not None and not validator.matches(found):
                raise OriginChanged(f"{url}: the file changed")
            end = min(end, st.st_size) if validator is None else end
            data = os.pread(fd, end - start, start) if end > start else b""
            if len(data) != end - start:
                raise OriginChanged(f"{url}: the file is shorter than {end} bytes")
            return data, st.st_size, found
        finally:
            os.close(fd)

    async def fetch(self, url: str, start: int, end: int, validator: Validator,
                    sink: Sink, *, size: int) -> int:
        """Bytes ``[start, end)`` into ``sink``, as :meth:`HttpOrigin.fetch`."""
        data, _, _ = await threads.deferToThread(self._read, url, start, end, validator)
        sink(start, data)
        self.bytes_fetched += len(data)
        return len(data)

    async def probe(self, url: str, head_bytes: int) -> Probe:
        """As :meth:`HttpOrigin.probe`."""
        head, size, validator = await threads.deferToThread(self._read, url, 0, head_bytes,
                                                            None)
        if not size:
            raise OriginProtocolError(f"{url}: empty file")
        self.bytes_fetched += len(head)
        return Probe(url, size, validator, head)


def origin_for(url: str, http: HttpOrigin, files: FileOrigin):
    """The client that fetches ``url``."""
    return files if url.startswith("file:") else http
