"""The Twisted edge of RTSP: bytes in, bytes out, nothing else.

Feeds ``dataReceived`` into the sans-IO ``RTSPConnection``, hands each
request to the session layer with the clock and the peer's address, and
writes what ``send()`` returns. A protocol error is answered with the
status it carries and ends that connection only.

``SessionTimer`` arms the one ``callLater`` the session layer's timers
need (idle sessions expire).

When the session layer answers :class:`NeedTitle` (a title that must come
from the origin first), the adapter awaits the cache's ``prepare`` and
hands the request in again; requests behind it on the connection wait, so
responses keep their order.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol

from appliance.rtsp import (
    ConnectionClosed,
    InterleavedFrame,
    RemoteProtocolError,
    Request,
    Response,
    RTSPConnection,
)
from appliance.rtsp.connection import response_for
from appliance.rtsp.limits import ConnectionTable, RequestRate
from appliance.rtsp.sessions import NeedTitle, RtspServer
from appliance.media.interleaved import InterleavedLink

log = logging.getLogger(__name__)

# numbers the connections, so that two from one address and port (a client
# that reconnects from the same port) never share a name
_CONNECTION_NUMBERS = itertools.count(1)


@dataclass(frozen=True)
class _ProtocolError:
    """A bad request in the queue: answered with ``status``, then the connection ends."""

    status: int


class RtspProtocol(Protocol):
    """One RTSP control connection."""

    def __init__(self, server: RtspServer, on_request: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic, cache=None,
                 on_answered: Callable[[str, float], None] = lambda method, seconds: None):
        """``on_answered(method, seconds)`` hears how long each request took
        from when its turn came to its answer (origin waits included)."""
        self.server = server
        self._on_answered = on_answered
        self._started: Optional[float] = None
        self.conn = RTSPConnection(our_role="server")
        self._on_request = on_request
        self._clock = clock
        self._cache = cache
        self._queue: deque = deque()
        self._waiting: Optional[Deferred] = None
        self._gone = False
        self._key: Optional[str] = None
        self._peer_host: Optional[str] = None
        # RTP interleaved on this connection; every write goes through it
        self.link: Optional[InterleavedLink] = None

    #: set by the factory: requests a second this connection may make
    rate: Optional[RequestRate] = None

    @property
    def key(self) -> str:
        """This connection's name for the session layer ("host port #n",
        unique in the process): auth nonces are bound to it and sessions per
        connection counted by it."""
        if self._key is None:
            peer = self.transport.getPeer()
            self._key = f"{peer.host} {getattr(peer, 'port', '')} #{next(_CONNECTION_NUMBERS)}"
        return self._key

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        # a reply must not wait for the ACK of the one before it (Nagle):
        # pipelined requests, or a client that acknowledges late, would
        # see a reply up to a delayed ACK (40 ms) late
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass  # not TCP underneath (a test's pipe): nothing to delay
        self.link = InterleavedLink(self.transport,
                                    on_broken=lambda why: self.transport.abortConnection())

    def _send(self, data: bytes) -> None:
        if self.link is not None:
            self.link.write(data)
        else:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            # Requests pipelined ahead of the bad one still get their answers.
            peer = self.transport.getPeer()
            log.info("RTSP from %s:%s: %s (answered %d)", peer.host, peer.port,
                     exc, exc.status)
            self._queue.extend(exc.events)
            self._queue.append(_ProtocolError(exc.status))
            self._drain()
            return
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.table.activity(self, self._clock(), partial=self.conn.mid_message)
        self._queue.extend(events)
        self._drain()

    def _over_rate(self, request: Request) -> bool:
        """Whether ``request`` goes over the connection's rate: answered 503
        (RTSP 1.0 has no 429) and dropped; a client far over it is cut off."""
        if self.rate is None:
            return False
        verdict = self.rate.take(self._clock())
        if verdict == "ok":
            return False
        if verdict == "abuse":
            peer = self.transport.getPeer()
            log.warning("RTSP from %s:%s: over %g requests a second and going on: "
                        "connection closed (rtsp.max_requests_per_second)",
                        peer.host, peer.port, self.rate.rate)
            self._queue.clear()
            self._gone = True
            self.transport.abortConnection()
            return True
        self._send(self.conn.send(response_for(
            request, 503, headers=(("Server", self.server.server_name),
                                   ("Retry-After", "1")))))
        return True

    def _drain(self) -> None:
        while self._queue and self._waiting is None and not self._gone:
            event = self._queue.popleft()
            if isinstance(event, _ProtocolError):  # after the requests before it
                self._send(self.conn.send_error(event.status))
                self.transport.loseConnection()
                self._queue.clear()
                return
            if isinstance(event, Request):
                if self._over_rate(event):
                    continue
                self._started = self._clock()
                self._answer(event, prepared=False)
            elif isinstance(event, ConnectionClosed):
                self.transport.loseConnection()
                self._queue.clear()
                return
            elif isinstance(event, InterleavedFrame):
                if self.link is not None:  # RTCP of an interleaved stream
                    self.link.frame_received(event.channel, event.data)
            elif isinstance(event, Response):
                # a client's stray response: nothing to do
                continue

    @property
    def peer_host(self) -> str:
        """The client's address (Twisted makes a new address object per
        ``getPeer()``: asked once)."""
        if self._peer_host is None:
            self._peer_host = self.transport.getPeer().host
        return self._peer_host

    def _answer(self, request: Request, *, prepared: bool) -> None:
        response = self.server.handle_request(
            request, peer_host=self.peer_host, now=self._clock(),
            prepared=prepared, connection=self.key, link=self.link,
            secure=self.link is not None and self.link.tls)
        if isinstance(response, NeedTitle):
            self._prepare(request, response.name, response.npt_ns)
            return
        self._write(request, self.conn.send(response))

    def _write(self, request: Request, data: bytes) -> None:
        self._send(data)
        if self._started is not None:
            self._on_answered(request.method, self._clock() - self._started)
            self._started = None
        self._on_request()

    def _prepare(self, request: Request, name: str, npt_ns: Optional[int]) -> None:
        self._waiting = Deferred.fromCoroutine(self._cache.prepare(name, npt_ns=npt_ns))

        def prepared(_):
            self._waiting = None
            if not self._gone:
                self._answer(request, prepared=True)
                self._drain()

        def failed(failure):
            self._waiting = None
            if self._gone:
                return  # the client left (its wait was cancelled): nobody to answer
            if failure.check(CancelledError):
                status = 503   # the daemon is stopping: the wait was called off
            else:
                status = getattr(failure.value, "status", 500)
            if status == 500:  # not an origin's, a disk's or a client's doing: a bug
                log.error("preparing %s: %s", name, failure.getTraceback())
            if not self._gone:
                self._write(request, self.conn.send(self.server.error_response(
                    request, status, f"{name}: {failure.getErrorMessage()}")))
                self._drain()
        self._waiting.addCallbacks(prepared, failed)

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted API)
        self._gone = True
        if self._waiting is not None:
            # nobody to answer: the title leaves the fill queue (or its probe
            # stops) unless another client waits for it too
            self._waiting.cancel()
        if self.link is not None:
            # a TCP session lives on its connection
            self.server.close_sessions(self.link.connection_lost(),
                                       "its RTSP connection closed")
            self.link.close()
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connection_closed(self)


class RtspFactory(Factory):
    """Makes an ``RtspProtocol`` per connection, within the limits of
    :class:`appliance.rtsp.limits.ConnectionTable`: so many in all and per
    address; when full, the connection idle longest without a session
    makes room. :meth:`sweep` (once a second) closes idle and slow ones."""

    def __init__(self, server: RtspServer, *, max_connections: int,
                 on_request: Callable[[], None], clock: Callable[[], float] = time.monotonic,
                 cache=None,
                 on_answered: Callable[[str, float], None] = lambda method, seconds: None,
                 max_connections_per_address: int = 64, idle_timeout: float = 30.0,
                 request_timeout: float = 10.0, requests_per_second: float = 20.0):
        self.server = server
        self._on_answered = on_answered
        self.cache = cache
        self.table: ConnectionTable[RtspProtocol] = ConnectionTable(
            max_total=max_connections, max_per_address=max_connections_per_address,
            idle_timeout=idle_timeout, request_timeout=request_timeout)
        self.requests_per_second = requests_per_second
        self._on_request = on_request
        self._clock = clock

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self.table)

    @property
    def max_connections(self) -> int:
        return self.table.max_total

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self.table.max_total = value

    def _busy(self, proto: RtspProtocol) -> bool:
        return self.server.sessions_on(proto.key) > 0

    def buildProtocol(self, addr):  # noqa: N802 (Twisted API)
        now = self._clock()
        ok, victim, why = self.table.admit(addr.host, now, self._busy)
        if not ok:
            log.warning("refusing RTSP connection from %s: %s", addr.host, why)
            return None
        if victim is not None:
            peer = victim.transport.getPeer()
            log.info("closing the idlest RTSP connection (%s:%s, no session) to make room",
                     peer.host, peer.port)
            self.table.closed(victim)
            victim.transport.abortConnection()
        proto = RtspProtocol(self.server, self._on_request, self._clock, cache=self.cache,
                             on_answered=self._on_answered)
        proto.factory = self
        burst = max(2.0, 2 * self.requests_per_second)
        proto.rate = RequestRate(self.requests_per_second, burst, now)
        self.table.opened(proto, addr.host, now)
        return proto

    def connection_closed(self, proto: RtspProtocol) -> None:
        self.table.closed(proto)

    def sweep(self) -> None:
        """Close connections idle without a session or slow to finish a request."""
        for proto, why in self.table.expired(self._clock(), self._busy):
            peer = proto.transport.getPeer()
            log.info("closing RTSP connection from %s:%s: %s", peer.host, peer.port, why)
            self.table.closed(proto)
            proto.transport.abortConnection()


class SessionTimer(service.Service):
    """Arms one callLater for the session layer's next timer, re-armed on use."""

    def __init__(self, server: RtspServer, reactor, clock=time.monotonic):
        self.server = server
        self.reactor = reactor
        self.clock = clock
        self._call = None

    def rearm(self) -> None:
        """After a request: arm the timer if none is armed.

        Cheap on purpose, as it runs per request: a request only moves
        deadlines later (a session used, a new one a whole timeout away), so
        a timer already armed is early at worst; it fires, finds nothing to
        reclaim and arms itself for the deadline then current. Asking the
        server for the earliest deadline walks every session."""
        if self._call is None or not self._call.active():
            self.reschedule()

    def reschedule(self) -> None:
        """Schedule ``handle_timer`` for the server's current deadline (also
        when a shorter session timeout may have made it earlier)."""
        if not self.running:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        deadline = self.server.get_timer()
        if deadline is not None:
            delay = max(deadline - self.clock(), 0.0) + 0.01
            self._call = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        self.server.handle_timer(self.clock())
        self.reschedule()

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self.reschedule()

    def stopService(self):  # noqa: N802 (Twisted API)
        if self._call is not None and self._call.active():
            self._call.cancel()
        return super().stopService()
