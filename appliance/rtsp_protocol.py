"""The Twisted edge of RTSP: bytes in, bytes out, nothing else.

Feeds ``dataReceived`` into the sans-IO ``RTSPConnection``, hands each
request to the session layer with the clock and the peer's address, and
writes what ``send()`` returns. A protocol error is answered with the
status it carries and ends that connection only.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from twisted.internet.protocol import Factory, Protocol

from appliance.rtsp import (
    ConnectionClosed,
    InterleavedFrame,
    RemoteProtocolError,
    Request,
    Response,
    RTSPConnection,
)
from appliance.rtsp_server import RtspServer

log = logging.getLogger(__name__)


class RtspProtocol(Protocol):
    """One RTSP control connection."""

    def __init__(self, server: RtspServer, on_request: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic):
        self.server = server
        self.conn = RTSPConnection(our_role="server")
        self._on_request = on_request
        self._clock = clock

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            # Requests pipelined ahead of the bad one still get their answers.
            self._handle(exc.events)
            peer = self.transport.getPeer()
            log.info("RTSP from %s:%s: %s (answered %d)", peer.host, peer.port,
                     exc, exc.status)
            self.transport.write(self.conn.send_error(exc.status))
            self.transport.loseConnection()
            return
        self._handle(events)

    def _handle(self, events) -> None:
        for event in events:
            if isinstance(event, Request):
                response = self.server.handle_request(
                    event, peer_host=self.transport.getPeer().host, now=self._clock())
                self.transport.write(self.conn.send(response))
                self._on_request()
            elif isinstance(event, ConnectionClosed):
                self.transport.loseConnection()
                return
            elif isinstance(event, (InterleavedFrame, Response)):
                # RTCP over TCP or a client's stray response: nothing to do.
                continue

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted API)
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connection_closed()


class RtspFactory(Factory):
    """Makes an ``RtspProtocol`` per connection, up to a limit."""

    def __init__(self, server: RtspServer, *, max_connections: int,
                 on_request: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self.server = server
        self.max_connections = max_connections
        self.connections = 0
        self._on_request = on_request
        self._clock = clock

    def buildProtocol(self, addr):  # noqa: N802 (Twisted API)
        if self.connections >= self.max_connections:
            log.warning("refusing RTSP connection from %s: %d open", addr.host,
                        self.connections)
            return None
        self.connections += 1
        proto = RtspProtocol(self.server, self._on_request, self._clock)
        proto.factory = self
        return proto

    def connection_closed(self) -> None:
        self.connections -= 1
