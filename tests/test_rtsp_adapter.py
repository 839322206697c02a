"""The Twisted edge of RTSP and the session timer, with StringTransport and
task.Clock: no sockets, no global reactor."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from appliance.rtsp_adapter import SessionTimer
from appliance.rtsp_adapter import RtspFactory
from appliance.rtsp.sessions import RtspServer
from catalog import open_catalog
from tests.helpers.memory_media import MemoryMedia

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def make(clock: Clock, max_connections: int = 10):
    catalog = open_catalog(None)
    catalog.add_title("movie", container="mpegts", media_path="/x", duration_ns=10**10,
                      state="complete", now=0.0,
                      tracks=[dict(track_index=0, media_type="video", codec="MP2T",
                                   payload_type=33, clock_rate=90000, hint_path="/x.hint",
                                   packets=10)])
    media = MemoryMedia()
    server = RtspServer(titles=catalog, media=media, session_timeout=60)
    requests = []
    factory = RtspFactory(server, max_connections=max_connections,
                          on_request=lambda: requests.append(1), clock=clock.seconds)
    return server, factory, media, requests


def connect(factory):
    proto = factory.buildProtocol(PEER)
    if proto is None:
        return None, None
    transport = StringTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    return proto, transport


def test_requests_are_answered_in_order_and_pipelined():
    clock = Clock()
    server, factory, media, requests = make(clock)
    proto, transport = connect(factory)
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"
                       b"DESCRIBE rtsp://h/movie RTSP/1.0\r\nCSeq: 2\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n")
    assert b"CSeq: 2\r\n" in out and b"m=video 0 RTP/AVP 33" in out
    assert len(requests) == 2
    assert not transport.disconnecting


def test_replies_are_not_held_back_by_nagle():
    class Recording(StringTransport):
        no_delay = False

        def setTcpNoDelay(self, enabled):  # noqa: N802 (Twisted API)
            self.no_delay = enabled
    _, factory, _, _ = make(Clock())
    proto = factory.buildProtocol(PEER)
    transport = Recording(peerAddress=PEER)
    proto.makeConnection(transport)
    assert transport.no_delay is True


def test_session_time_comes_from_the_clock():
    clock = Clock()
    clock.advance(500)
    server, factory, media, _ = make(clock)
    proto, transport = connect(factory)
    proto.dataReceived(b"SETUP rtsp://h/movie/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
                       b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n")
    assert b"200 OK" in transport.value()
    (session,) = server.sessions.values()
    assert session.last_seen == 500
    assert media.opened[0][1] == "127.0.0.1"  # RTP goes to the TCP peer


def test_malformed_request_gets_400_after_earlier_pipelined_answers():
    clock = Clock()
    server, factory, media, _ = make(clock)
    proto, transport = connect(factory)
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 7\r\n\r\nGARBAGE\x00\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n")
    assert b"RTSP/1.0 400 " in out
    assert transport.disconnecting


def test_byte_at_a_time_gives_the_same_answer():
    clock = Clock()
    _, factory, _, _ = make(clock)
    request = b"DESCRIBE rtsp://h/movie RTSP/1.0\r\nCSeq: 3\r\nAccept: application/sdp\r\n\r\n"
    whole_proto, whole = connect(factory)
    whole_proto.dataReceived(request)
    split_proto, split = connect(factory)
    for i in range(len(request)):
        split_proto.dataReceived(request[i:i + 1])
    assert split.value() == whole.value()


SETUP = (b"SETUP rtsp://h/movie/trackID=0 RTSP/1.0\r\nCSeq: %d\r\n"
         b"Transport: RTP/AVP;unicast;client_port=%d-%d\r\n\r\n")


def set_up_session(proto, cseq: int, port: int) -> None:
    proto.dataReceived(SETUP % (cseq, port, port + 1))


def test_connection_limit_makes_room_by_closing_the_idlest_connection_without_a_session():
    clock = Clock()
    _, factory, _, _ = make(clock, max_connections=2)
    a, ta = connect(factory)
    set_up_session(a, 1, 5000)                    # a holds a session: it stays
    clock.advance(1)
    b, tb = connect(factory)
    clock.advance(1)
    c, tc = connect(factory)             # full: b, idle and sessionless, makes room
    assert c is not None and tb.disconnecting and not ta.disconnecting
    b.connectionLost(None)
    assert factory.connections == 2
    set_up_session(c, 1, 5002)
    assert connect(factory) == (None, None)   # both hold sessions: refused
    assert factory.table.counters()["refused"] == 1
    a.connectionLost(None)
    assert connect(factory)[0] is not None and factory.connections == 2


def test_connections_per_address_are_limited():
    clock = Clock()
    server, _, _, _ = make(clock)
    factory = RtspFactory(server, max_connections=10, on_request=lambda: None,
                          clock=clock.seconds, max_connections_per_address=2)
    assert connect(factory)[0] and connect(factory)[0]
    assert connect(factory) == (None, None)
    other = IPv4Address("TCP", "127.0.0.2", 40000)
    assert factory.buildProtocol(other) is not None


def test_idle_connections_without_a_session_and_slow_requests_are_closed():
    clock = Clock()
    server, _, _, _ = make(clock)
    factory = RtspFactory(server, max_connections=10, on_request=lambda: None,
                          clock=clock.seconds, idle_timeout=30, request_timeout=10)
    idle, t_idle = connect(factory)
    playing, t_playing = connect(factory)
    set_up_session(playing, 1, 5000)
    slow, t_slow = connect(factory)
    slow.dataReceived(b"OPTIONS * RTSP/1.0\r\n")      # and then a byte now and then
    for _ in range(11):
        clock.advance(1)
        slow.dataReceived(b"X")
        factory.sweep()
    assert t_slow.disconnecting and not t_idle.disconnecting
    clock.advance(20)
    factory.sweep()
    assert t_idle.disconnecting                 # 31 s silent, no session
    assert not t_playing.disconnecting          # its session keeps it (its own timeout)
    assert factory.table.counters()["closed_idle"] == 1
    assert factory.table.counters()["closed_slow"] == 1


def test_a_request_flood_is_answered_503_then_cut_off():
    clock = Clock()
    server, _, _, _ = make(clock)
    factory = RtspFactory(server, max_connections=10, on_request=lambda: None,
                          clock=clock.seconds, requests_per_second=5)
    proto, transport = connect(factory)
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n" * 10)
    replies = transport.value().split(b"\r\n\r\n")[:-1]
    assert [r.split(b" ")[1] for r in replies] == [b"200"] * 10   # a burst of 10 is fine
    transport.clear()
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n")
    assert transport.value().startswith(b"RTSP/1.0 503 ") and b"Retry-After: 1" in transport.value()
    clock.advance(1)                            # five more a second
    transport.clear()
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n")
    assert transport.value().startswith(b"RTSP/1.0 200 ")
    proto.dataReceived(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\n\r\n" * 40)
    assert transport.disconnecting


def _timer_with_a_session(clock: Clock):
    """A session timer on ``clock`` and one session set up through the adapter."""
    server, factory, media, requests = make(clock)
    timer = SessionTimer(server, clock, clock=clock.seconds)
    timer.startService()
    proto, transport = connect(factory)
    set_up_session(proto, 1, 5000)
    timer.rearm()
    return server, media, proto, timer


def test_session_timer_expires_idle_sessions_on_the_clock():
    clock = Clock()
    server, media, proto, timer = _timer_with_a_session(clock)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(59)
    assert len(server.sessions) == 1
    clock.advance(2)
    assert not server.sessions
    assert media.opened[0][3].closed
    assert not clock.getDelayedCalls()
    timer.stopService()


def test_session_timer_follows_sessions_kept_alive_and_one_timer_is_armed():
    clock = Clock()
    server, media, proto, timer = _timer_with_a_session(clock)
    session = next(iter(server.sessions))
    for _ in range(3):                       # requests rearm: still one timer
        clock.advance(30)
        server.touch(session, clock.seconds())
        timer.rearm()
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(45)                        # the early timer fired and moved on
    assert len(server.sessions) == 1 and len(clock.getDelayedCalls()) == 1
    clock.advance(16)                        # 61 s after the last sign of life
    assert not server.sessions
    server.session_timeout = 5.0             # a reload shortens the timeout
    proto.dataReceived(b"SETUP rtsp://h/movie/trackID=0 RTSP/1.0\r\nCSeq: 2\r\n"
                       b"Transport: RTP/AVP;unicast;client_port=5002-5003\r\n\r\n")
    timer.reschedule()
    clock.advance(5.1)
    assert not server.sessions
    timer.stopService()
