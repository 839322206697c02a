"""The sans-IO RTSP connection: real client requests, limits, errors, fuzz."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtsp import (NEED_DATA, ConnectionClosed, Headers, InterleavedFrame,
                            LocalProtocolError, RemoteProtocolError, Request, Response,
                            RTSPConnection, reason_phrase, response_for)
from appliance.rtsp import connection as connection_module

FIXTURES = Path(__file__).parent / "fixtures" / "rtsp"
REQUEST_FILES = sorted(p for p in FIXTURES.rglob("*.rtsp") if p.name != "options-rtsp2.rtsp")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def feed_bytewise(conn: RTSPConnection, data: bytes) -> list:
    events: list = []
    for i in range(len(data)):
        events += conn.receive_data(data[i:i + 1])
    return events


def request(method: str = "OPTIONS", cseq: int = 1, body: bytes = b"",
            extra: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"{method} rtsp://h/x RTSP/1.0", f"CSeq: {cseq}",
             *(f"{n}: {v}" for n, v in extra or [])]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def remote_error(data: bytes, **limits: int) -> RemoteProtocolError:
    conn = RTSPConnection("server", **limits)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(data)
        conn.receive_data(b"")
    return info.value


# ------------------------------------------------------ real requests ---

def test_every_fixture_is_found() -> None:
    assert len(REQUEST_FILES) >= 20


@pytest.mark.parametrize("path", REQUEST_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_whole_and_bytewise_give_the_same_request(path: Path) -> None:
    data = path.read_bytes()
    whole = RTSPConnection().receive_data(data)
    assert len(whole) == 1 and isinstance(whole[0], Request)
    assert feed_bytewise(RTSPConnection(), data) == whole
    req = whole[0]
    assert data.startswith(f"{req.method} {req.target} RTSP/1.0\r\n".encode())
    assert req.cseq == int(re.search(rb"CSeq: (\d+)", data).group(1))
    assert len(req.body) == int(req.headers.get("Content-Length", "0"))


@pytest.mark.parametrize("path", REQUEST_FILES[:6], ids=lambda p: p.name)
def test_bare_lf_line_ends_give_the_same_request(path: Path) -> None:
    data = path.read_bytes()
    head, sep, body = data.partition(b"\r\n\r\n")
    bare = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    assert RTSPConnection().receive_data(bare) == RTSPConnection().receive_data(data)


def test_ffmpeg_session_pipelined_in_one_chunk() -> None:
    names = ["options", "describe", "setup-udp", "play", "get_parameter", "teardown"]
    data = b"".join(fixture(f"ffmpeg-5.1/{n}.rtsp") for n in names)
    events = RTSPConnection().receive_data(data)
    assert [e.method for e in events] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY",
                                         "GET_PARAMETER", "TEARDOWN"]
    assert events[1].headers.get("accept") == "application/sdp"
    assert events[2].headers.get("TRANSPORT") == "RTP/AVP/UDP;unicast;client_port=29556-29557"
    assert events[3].headers.get("Range") == "npt=0.000-"


def test_gstreamer_tcp_session_with_interleaved_rtcp_between_requests() -> None:
    rtcp = fixture("gstreamer-1.22/interleaved-rtcp.bin")
    data = (fixture("gstreamer-1.22/setup-tcp.rtsp") + fixture("gstreamer-1.22/play.rtsp")
            + rtcp + fixture("gstreamer-1.22/teardown.rtsp"))
    for events in (RTSPConnection().receive_data(data), feed_bytewise(RTSPConnection(), data)):
        assert [type(e).__name__ for e in events] == ["Request", "Request",
                                                      "InterleavedFrame", "Request"]
        frame = events[2]
        assert frame.channel == 1 and frame.data == rtcp[4:]
        assert events[0].headers.get("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"


def test_get_parameter_body_is_delivered() -> None:
    data = fixture("handwritten/rfc2326-get_parameter-body.rtsp")
    (req,) = RTSPConnection().receive_data(data)
    assert req.method == "GET_PARAMETER" and req.cseq == 431
    assert req.body == b"packets_received\r\njitter\r\n"


def test_gstreamer_rtsp2_options_is_answered_505() -> None:
    err = remote_error(fixture("gstreamer-1.22/options-rtsp2.rtsp"))
    assert err.status == 505


def test_blank_lines_between_messages_are_skipped() -> None:
    data = b"\r\n\r\n" + request(cseq=1) + b"\r\n\n\r\n" + request(cseq=2)
    events = RTSPConnection().receive_data(data)
    assert [e.cseq for e in events] == [1, 2]


def test_crlf_flood_is_consumed_without_growing_the_buffer() -> None:
    conn = RTSPConnection()
    for _ in range(100):
        assert conn.receive_data(b"\r\n" * 5000) == []
    assert conn.receive_data(request()) != []
    assert conn.receive_data(b"") == [ConnectionClosed()]


def test_folded_header_is_unfolded() -> None:
    data = b"OPTIONS * RTSP/1.0\r\nCSeq: 7\r\nX-Long: one\r\n  two\r\n\tthree\r\n\r\n"
    (req,) = RTSPConnection().receive_data(data)
    assert req.headers.get("X-Long") == "one two three"
    assert req.target == "*"


def test_folded_first_header_is_rejected() -> None:
    assert remote_error(b"OPTIONS * RTSP/1.0\r\n CSeq: 7\r\n\r\n").status == 400


# ------------------------------------------------------------- errors ---

@pytest.mark.parametrize("data", [
    b"OPTIONS * RTSP/1.0\r\nUser-Agent: x\r\n\r\n",             # no CSeq
    b"OPTIONS * RTSP/1.0\r\nCSeq: one\r\n\r\n",                 # CSeq not a number
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n",        # conflicting CSeq
    b"OPT(IONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",                  # method not a token
    b"OPTIONS  * RTSP/1.0\r\nCSeq: 1\r\n\r\n",                  # two spaces
    b"OPTIONS *\r\nCSeq: 1\r\n\r\n",                            # no version
    b"OPTIONS * RTSP/1.0\r\nCSeq : 1\r\n\r\n",                  # blank before colon
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nNo colon here\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\rb\r\n\r\n",        # bare CR in a value
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\x00b\r\n\r\n",      # NUL in a value
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: \xff\xfe\r\n\r\n",    # not UTF-8
    b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n",                      # a response to a server
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 1x\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: \r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: \xd9\xa1\r\n\r\n",  # Arabic-Indic 1
])
def test_malformed_requests_are_answered_400(data: bytes) -> None:
    assert remote_error(data).status == 400


@pytest.mark.parametrize("version", [b"RTSP/2.0", b"RTSP/1.1", b"HTTP/1.1"])
def test_other_versions_are_answered_505(version: bytes) -> None:
    assert remote_error(b"OPTIONS * " + version + b"\r\nCSeq: 1\r\n\r\n").status == 505


def test_repeated_equal_content_length_is_accepted() -> None:
    data = (b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 2\r\n"
            b"Content-length: 02\r\n\r\nab")
    (req,) = RTSPConnection().receive_data(data)
    assert req.body == b"ab"


def test_body_over_the_limit_is_413_before_the_body_arrives() -> None:
    conn = RTSPConnection(max_body_bytes=100)
    head = b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 101\r\n\r\n"
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(head)
    assert info.value.status == 413
    assert remote_error(request(body=b"x" * 100), max_body_bytes=99).status == 413
    assert RTSPConnection(max_body_bytes=100).receive_data(request(body=b"x" * 100))


def test_absurd_content_length_is_413() -> None:
    data = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    assert remote_error(data, max_head_bytes=10000).status == 413


def test_head_limit_is_exact_and_independent_of_chunking() -> None:
    base = request()
    limit = len(base)
    assert len(RTSPConnection(max_head_bytes=limit).receive_data(base)) == 1
    assert len(feed_bytewise(RTSPConnection(max_head_bytes=limit), base)) == 1
    assert remote_error(base, max_head_bytes=limit - 1).status == 400
    with pytest.raises(RemoteProtocolError) as info:
        feed_bytewise(RTSPConnection(max_head_bytes=limit - 1), base)
    assert info.value.status == 400


def test_endless_head_is_stopped_at_the_limit() -> None:
    conn = RTSPConnection(max_head_bytes=8192)
    conn.receive_data(b"OPTIONS * RTSP/1.0\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(1000):
            conn.receive_data(b"X-Junk: " + b"a" * 100 + b"\r\n")
    assert info.value.status == 400
    assert len(conn._buf) == 0


def test_frame_over_the_limit_is_rejected() -> None:
    frame = b"$\x00\x00\x10" + b"r" * 16
    assert RTSPConnection(max_frame_bytes=20).receive_data(frame)
    assert remote_error(frame, max_frame_bytes=19).status == 400


def test_error_state_sticks() -> None:
    conn = RTSPConnection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"BAD\r\n\r\n")
    for more in (request(), b""):
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(more)
        assert info.value.status == 400


def test_events_before_an_error_ride_on_it() -> None:
    conn = RTSPConnection()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(request(cseq=1) + request(cseq=2) + b"OPTIONS * RTSP/1.0\r\n\r\n")
    assert [e.cseq for e in info.value.events] == [1, 2]


# ---------------------------------------------------------------- EOF ---

def test_clean_eof_gives_connection_closed_once() -> None:
    conn = RTSPConnection()
    assert conn.receive_data(request() + b"\r\n") != []
    assert conn.receive_data(b"") == [ConnectionClosed()]
    assert conn.receive_data(b"") == []
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


@pytest.mark.parametrize("partial", [
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n",                               # inside a head
    b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nab",  # inside a body
    b"$\x00\x00\x10abc",                                                  # inside a frame
    b"$\x00",                                                             # inside a frame header
])
def test_eof_inside_a_message_is_an_error(partial: bytes) -> None:
    conn = RTSPConnection()
    assert conn.receive_data(partial) == []
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"")


# -------------------------------------------------------- linear time ---

class CountingSearch:
    """Wraps the head-end regex and adds up how many bytes it was asked to scan."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, buf: bytes | bytearray, pos: int = 0) -> re.Match[bytes] | None:
        self.scanned += len(buf) - pos
        return self.pattern.search(buf, pos)


def test_bytewise_feeding_scans_each_byte_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CountingSearch(connection_module._HEAD_END_RE)
    monkeypatch.setattr(connection_module, "_HEAD_END_RE", counter)
    data = request(extra=[(f"X-H{i}", "v" * 50) for i in range(300)])
    conn = RTSPConnection(max_head_bytes=len(data), max_headers=400)
    assert len(feed_bytewise(conn, data)) == 1
    # Quadratic rescanning would be about len(data)**2 / 2 bytes.
    assert counter.scanned <= 3 * len(data)


def test_too_many_header_lines_are_400() -> None:
    conn = RTSPConnection(max_headers=8)
    assert len(conn.receive_data(request(extra=[(f"X-H{i}", "v") for i in range(7)]))) == 1
    with pytest.raises(RemoteProtocolError, match="header lines, over 8") as exc:
        conn.receive_data(request(extra=[(f"X-H{i}", "v") for i in range(8)]))
    assert exc.value.status == 400


def test_mid_message_says_a_request_is_begun_and_unfinished() -> None:
    conn = RTSPConnection()
    assert not conn.mid_message
    conn.receive_data(b"\r\n")                 # blank lines between messages
    assert not conn.mid_message
    conn.receive_data(b"OPTIONS * RTSP/1.0\r\nCSe")
    assert conn.mid_message
    conn.receive_data(b"q: 1\r\n\r\n")
    assert not conn.mid_message


def test_many_pipelined_requests_in_one_chunk() -> None:
    data = b"".join(request(cseq=i) for i in range(5000))
    events = RTSPConnection().receive_data(data)
    assert [e.cseq for e in events] == list(range(5000))


# --------------------------------------------------------- client role ---

def test_client_reads_responses_and_frames() -> None:
    sdp = b"v=0\r\n"
    data = (b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: 5\r\n\r\n" + sdp + b"$\x00\x00\x03abc"
            + b"RTSP/1.0 454 Session Not Found\r\nCSeq: 3\r\n\r\n"
            + b"RTSP/1.0 200\r\nCSeq: 4\r\n\r\n")
    for events in (RTSPConnection("client").receive_data(data),
                   feed_bytewise(RTSPConnection("client"), data)):
        ok, frame, missing, bare = events
        assert (ok.status, ok.reason, ok.body, ok.cseq) == (200, "OK", sdp, 2)
        assert frame == InterleavedFrame(0, b"abc")
        assert (missing.status, missing.reason) == (454, "Session Not Found")
        assert (bare.status, bare.reason) == (200, "")


def test_client_rejects_a_request_and_a_bad_status_line() -> None:
    for data in (request(), b"RTSP/1.0 20 OK\r\nCSeq: 1\r\n\r\n"):
        conn = RTSPConnection("client")
        with pytest.raises(RemoteProtocolError):
            conn.receive_data(data)


# --------------------------------------------------------------- send ---

def test_server_response_round_trips_to_a_client() -> None:
    server, client = RTSPConnection("server"), RTSPConnection("client")
    (req,) = server.receive_data(fixture("ffmpeg-5.1/describe.rtsp"))
    resp = response_for(req, 200, [("Content-Type", "application/sdp")], b"v=0\r\n")
    wire = server.send(resp)
    assert wire == (b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\n"
                    b"Content-Length: 5\r\n\r\nv=0\r\n")
    (got,) = client.receive_data(wire)
    assert got == Response(200, "OK", resp.headers.with_header("Content-Length", "5"), b"v=0\r\n")


def test_client_request_round_trips_to_a_server() -> None:
    client, server = RTSPConnection("client"), RTSPConnection("server")
    req = Request("SET_PARAMETER", "rtsp://h/x", [("CSeq", "9"), ("Session", "abcdefgh")],
                  b"k: v\r\n")
    wire = client.send(req)
    assert b"\r\nContent-Length: 6\r\n\r\nk: v\r\n" in wire
    (got,) = server.receive_data(wire)
    assert (got.method, got.target, got.body, got.cseq) == (req.method, req.target, req.body, 9)


def test_frames_round_trip_both_ways() -> None:
    payload = os.urandom(1500)
    for sender, receiver in (("server", "client"), ("client", "server")):
        wire = RTSPConnection(sender).send(InterleavedFrame(3, payload))
        assert wire[:4] == b"$\x03\x05\xdc"
        assert RTSPConnection(receiver).receive_data(wire) == [InterleavedFrame(3, payload)]


def test_roles_limit_what_may_be_sent() -> None:
    req = Request("OPTIONS", "*", [("CSeq", "1")])
    with pytest.raises(LocalProtocolError):
        RTSPConnection("server").send(req)
    with pytest.raises(LocalProtocolError):
        RTSPConnection("client").send(Response(200, headers=[("CSeq", "1")]))
    with pytest.raises(LocalProtocolError):
        RTSPConnection("client").send(Request("OPTIONS", "*", [("CSeq", "1")], version="RTSP/2.0"))
    with pytest.raises(ValueError):
        RTSPConnection("proxy")


def test_nothing_is_sent_after_connection_closed() -> None:
    conn = RTSPConnection("server")
    assert conn.send(ConnectionClosed()) == b""
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, headers=[("CSeq", "1")]))


def test_a_server_can_still_answer_after_a_receive_error() -> None:
    conn = RTSPConnection("server")
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"OPTIONS * RTSP/1.0\r\n\r\n")
    wire = conn.send(Response(info.value.status))
    assert wire == b"RTSP/1.0 400 Bad Request\r\n\r\n"
    assert conn.send_error(505) == b"RTSP/1.0 505 RTSP Version not supported\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        RTSPConnection("client").send_error(400)


# ------------------------------------------------------------- events ---

@pytest.mark.parametrize("pairs", [
    [("CSeq", "1"), ("X-Evil", "a\r\nInjected: yes")],
    [("CSeq", "1"), ("X-Evil", "a\nb")],
    [("CSeq", "1"), ("X-Evil", "a\x00b")],
    [("CSeq", "1"), ("Bad Name", "x")],
    [("CSeq", "1"), ("Bad:Name", "x")],
    [("CSeq", "1"), ("", "x")],
    [("CSeq", "1\r\nX: y")],
    [("CSeq", "1"), ("Content-Length", "3")],   # body is empty
    [("CSeq", "-1")],
    [("User-Agent", "no cseq")],
])
def test_invalid_requests_cannot_be_built(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(LocalProtocolError):
        Request("OPTIONS", "*", pairs)


@pytest.mark.parametrize("kwargs", [
    {"method": "GET PARAM"}, {"method": ""}, {"target": "rtsp://h/a b"},
    {"target": ""}, {"version": "RTSP/1"}, {"body": "text"},
])
def test_invalid_request_fields(kwargs: dict) -> None:
    args = {"method": "OPTIONS", "target": "*", "headers": [("CSeq", "1")], **kwargs}
    with pytest.raises(LocalProtocolError):
        Request(**args)


def test_response_and_frame_validation() -> None:
    assert Response(461).reason == "Unsupported transport"
    assert Response(299).reason == "Success"
    for bad in ({"status": 99}, {"status": 1000}, {"status": True},
                {"status": 200, "reason": "OK\r\nX: y"}):
        with pytest.raises(LocalProtocolError):
            Response(**bad)
    for channel, data in ((256, b""), (-1, b""), (0, b"x" * 65536)):
        with pytest.raises(LocalProtocolError):
            InterleavedFrame(channel, data)
    assert InterleavedFrame(0, bytearray(b"ab")).data == b"ab"


def test_events_are_immutable() -> None:
    req = Request("OPTIONS", "*", [("CSeq", "1")])
    with pytest.raises(AttributeError):
        req.method = "PLAY"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        req.headers._items = ()  # type: ignore[misc]


def test_headers_multimap() -> None:
    h = Headers([("CSeq", "1"), ("Via", "a"), ("via", " b "), ("X", "")])
    assert h.get("cseq") == "1" and h.get("VIA") == "a" and h.get("nope") is None
    assert h.get_all("Via") == ["a", "b"]
    assert list(h) == [("CSeq", "1"), ("Via", "a"), ("via", "b"), ("X", "")]
    assert "x" in h and "y" not in h and len(h) == 4
    assert h == Headers([("cseq", "1"), ("VIA", "a"), ("Via", "b"), ("x", "")])
    assert h != Headers([("Via", "a"), ("CSeq", "1"), ("via", "b"), ("X", "")])
    replaced = h.with_header("VIA", "c")
    assert list(replaced) == [("CSeq", "1"), ("VIA", "c"), ("X", "")]
    assert list(h.without("via")) == [("CSeq", "1"), ("X", "")]
    assert Headers({"CSeq": 5}).get("CSeq") == "5"
    assert Headers(h) == h and hash(Headers(h)) == hash(h)


def test_need_data_is_a_singleton() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert type(NEED_DATA)() is NEED_DATA


# ------------------------------------------------- helpers and statuses ---

def test_response_for_copies_cseq_and_session() -> None:
    (play,) = RTSPConnection().receive_data(fixture("gstreamer-1.22/play.rtsp"))
    resp = response_for(play, 200, [("Range", "npt=0.000-")])
    assert list(resp.headers) == [("CSeq", "4"), ("Session", "12345678"), ("Range", "npt=0.000-")]
    (setup,) = RTSPConnection().receive_data(fixture("gstreamer-1.22/setup-udp.rtsp"))
    resp = response_for(setup, 200, [("Session", "12345678;timeout=60")])
    assert resp.headers.get_all("Session") == ["12345678;timeout=60"]
    assert list(response_for(setup, 461).headers) == [("CSeq", "3")]
    with pytest.raises(LocalProtocolError):
        response_for(setup, 200, [("CSeq", "4")])


RFC2326_STATUSES = {
    200: "OK", 301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Time-out", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    415: "Unsupported Media Type", 451: "Parameter Not Understood",
    452: "Conference Not Found", 453: "Not Enough Bandwidth", 454: "Session Not Found",
    455: "Method Not Valid in This State", 456: "Header Field Not Valid for Resource",
    457: "Invalid Range", 458: "Parameter Is Read-Only",
    459: "Aggregate operation not allowed", 460: "Only aggregate operation allowed",
    461: "Unsupported transport", 462: "Destination unreachable",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "RTSP Version not supported", 551: "Option not supported",
}


def test_reason_phrases_follow_rfc2326() -> None:
    for status, phrase in RFC2326_STATUSES.items():
        assert reason_phrase(status) == phrase
    assert reason_phrase(599) == "Server Error"
    with pytest.raises(ValueError):
        reason_phrase(42)


# --------------------------------------------------------------- fuzz ---

def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8),
       st.sampled_from(["server", "client"]))
def test_random_bytes_give_events_or_remote_errors(data: bytes, cuts: list[int], role: str) -> None:
    conn = RTSPConnection(role, max_head_bytes=256, max_body_bytes=64, max_frame_bytes=128)
    try:
        for piece in chunked(data, cuts):
            if piece:
                conn.receive_data(piece)
        conn.receive_data(b"")
    except RemoteProtocolError as exc:
        assert 400 <= exc.status <= 599


_token = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!", min_size=1,
                 max_size=12)
_value = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30).map(
    lambda s: s.strip(" \t"))
_messages = st.one_of(
    st.builds(lambda m, c, hs, b: Request(m, "rtsp://h/x", [("CSeq", str(c)), *hs], b),
              _token, st.integers(0, 10**9), st.lists(st.tuples(_token, _value), max_size=5)
              .filter(lambda hs: all(n.lower() not in ("cseq", "content-length") for n, _ in hs)),
              st.binary(max_size=50)),
    st.builds(InterleavedFrame, st.integers(0, 255), st.binary(max_size=300)),
)
_garbage = st.sampled_from([b"GARBAGE\r\n\r\n", b"$", b"OPTIONS * RTSP/1.0\r\n\r\n",
                            b"X\x00\r\n\r\n", b"RTSP/1.0 200 OK\r\n\r\n"])


@settings(max_examples=100, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=6), st.lists(st.integers(0, 3000), max_size=10),
       st.one_of(st.none(), _garbage))
def test_sent_messages_are_received_intact_in_any_chunking(
        messages: list, cuts: list[int], garbage: bytes | None) -> None:
    client = RTSPConnection("client")
    wire = b"".join(client.send(m) for m in messages)
    server = RTSPConnection("server")
    received: list = []
    try:
        for piece in chunked(wire + (garbage or b""), cuts):
            if piece:
                received += server.receive_data(piece)
        received += server.receive_data(b"")
    except RemoteProtocolError as exc:
        assert garbage is not None
        received += exc.events
    assert len(received) >= len(messages)
    for sent, got in zip(messages, received):
        if isinstance(sent, InterleavedFrame):
            assert got == sent
        else:
            assert (got.method, got.target, got.cseq, got.body) == (
                sent.method, sent.target, sent.cseq, sent.body)
            assert list(got.headers.without("Content-Length")) == list(sent.headers)
