"""What is fuzzed, and the one invariant each target checks per input.

A target takes bytes (text targets decode them as UTF-8 with
replacement: header values reach the parsers as ``str``) and either
returns or raises its parser's own error (``allowed``). Anything else,
including a failed ``assert`` on the target's invariant, is a fault.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from appliance.auth import AccessRules, AuthHeaderError, NonceStore, RtspGate, parse_htdigest
from appliance.auth.digest import ha1
from appliance.auth.header import parse_authorization
from appliance.rtsp import (RemoteProtocolError, Request, RTSPConnection,
                            format_range, format_rtp_info, format_session, format_transport,
                            parse_range, parse_rtp_info, parse_session, parse_transport)
from appliance.rtsp.errors import HeaderError, RangeError, SessionHeaderError, TransportError
from rtpengine.rtcp import (RtcpError, build_bye, build_receiver_report, build_sdes_cname,
                            build_sender_report, parse_compound)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtsp"


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``check(data)`` runs it on an input of at most
    ``max_len`` bytes; ``allowed`` is the error it may raise; ``seeds``
    are where the mutator starts; ``weight`` its share of a campaign."""

    name: str
    check: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]
    max_len: int
    weight: int = 1


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


@functools.lru_cache(maxsize=None)
def fixture_messages() -> tuple[bytes, ...]:
    """Every captured request, byte for byte."""
    return tuple(p.read_bytes() for p in sorted(FIXTURES.rglob("*.rtsp")))


def _header_values(name: str) -> tuple[bytes, ...]:
    values = []
    for message in fixture_messages():
        for line in message.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                values.append(value.strip())
    return tuple(values)


# -- RTSP messages -------------------------------------------------------------


def _feed(data: bytes, step: int) -> tuple[list, int | None]:
    conn = RTSPConnection("server", max_head_bytes=1024, max_body_bytes=256,
                          max_frame_bytes=512)
    events: list = []
    try:
        for start in range(0, len(data), step):
            events += conn.receive_data(data[start:start + step])
        events += conn.receive_data(b"")
    except RemoteProtocolError as exc:
        assert 400 <= exc.status <= 599, exc
        return events + exc.events, exc.status
    return events, None


def check_rtsp_connection(data: bytes) -> None:
    """Bytes fed whole and in small pieces give the same events and the
    same error: the parser does not depend on how TCP cut the stream."""
    whole = _feed(data, max(len(data), 1))
    pieces = _feed(data, len(data) % 13 + 1)
    assert whole == pieces, (whole, pieces)


def check_transport(data: bytes) -> None:
    """A parsed Transport formats back to the same specs (extensions aside)."""
    for spec in parse_transport(_text(data)):
        again = parse_transport(format_transport(spec))
        assert again == [replace(spec, extra=())], (spec, again)


def check_range(data: bytes) -> None:
    """A parsed Range is ordered and formats back to itself (to the ms)."""
    rng = parse_range(_text(data))
    if (rng.start or 0) < 1e9 and (rng.end or 0) < 1e9:
        again = parse_range(format_range(rng.start, rng.end))
        for a, b in ((rng.start, again.start), (rng.end, again.end)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= 0.0005), (rng,
                                                                                       again)


def check_session(data: bytes) -> None:
    """A parsed Session formats back to itself."""
    session_id, timeout = parse_session(_text(data))
    assert parse_session(format_session(session_id, timeout)) == (session_id, timeout)


def check_rtp_info(data: bytes) -> None:
    """Parsed RTP-Info entries format back to themselves."""
    entries = parse_rtp_info(_text(data))
    assert parse_rtp_info(format_rtp_info(entries)) == entries


# -- auth ----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _gate() -> RtspGate:
    users = parse_htdigest(f"alice:kvod:{ha1('MD5', 'alice', 'kvod', 'wonder')}\n"
                           f"alice:kvod:{ha1('SHA-256', 'alice', 'kvod', 'wonder')}")
    return RtspGate(users, "kvod", AccessRules.parse(["/public/ open"]),
                    NonceStore(lifetime=60, capacity=64, key=b"f" * 32))


def check_authorization(data: bytes) -> None:
    """The parser gives a lower-case scheme and names; the gate answers
    any header with nothing or a 400/401/403, never an exception."""
    value = _text(data)
    denial = _gate().check(method="DESCRIBE", target="rtsp://h/film", authorization=[value],
                           connection="c", peer="192.0.2.1", now=1.0)
    assert denial is None or denial.status in (400, 401, 403), denial
    creds = parse_authorization(value)
    assert creds.scheme == creds.scheme.lower() and creds.scheme
    assert all(k == k.lower() for k in creds.params)


_AUTH_SEEDS = (
    b'Digest username="alice", realm="kvod", nonce="19a-0f3c-ab", uri="rtsp://h/film", '
    b'response="e0652ec51c3de8139203d0705d3f204d", algorithm="MD5", qop="auth", '
    b'cnonce="b8983461f0689289", nc=00000001',
    b'Digest username="alice", realm="kvod", nonce="19a-0f3c-ab", uri="rtsp://h/film", '
    b'response="8aa263d225c35f5947e1c97d30a8d08b"',
    b'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
    b'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
    b'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
    b'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
    b'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", userhash=false',
    b"Basic YWxpY2U6d29uZGVy",
)


# -- RTCP ----------------------------------------------------------------------


def check_rtcp(data: bytes) -> None:
    """Parsed packets pack back to a compound that parses the same."""
    packets = parse_compound(data)
    packed = b"".join(p.pack() for p in packets)
    assert parse_compound(packed) == packets


def _rtcp_seeds() -> tuple[bytes, ...]:
    sr = build_sender_report(0x1234, 1.7e9, 90000, 10, 13160)
    rr = build_receiver_report(0x5678)
    return (sr + build_sdes_cname(0x1234, "kvod@host") + build_bye(0x1234, "done"),
            rr + build_sdes_cname(0x5678, "viewer"), sr + build_bye(0x1234),
            (FIXTURES / "gstreamer-1.22" / "rtcp-rr-sdes.bin").read_bytes())


# -- the sans-IO server, one input a connection --------------------------------


def check_rtsp_server(data: bytes) -> None:
    """Every request parsed from the bytes gets one response with its CSeq,
    never a 500 (a caught bug); the sessions it made are released."""
    from tests.fuzz.server import server_harness
    # every other input behind an auth gate, so it meets hostile targets too
    harness = server_harness(gated=len(data) % 2 == 1)
    try:
        events, _ = _feed(data, max(len(data), 1))
        for event in events:
            if isinstance(event, Request):
                harness.answer(event)
    finally:
        harness.reset()


def targets() -> list[Target]:
    """Every target, in the order the runner reports them."""
    messages = fixture_messages()
    return [
        Target("rtsp_connection", check_rtsp_connection, (), messages, 3000, 3),
        Target("rtsp_server", check_rtsp_server, (), messages, 3000, 2),
        Target("transport", check_transport, (TransportError,),
               _header_values("Transport") + (b'RTP/AVP;multicast;destination="224.2.0.1";'
                                              b'ttl=16;port=3456-3457;mode="PLAY,RECORD", '
                                              b'RTP/SAVP;unicast;client_port=4588-4589',),
               4200, 2),
        Target("range", check_range, (RangeError,),
               _header_values("Range") + (b"npt=00:01:05.5-00:02:00", b"npt=now-",
                                          b"npt=5-;time=19970123T143720Z"), 300),
        Target("session", check_session, (SessionHeaderError,),
               _header_values("Session") + (b"47112344;timeout=60", b"ABCDEF0123456789"), 300),
        Target("rtp_info", check_rtp_info, (HeaderError,),
               (b"url=rtsp://h/x/trackID=0;seq=45102;rtptime=12345678,"
                b"url=rtsp://h/x/trackID=1;seq=30211",), 600),
        Target("authorization", check_authorization, (AuthHeaderError,), _AUTH_SEEDS, 4200, 2),
        Target("rtcp", check_rtcp, (RtcpError,), _rtcp_seeds(), 2000, 2),
    ]
