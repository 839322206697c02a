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
from twisted.internet.error import (ConnectError, ConnectingCancelledError, ConnectionDone,
                                    ConnectionLost, DNSLookupError, TimeoutError)
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from appliance.cache.body_splice import BodySplice, can_splice, round_trip_us

Sink = Callable[[int, bytes], None]

USER_AGENT = b"kvod"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Twisted reads a TCP connection 64 KiB per recv(); from an origin on the
# same machine or LAN a fill then did 2400 reads (each one a trip through the
# HTTP parser, the body protocol and the sink) per 150 MB and spent most of
# its time there. A body is read up to READ_BYTES at a time; the answer's
# headers are not: Twisted's line parser copies what follows each header
# line, so a 1 MiB read holding the headers cost a dozen 1 MiB copies.
READ_BYTES = 1 << 20
# A body at least this long, over plain TCP, into a sink whose file a
# splice may write, is spliced (see body_splice): the connection is dropped after
# it, so a short body, where a new connection would cost more than the
# copies saved, is read the usual way.
SPLICE_BYTES = 4 << 20
# ... and only from an origin this near (the connection's smoothed round
# trip): a new connection to a far one pays its handshake and a new slow
# start per request, more than the copies a splice saves.
SPLICE_MAX_RTT_US = 1000


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


class OriginRefused(OriginProtocolError):
    """The origin answered a 4xx other than 404/410 (or a redirect, which kvod
    does not follow): asking again will not change its mind."""

    retryable = False


class RangesIgnored(OriginProtocolError):
    """The origin answered a Range request with the whole title (200) of the
    same version: it ignores ``Range`` (or ``If-Range``). Not a change of the
    title; the fill asks differently (see TitleFill)."""

    retryable = False


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
    ranges: bool = True    # False: the origin ignores Range (a sequential fill)


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
                 read_timeout: float, deadline: Optional[float] = None,
                 stop_after: Optional[int] = None, *, framed: bool = False) -> None:
        """``deadline`` (reactor time): the whole body must be in by then, so a
        byte now and then cannot hold a request open for ever; ``stop_after``:
        end the request, successfully, once that many bytes came (the first
        bytes of an answer that is longer than wanted); ``framed``: the body
        is the connection's next ``length`` bytes as they are (a
        Content-Length of exactly that, no chunked coding), so it may be
        spliced."""
        self.start = start
        self.length = length
        self.sink = sink
        self.received = 0
        # cancelled (the fill stopped): the connection goes, no byte more
        self.done: defer.Deferred = defer.Deferred(lambda _d: self._cancelled())
        self._reactor = reactor
        self._read_timeout = read_timeout
        self._timer = None
        self._deadline_call = None
        self._deadline = deadline
        self._stop_after = stop_after
        self._enough = False
        self._error: Optional[OriginError] = None
        self._tcp = None     # the connection's TCP transport, reading wide
        self._narrow = 0     # ... and its read size before
        self._plain = False  # ... with no TLS between it and the body
        self._framed = framed
        self._splice: Optional[BodySplice] = None
        self._spliced = False   # the socket went to a splice: drop the connection

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self._widen()
        self._arm()
        if self._deadline is not None:
            self._deadline_call = self._reactor.callLater(
                max(self._deadline - self._reactor.seconds(), 0), self._too_slow)
        self._start_splice()

    def _start_splice(self) -> None:
        """Hand the socket to a BodySplice when it pays (see SPLICE_BYTES).
        Body bytes Twisted read with the headers still come to
        dataReceived, right after connectionMade; the splice's thread
        starts after them, on the reactor's next turn."""
        tcp = self._tcp
        if not (self._plain and self._framed and self._stop_after is None
                and can_splice(self.sink) and self.length >= SPLICE_BYTES and tcp is not None):
            return
        fileno = getattr(tcp, "fileno", None)
        if not callable(fileno) or not callable(getattr(tcp, "stopReading", None)) or \
                tcp in self._reactor.getWriters():
            return
        rtt = round_trip_us(getattr(tcp, "socket", None))
        if rtt is not None and rtt > SPLICE_MAX_RTT_US:
            return          # a far origin: its connection is worth keeping
        try:
            self._splice = BodySplice(self._reactor, fileno(), self._moved,
                                      self._splice_ended, self._sink_failed)
        except OSError:
            return          # no pipe to be had: read the usual way
        self._spliced = True
        self._reactor.callLater(0, self._splice_go)

    def _splice_go(self) -> None:
        """Start the splice's thread at the first body byte Twisted did not read."""
        splice = self._splice
        if splice is None or splice.active or self._error is not None or self.done.called:
            return
        want = self.length - self.received
        if want <= 0:
            return          # the body came whole with the headers
        try:
            file = self.sink.splice_file(self.start + self.received)
        except Exception as exc:  # the cache takes no byte more
            self._sink_failed(exc)
            return
        if file is not None:
            # Twisted resumed reading once it delivered the buffered bytes
            # (Response.deliverBody): what it read since came to dataReceived
            self._tcp.stopReading()
            try:
                splice.start(file, self.start + self.received, want)
                return
            except OSError:
                pass         # no thread to be had
        # read the usual way (the sink wants so, or no thread)
        self._stop_splice()
        self._spliced = False
        self._tcp.startReading()

    def _moved(self, n: int) -> None:
        """``n`` more body bytes are in the sink's file."""
        self._arm()
        self.received += n
        if self.received >= self.length:
            self._stop_splice()
            self._tcp.abortConnection()

    def _splice_ended(self) -> None:
        """The socket ended (or failed) mid-body: the transport reads it
        again and ends the response with what it says."""
        self._stop_splice()
        self._tcp.startReading()

    def _stop_splice(self) -> None:
        if self._splice is not None:
            self._splice.stop()
            self._splice = None

    def _widen(self) -> None:
        # Agent hands a body protocol a proxy of the connection's transport;
        # the TCP transport is under it (and under TLS, one level more).
        # Without it (another Twisted), reads stay at 64 KiB: slower, same bytes.
        transport = getattr(self.transport, "_producer", None)
        for depth in range(3):
            size = getattr(transport, "bufferSize", None)
            if isinstance(size, int):
                self._tcp, self._narrow = transport, size
                transport.bufferSize = max(size, READ_BYTES)
                self._plain = depth == 0
                return
            transport = getattr(transport, "transport", None)

    def _too_slow(self) -> None:
        self._deadline_call = None
        self._abort(OriginUnavailable(
            f"too slow: {self.received} of {self.length} bytes by the deadline",
            received=self.received))

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

    def _cancelled(self) -> None:
        if self._error is None:
            self._error = OriginError("cancelled")
        self._stop_splice()
        if self.transport is not None:
            self.transport.loseConnection()

    def _abort(self, error: OriginError) -> None:
        if self._error is None:
            self._error = error
        self._stop_splice()
        self.transport.loseConnection()

    def _sink_failed(self, exc: Exception) -> None:
        error = exc if isinstance(exc, OriginError) else OriginError(
            f"cannot store bytes: {exc}")
        error.received = self.received
        if error is not exc:
            error.__cause__ = exc
        self._abort(error)

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
                self._sink_failed(exc)
                return
            self.received += len(data)
        if self._error is not None:
            self._error.received = self.received
            self._stop_splice()
            self.transport.loseConnection()
        elif self._stop_after is not None and self.received >= self._stop_after:
            self._enough = True
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        if self._splice is not None:
            self._stop_splice()
            if reason.check(ResponseDone) and not self._tcp.disconnected:
                # the body came whole with the headers: the pooled connection reads again
                self._tcp.startReading()
        if self._tcp is not None:
            # the connection may go back to the pool: the next answer's
            # headers are read narrow again
            self._tcp.bufferSize = self._narrow
            self._tcp = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None
        if self.done.called:  # cancelled
            return
        if self._error is not None:
            self.done.errback(self._error)
        elif self._enough:
            self.done.callback(self.received)
        elif self.received == self.length and (
                self._spliced or reason.check(ResponseDone, PotentialDataLoss)):
            # spliced: the connection was dropped after the last byte (its
            # parser never saw the body), so its end says nothing
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
    """Range requests over a pool of persistent HTTP connections.

    Every request has deadlines: ``connect_timeout`` to connect,
    ``read_timeout`` for the answer's headers and between two body bytes,
    and the body as a whole by ``read_timeout + length / min_rate`` seconds
    (or the caller's own deadline, e.g. the probe's), so an origin that sends
    a byte now and then cannot keep a request, a fill slot or a DESCRIBE
    waiting for ever.
    """

    def __init__(self, reactor, *, connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connections: int = 8, min_rate: float = 16 << 10) -> None:
        self.reactor = reactor
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = connections
        self.pool.retryAutomatically = False  # the fill retries, with back-off
        self.agent = Agent(reactor, connectTimeout=connect_timeout, pool=self.pool)
        self.bytes_fetched = 0

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.pool.closeCachedConnections()

    def _body_deadline(self, length: int, deadline: Optional[float]) -> float:
        own = self.reactor.seconds() + self.read_timeout + length / self.min_rate
        return own if deadline is None else min(own, deadline)

    async def _request(self, url: str, headers: dict[bytes, bytes],
                       deadline: Optional[float] = None):
        all_headers = Headers({b"user-agent": [USER_AGENT]})
        for name, value in headers.items():
            all_headers.setRawHeaders(name, [value])
        wait = self.read_timeout
        if deadline is not None:
            wait = min(wait, max(deadline - self.reactor.seconds(), 0.0))
        d = self.agent.request(b"GET", url.encode("ascii"), all_headers)
        timed_out = []
        timer = self.reactor.callLater(wait, lambda: (timed_out.append(True), d.cancel()))
        try:
            return await d
        except (defer.CancelledError, ConnectingCancelledError):
            if not timed_out:
                raise defer.CancelledError() from None  # the caller gave up: not the origin
            raise OriginUnavailable(f"{url}: no answer within {wait:g} s") from None
        except (ConnectError, TimeoutError, DNSLookupError) as exc:
            raise OriginUnavailable(f"{url}: cannot connect: {exc}") from None
        except (ResponseFailed, ConnectionLost, ConnectionDone) as exc:
            raise OriginUnavailable(f"{url}: connection failed: {_reasons(exc)}") from None
        except Exception as exc:  # whatever the answer was, it is the origin's fault
            raise OriginProtocolError(f"{url}: bad answer: {_reasons(exc)}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _body(self, response, start: int, length: int, sink: Sink, *,
                    deadline: Optional[float] = None, stop_after: Optional[int] = None) -> int:
        # a chunked body's socket holds chunk sizes between the bytes: only
        # one framed by its Content-Length can go to a file as it is
        body = _Body(start, length, sink, self.reactor, self.read_timeout,
                     self._body_deadline(stop_after or length, deadline), stop_after,
                     framed=response.length == length)
        response.deliverBody(body)
        try:
            return await body.done
        finally:
            self.bytes_fetched += body.received

    @staticmethod
    def _check_status(url: str, response) -> None:
        code = response.code
        phrase = response.phrase.decode("latin-1", "replace")[:100]
        if code in (404, 410):
            raise OriginNotFound(f"{url}: {code} {phrase}")
        if code >= 500 or code in (408, 429):
            raise OriginUnavailable(f"{url}: {code} {phrase}")
        if 300 <= code < 400:
            # not followed: a redirect loop or a move is the operator's to fix
            raise OriginRefused(f"{url}: {code} {phrase} (redirects are not followed; "
                                f"Location {_header(response, b'location')!r})")
        if 400 <= code < 500 and code != 416:
            raise OriginRefused(f"{url}: {code} {phrase}")

    @staticmethod
    def _discard(response) -> None:
        # closing the connection is cheaper than reading a body we do not want
        response.deliverBody(_Discard())

    async def fetch(self, url: str, start: int, end: int, validator: Validator,
                    sink: Sink, *, size: int, if_range: bool = True) -> int:
        """Bytes ``[start, end)`` of the title of ``size`` bytes into ``sink``.

        If-Range carries ``validator`` (unless ``if_range`` is False): an
        origin whose title changed answers 200 with the whole new title,
        which is refused (OriginChanged) without reading it. A 200 with the
        same validator and size is an origin that ignores Range or If-Range
        (RangesIgnored). Every 206 is checked against ``validator`` too.
        """
        headers = {b"range": f"bytes={start}-{end - 1}".encode()}
        if if_range and validator.if_range():
            headers[b"if-range"] = validator.if_range().encode("latin-1")
        response = await self._request(url, headers)
        try:
            self._check_status(url, response)
            found = _validator_of(response)
            if response.code == 200:
                same = validator.matches(found) and (found.etag or found.last_modified
                                                     or not validator.if_range())
                if same and response.length == size:
                    raise RangesIgnored(f"{url}: answered 200 (the whole title, same "
                                        f"version) to a Range request")
                raise OriginChanged(f"{url}: answered 200 to If-Range "
                                    f"{validator.if_range()!r} with {found}, "
                                    f"{response.length} bytes: the title changed")
            if response.code == 416:
                raise OriginChanged(f"{url}: answered 416 to bytes {start}-{end - 1}: "
                                    "the title changed")
            if response.code != 206:
                raise OriginProtocolError(f"{url}: unexpected status {response.code}")
            if not validator.matches(found):
                raise OriginChanged(f"{url}: validator {found} is not "
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

    async def fetch_whole(self, url: str, validator: Validator, sink: Sink, *,
                          size: int) -> int:
        """The whole title, front to back, into ``sink``: for an origin that
        ignores Range. The answer must be 200 of ``size`` bytes and the same
        version (its validator, where it sends one)."""
        response = await self._request(url, {})
        try:
            self._check_status(url, response)
            if response.code != 200:
                raise OriginProtocolError(f"{url}: unexpected status {response.code}")
            found = _validator_of(response)
            if not validator.matches(found):
                raise OriginChanged(f"{url}: validator {found} is not {validator}: "
                                    "the title changed")
            if response.length != size:
                raise OriginChanged(f"{url}: {response.length} bytes, not {size}: "
                                    "the title changed")
        except OriginError:
            self._discard(response)
            raise
        return await self._body(response, 0, size, sink)

    async def probe(self, url: str, head_bytes: int, *,
                    deadline: Optional[float] = None) -> Probe:
        """The title's size and validator and its first ``head_bytes``, in one
        Range request: its answer carries what a HEAD would (Content-Range
        gives the size), and the bytes a viewer starts with. An origin that
        answers 200 (no Range support) with a Content-Length is read for
        its first ``head_bytes`` only (``ranges=False``). ``deadline``
        (reactor time) bounds the whole exchange."""
        response = await self._request(url, {b"range": f"bytes=0-{head_bytes - 1}".encode()},
                                       deadline)
        validator = _validator_of(response)
        ranges = True
        try:
            self._check_status(url, response)
            if response.code == 200:
                length = response.length
                if not isinstance(length, int):
                    raise OriginRefused(f"{url}: ignores Range requests and does not say "
                                        "the title's length (no Content-Length)")
                first, last, total = 0, length, length
                ranges = length <= head_bytes   # the whole title came: nothing to range
            elif response.code == 206:
                first, last, total = parse_content_range(_header(response, b"content-range"))
                if total is None:
                    raise OriginProtocolError(f"{url}: does not say the title's size")
                if first != 0 or last > head_bytes:
                    raise OriginProtocolError(
                        f"{url}: asked for bytes 0-{head_bytes - 1}, got Content-Range "
                        f"{_header(response, b'content-range')!r}")
            elif response.code == 416:
                raise OriginRefused(f"{url}: answered 416 (empty title?)")
            else:
                raise OriginProtocolError(f"{url}: unexpected status {response.code}")
            if not total:
                raise OriginRefused(f"{url}: an empty title (0 bytes)")
        except OriginError:
            self._discard(response)
            raise
        parts: list[bytes] = []
        want = min(last - first, head_bytes)
        await self._body(response, first, last - first, lambda _off, data: parts.append(data),
                         deadline=deadline, stop_after=want if not ranges else None)
        head = b"".join(parts)[:want]
        return Probe(url, total, validator, head, ranges)


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
                    sink: Sink, *, size: int, if_range: bool = True) -> int:
        """Bytes ``[start, end)`` into ``sink``, as :meth:`HttpOrigin.fetch`."""
        data, _, _ = await threads.deferToThread(self._read, url, start, end, validator)
        sink(start, data)
        self.bytes_fetched += len(data)
        return len(data)

    async def probe(self, url: str, head_bytes: int, *,
                    deadline: Optional[float] = None) -> Probe:
        """As :meth:`HttpOrigin.probe` (a local read needs no deadline)."""
        head, size, validator = await threads.deferToThread(self._read, url, 0, head_bytes,
                                                            None)
        if not size:
            raise OriginProtocolError(f"{url}: empty file")
        self.bytes_fetched += len(head)
        return Probe(url, size, validator, head)


def origin_for(url: str, http: HttpOrigin, files: FileOrigin):
    """The client that fetches ``url``."""
    return files if url.startswith("file:") else http
