"""RTP interleaved on the RTSP connection, without a network: the session
layer's choice of transport and channels, and the connection's one way of
writing (Twisted's buffer handed to the engine first, then the engine)."""

from __future__ import annotations

import errno
import socket

import pytest
from twisted.internet import abstract
from twisted.internet.testing import MemoryReactor

from appliance.media.interleaved import InterleavedLink, take_twisted_buffer, write_now
from appliance.rtsp import Request, parse_session, parse_transport
from appliance.rtsp.sessions import RtspServer
from rtpengine import rtcp
from rtpengine.engine import EngineError
from tests.helpers.memory_media import MemoryMedia, MemoryStream, movie_catalog

HOST = "127.0.0.1"
BASE = "rtsp://127.0.0.1:8554"


@pytest.fixture
def catalog():
    db = movie_catalog()
    yield db
    db.close()


class Transport(abstract.FileDescriptor):
    """Twisted's own buffering (abstract.FileDescriptor), never flushed:
    what a TCP transport holds between a write() and the reactor's turn."""

    def __init__(self):
        super().__init__(reactor=MemoryReactor())
        self.connected = True
        self.aborted = False
        self.sent = b""

    def writeSomeData(self, data):  # noqa: N802 (Twisted API)
        self.sent += bytes(data)
        return len(data)

    def getHandle(self):  # noqa: N802 (Twisted API)
        return self

    def fileno(self):
        return 99

    def abortConnection(self):  # noqa: N802 (Twisted API)
        self.aborted = True


class SocketTransport(abstract.FileDescriptor):
    """Twisted's buffering over one end of a real socket pair, flushed only
    when the test takes the reactor's turn (``doWrite``)."""

    def __init__(self, send_buffer: int | None = None):
        super().__init__(reactor=MemoryReactor())
        self.socket, self.peer = socket.socketpair()
        if send_buffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.socket.setblocking(False)
        self.peer.settimeout(5)
        self.connected = True

    def writeSomeData(self, data):  # noqa: N802 (Twisted API)
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0

    def fileno(self):
        return self.socket.fileno()

    def received(self) -> bytes:
        """All the peer can read now."""
        self.peer.setblocking(False)
        out = b""
        try:
            while chunk := self.peer.recv(1 << 16):
                out += chunk
        except BlockingIOError:
            pass
        return out

    def close(self):
        self.socket.close()
        self.peer.close()


class EngineStream:
    """What the link writes with: records writes, or refuses them."""

    def __init__(self, refuse: int | None = None):
        self.written: list[bytes] = []
        self.refuse = refuse
        self.paused = self.closed = False

    def write(self, data: bytes) -> None:
        if self.refuse:
            raise EngineError(self.refuse, "refused")
        self.written.append(data)

    def pause(self):
        self.paused = True

    def close(self):
        self.closed = True


class TrackStream:
    """An interleaved track as the link sees it."""

    def __init__(self, engine_stream, session_id="S1"):
        self._engine = engine_stream
        self.session_id = session_id
        self.label = session_id
        self.reports: list = []

    def engine_stream(self):
        return self._engine

    def receiver_report(self, packets):
        self.reports.append(packets)

    def close(self):
        self._engine = None


# -- the link -----------------------------------------------------------------------


def test_take_twisted_buffer_empties_what_twisted_holds():
    t = Transport()
    t.write(b"RTSP/1.0 200 OK\r\n")
    t.write(b"CSeq: 1\r\n\r\n")
    assert take_twisted_buffer(t) == b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"
    assert take_twisted_buffer(t) == b""
    t.doWrite()  # Twisted's next turn finds nothing to write, and stops
    assert t.sent == b"" and t not in t.reactor.writers
    assert take_twisted_buffer(object()) is None


def test_write_now_goes_straight_to_an_idle_socket():
    t = SocketTransport()
    try:
        write_now(t, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
        # on the wire before the reactor's next turn, and Twisted never armed for it
        assert t.received() == b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"
        assert t not in t.reactor.writers and take_twisted_buffer(t) == b""
    finally:
        t.close()


def test_write_now_queues_behind_what_twisted_holds():
    t = SocketTransport()
    try:
        t.write(b"first ")
        write_now(t, b"second")
        assert t.received() == b""          # nothing may overtake "first "
        t.doWrite()
        assert t.received() == b"first second"
    finally:
        t.close()


def test_write_now_leaves_what_a_full_socket_refuses_to_twisted_in_order():
    t = SocketTransport(send_buffer=4096)
    try:
        data = bytes(range(256)) * 4096     # 1 MiB: far more than the socket takes
        write_now(t, data)
        assert t in t.reactor.writers       # the rest waits for writability
        got = t.received()
        assert 0 < len(got) < len(data)
        for _ in range(10000):
            if len(got) == len(data):
                break
            t.doWrite()
            got += t.received()
        assert got == data
    finally:
        t.close()


def test_write_now_hands_a_broken_or_closing_connection_to_twisted():
    t = SocketTransport()
    t.peer.close()
    written = []
    t.write = written.append                # the peer is gone: send() fails
    write_now(t, b"late reply")
    assert written == [b"late reply"]       # Twisted reports the loss on its turn
    t.socket.close()

    t = SocketTransport()
    try:
        t.disconnecting = True
        t.write = written.append
        write_now(t, b"after loseConnection")
        assert written[-1] == b"after loseConnection" and t.received() == b""
    finally:
        t.close()


def test_write_now_writes_other_transports_through_twisted():
    t = Transport()                         # no socket: a test's, or TLS
    write_now(t, b"reply")
    assert t.sent == b"" and take_twisted_buffer(t) == b"reply"


def test_link_writes_through_twisted_until_a_stream_then_through_the_engine():
    t = Transport()
    link = InterleavedLink(t)
    assert link.usable()
    link.write(b"describe reply")          # no stream yet: Twisted buffers it
    es = EngineStream()
    link.attach(0, TrackStream(es))
    link.write(b"setup reply")            # pipelined: Twisted still holds the first
    assert es.written == [b"describe reply", b"setup reply"]
    assert take_twisted_buffer(t) == b""
    link.write(b"x" * 150000)             # the engine takes at most 64 KiB a call
    assert [len(w) for w in es.written[2:]] == [65536, 65536, 150000 - 131072]


def test_link_keeps_the_last_engine_stream_for_writing():
    """A torn-down track's engine stream stays (paused) while the connection
    lives, so later replies still queue behind its frames."""
    t = Transport()
    link = InterleavedLink(t)
    a, b = EngineStream(), EngineStream()
    link.attach(0, TrackStream(a))
    link.attach(2, TrackStream(b))
    link.write(b"reply")
    assert not link.detach(0, a)          # another stream remains
    assert link.detach(2, b) and b.paused and not b.closed
    link.write(b"teardown reply")
    assert b.written == [b"teardown reply"]
    link.close()
    assert b.closed and not link.usable()


def test_link_gives_up_on_a_connection_that_refuses_writes():
    t = Transport()
    why = []
    link = InterleavedLink(t, on_broken=why.append)
    link.attach(0, TrackStream(EngineStream(refuse=errno.ENOBUFS)))
    link.write(b"reply")
    assert why and "reads too slowly" in why[0]


def test_channel_pairs():
    link = InterleavedLink(Transport())
    assert link.free_pair(None) == (0, 1)
    assert link.free_pair((4, 5)) == (4, 5)
    link.attach(0, TrackStream(EngineStream()))
    assert link.free_pair((0, 1)) is None and link.free_pair((1, 2)) is None
    assert link.free_pair(None) == (2, 3)
    assert link.free_pair((6, 8)) is None      # RTCP is the next channel
    assert link.free_pair((254, 255)) == (254, 255)


def test_rtcp_frames_reach_their_stream():
    link = InterleavedLink(Transport())
    a, b = TrackStream(EngineStream()), TrackStream(EngineStream())
    link.attach(0, a)
    link.attach(2, b)
    rr = rtcp.build_receiver_report(7, ())
    link.frame_received(3, rr)
    link.frame_received(1, b"\x00garbage")   # dropped, not raised
    link.frame_received(2, rr)               # RTP from a client: ignored
    link.frame_received(9, rr)               # no such stream
    assert len(b.reports) == 1 and not a.reports
    assert link.session_ids() == {"S1"}


# -- the session layer ------------------------------------------------------------


class TcpMedia(MemoryMedia):
    """An in-memory backend that can interleave."""

    interleaving = True

    def open_stream(self, *, interleaved=None, **kw):
        kw["client_ports"] = kw.get("client_ports")
        stream = super().open_stream(**kw)
        if interleaved is not None:
            link, pair = interleaved
            link.attach(pair[0], TrackStream(EngineStream(), kw["session_id"]))
            stream.server_ports = None
            self.opened[-1] = self.opened[-1] + (pair,)
        return stream


@pytest.fixture
def tcp_server(catalog):
    return RtspServer(titles=catalog, media=TcpMedia(), session_timeout=60, max_sessions=10)


def setup_tcp(server, transport, link, cseq=1):
    req = Request("SETUP", f"{BASE}/movie/trackID=0",
                  (("CSeq", str(cseq)), ("Transport", transport)))
    return server.handle_request(req, peer_host=HOST, now=0.0, link=link)


def test_setup_interleaved_replies_with_its_channels(tcp_server):
    link = InterleavedLink(Transport())
    resp = setup_tcp(tcp_server, "RTP/AVP/TCP;unicast;interleaved=4-5", link)
    assert resp.status == 200
    spec = parse_transport(resp.headers.get("Transport"))[0]
    assert (spec.lower_transport, spec.interleaved, spec.server_port) == ("TCP", (4, 5), None)
    # the same pair again is refused, none given takes the lowest free one
    assert setup_tcp(tcp_server, "RTP/AVP/TCP;unicast;interleaved=4-5", link, 2).status == 461
    resp = setup_tcp(tcp_server, "RTP/AVP/TCP;unicast", link, 3)
    assert parse_transport(resp.headers.get("Transport"))[0].interleaved == (0, 1)
    # a pair that is taken falls back to the client's next alternative
    resp = setup_tcp(tcp_server, "RTP/AVP/TCP;unicast;interleaved=0-1,"
                             "RTP/AVP;unicast;client_port=6000-6001", link, 4)
    assert parse_transport(resp.headers.get("Transport"))[0].client_port == (6000, 6001)


def test_setup_interleaved_needs_a_link_and_a_backend_that_can(tcp_server, catalog):
    assert setup_tcp(tcp_server, "RTP/AVP/TCP;unicast;interleaved=0-1", None).status == 461
    udp_only = RtspServer(titles=catalog, media=MemoryMedia(), session_timeout=60)
    link = InterleavedLink(Transport())
    assert setup_tcp(udp_only, "RTP/AVP/TCP;unicast;interleaved=0-1", link).status == 461
    assert setup_tcp(tcp_server, "RTP/AVP/TCP;multicast;interleaved=0-1", link).status == 461


def test_closing_a_connection_ends_its_sessions(tcp_server):
    link = InterleavedLink(Transport())
    resp = setup_tcp(tcp_server, "RTP/AVP/TCP;unicast", link)
    session = parse_session(resp.headers.get("Session"))[0]
    tcp_server.close_sessions(link.connection_lost(), "its RTSP connection closed")
    link.write(b"nothing")  # lost: not even Twisted's buffer takes it
    assert link.transport.dataBuffer == b"" and not link.transport._tempDataBuffer
    assert session not in tcp_server.sessions
    assert all(isinstance(o[3], MemoryStream) and o[3].closed
               for o in tcp_server._media.opened)
