"""A response body sent from the cached file with ``sendfile(2)``.

:class:`SendfileBody` is a push producer registered with a Twisted Web
request after its headers. It writes nothing through the transport: once
the transport's buffer (the status line and headers) is empty, it moves the
file's bytes to the socket in the kernel with ``os.sendfile`` and learns
when the socket takes more from a writer on a ``dup`` of its descriptor
(epoll watches the duplicate on its own; the transport keeps its reads).
Literal pieces (multipart part headers) go with ``send``. Python never
holds a chunk of the file, so a slow reader costs one socket buffer, not
a growing queue.

Bytes a fill has not brought yet are waited for: ``source.available(pos)``
says how far the bytes from ``pos`` are there, and the body polls until
more come, or gives up with a closed connection (never a hole) when
``source.broken()`` says they will not.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Optional, Protocol

from zope.interface import implementer
from twisted.internet import interfaces

from appliance.http.ranges import FilePart, Piece

log = logging.getLogger(__name__)

#: most bytes one sendfile call moves (the socket takes less when it is full)
CHUNK = 4 << 20
#: seconds between two looks at a fill that has not brought the next bytes
WAIT_POLL = 0.02


class ByteSource(Protocol):
    """Where a body's bytes are and how far they are there yet."""

    def available(self, pos: int) -> int:
        """The end of the bytes held from ``pos`` on (``pos``: none yet)."""

    def broken(self) -> Optional[str]:
        """Why missing bytes will not come (the fill stopped), or None."""

    def want(self, pos: Optional[int]) -> None:
        """The body waits for ``pos`` (None: it no longer waits)."""


def transport_idle(transport) -> bool:
    """Whether a Twisted TCP transport has nothing of its own left to send."""
    return (not getattr(transport, "_tempDataLen", 0)
            and getattr(transport, "offset", 0) == len(getattr(transport, "dataBuffer", b"")))


@implementer(interfaces.IPushProducer, interfaces.IWriteDescriptor)
def _end_request(request, sent: int, error: Optional[str]) -> None:
    """Finish a download's request, or, cut by ``error`` after ``sent``
    bytes, close its connection: the headers promised a length, and closing
    early is how HTTP says the body is cut (a client never mistakes it for
    the bytes)."""
    if request.producer is not None:
        request.unregisterProducer()
    if error is None:
        request.finish()
    elif not request._disconnected:
        log.warning("download of %s stopped after %d bytes: %s",
                    request.path.decode("latin-1"), sent, error)
        request.channel.transport.loseConnection()


class _Body:
    """What both bodies hold: the request, the file (``file_fd``, owned:
    closed at the end), the pieces still to send and the bytes sent."""

    def __init__(self, request, reactor, file_fd: int, pieces: list[Piece],
                 source: ByteSource, on_end=lambda sent, error: None) -> None:
        self.request = request
        self.reactor = reactor
        self.file_fd = file_fd
        self.pieces = list(pieces)
        self.source = source
        self.on_end = on_end
        self.sent = 0


class SendfileBody(_Body):
    """Sends ``pieces`` to ``request``'s TCP socket, the file parts from
    ``file_fd`` (owned: closed at the end), then finishes the request."""

    def __init__(self, request, reactor, file_fd: int, pieces: list[Piece],
                 source: ByteSource, on_end=lambda sent, error: None) -> None:
        super().__init__(request, reactor, file_fd, pieces, source, on_end)
        self._transport = request.channel.transport
        self._sock_fd = os.dup(self._transport.fileno())
        self._writing = False
        self._paused = False
        self._timer = None
        self._done = False
        self._literal_at = 0
        request.notifyFinish().addErrback(lambda _: self._end("client went away"))

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Write the headers (through the transport), then the body."""
        self.request.registerProducer(self, True)
        self.request.write(b"")
        self._watch()

    def _watch(self) -> None:
        if not self._writing and not self._done and not self._paused:
            self._writing = True
            self.reactor.addWriter(self)

    def _unwatch(self) -> None:
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    def _end(self, error: Optional[str]) -> None:
        if self._done:
            return
        self._done = True
        self._unwatch()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.source.want(None)
        os.close(self._sock_fd)
        os.close(self.file_fd)
        _end_request(self.request, self.sent, error)
        self.on_end(self.sent, error)

    # -- IPushProducer (the channel pauses us when its own writes back up) --------

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = True
        self._unwatch()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = False
        self._watch()

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._end("stopped")

    # -- IWriteDescriptor on the duplicate descriptor --------------------------------

    def fileno(self) -> int:
        return self._sock_fd

    def logPrefix(self) -> str:  # noqa: N802 (Twisted API)
        return "SendfileBody"

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        self._end("connection lost")

    def doWrite(self):  # noqa: N802 (Twisted API)
        """The socket takes bytes: send the next ones."""
        if self._done:
            return None
        if not transport_idle(self._transport):
            return None  # the headers go first; the transport sends them now
        try:
            self._send_some()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return None
            self._end(f"send failed: {os.strerror(exc.errno)}")
        return None

    def _send_some(self) -> None:
        while self.pieces and not self._done:
            piece = self.pieces[0]
            if isinstance(piece, bytes):
                sent = os.write(self._sock_fd, memoryview(piece)[self._literal_at:])
                self._literal_at += sent
                self.sent += sent
                if self._literal_at == len(piece):
                    self.pieces.pop(0)
                    self._literal_at = 0
                continue
            self._send_file(piece)
            return
        if not self.pieces:
            self._end(None)

    def _send_file(self, part: FilePart) -> None:
        if part.start >= part.end:
            self.pieces.pop(0)
            return
        ready = min(self.source.available(part.start), part.end)
        if ready <= part.start:
            self._wait(part.start)
            return
        n = os.sendfile(self._sock_fd, self.file_fd, part.start,
                        min(ready - part.start, CHUNK))
        if n == 0:  # the file is shorter than the catalog says
            self._end(f"the file ends at {part.start}")
            return
        self.sent += n
        self.request.channel.resetTimeout()
        rest = FilePart(part.start + n, part.end)
        if rest.start >= rest.end:
            self.pieces.pop(0)
        else:
            self.pieces[0] = rest

    def _wait(self, pos: int) -> None:
        why = self.source.broken()
        if why is not None:
            self._end(why)
            return
        self.source.want(pos)
        self._unwatch()
        self.request.channel.resetTimeout()
        self._timer = self.reactor.callLater(WAIT_POLL, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._watch()


def can_sendfile(transport) -> bool:
    """Whether ``transport`` is a plain TCP socket sendfile may write to
    directly (TLS must encrypt every byte in user space: no sendfile)."""
    return (not interfaces.ISSLTransport.providedBy(transport)
            and hasattr(transport, "dataBuffer") and hasattr(transport, "fileno"))


@implementer(interfaces.IPushProducer)
class ReadBody(_Body):
    """The same body for a TLS connection: ``pread`` into Python, then the
    TLS transport encrypts it (kTLS, which would let the kernel do it after
    a sendfile, is not available through Twisted's pyOpenSSL transport).
    One chunk in flight; the channel pauses us when its buffer fills."""

    CHUNK = 256 << 10

    def __init__(self, request, reactor, file_fd: int, pieces: list[Piece],
                 source: ByteSource, on_end=lambda sent, error: None) -> None:
        super().__init__(request, reactor, file_fd, pieces, source, on_end)
        self._paused = False
        self._call = None
        self._done = False
        request.notifyFinish().addErrback(lambda _: self._end("client went away"))

    def start(self) -> None:
        """Write the headers, then the body."""
        self.request.registerProducer(self, True)
        self.request.write(b"")
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if not self._done and not self._paused and self._call is None:
            self._call = self.reactor.callLater(delay, self._step)

    def _step(self) -> None:
        self._call = None
        if self._done or self._paused:
            return
        if not self.pieces:
            self._end(None)
            return
        piece = self.pieces[0]
        if isinstance(piece, bytes):
            self.pieces.pop(0)
            self.request.write(piece)
            self.sent += len(piece)
        else:
            ready = min(self.source.available(piece.start), piece.end)
            if ready <= piece.start:
                why = self.source.broken()
                if why is not None:
                    self._end(why)
                    return
                self.source.want(piece.start)
                self._schedule(WAIT_POLL)
                return
            data = os.pread(self.file_fd, min(ready - piece.start, self.CHUNK), piece.start)
            if not data:
                self._end(f"the file ends at {piece.start}")
                return
            self.request.write(data)
            self.sent += len(data)
            rest = FilePart(piece.start + len(data), piece.end)
            if rest.start >= rest.end:
                self.pieces.pop(0)
            else:
                self.pieces[0] = rest
        self._schedule(0)

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = False
        self._schedule(0)

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._end("stopped")

    def _end(self, error: Optional[str]) -> None:
        if self._done:
            return
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.source.want(None)
        os.close(self.file_fd)
        _end_request(self.request, self.sent, error)
        self.on_end(self.sent, error)
