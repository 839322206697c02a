"""Transport, Range, Session, RTP-Info and CSeq header values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtsp import (CSeqError, HeaderError, NptRange, RangeError, RTSPConnection,
                            SessionHeaderError, TransportError, TransportSpec, format_cseq,
                            format_range, format_rtp_info, format_session, format_transport,
                            parse_content_length, parse_cseq, parse_range, parse_rtp_info,
                            parse_session, parse_transport)

FIXTURES = Path(__file__).parent / "fixtures" / "rtsp"


def header_of(name: str, header: str) -> str:
    (req,) = RTSPConnection().receive_data((FIXTURES / name).read_bytes())
    return req.headers.get(header)


# ---------------------------------------------------------- Transport ---

@pytest.mark.parametrize("name, expected", [
    ("ffmpeg-5.1/setup-udp.rtsp",
     TransportSpec(delivery="unicast", client_port=(29556, 29557))),
    ("ffmpeg-5.1/setup-tcp.rtsp",
     TransportSpec(lower_transport="TCP", delivery="unicast", interleaved=(0, 1))),
    ("gstreamer-1.22/setup-udp.rtsp",
     TransportSpec(delivery="unicast", client_port=(41672, 41673))),
    ("gstreamer-1.22/setup-tcp.rtsp",
     TransportSpec(lower_transport="TCP", delivery="unicast", interleaved=(0, 1))),
    ("gstreamer-1.22/setup-multicast.rtsp", TransportSpec(delivery="multicast")),
    ("handwritten/vlc-live555-setup-udp.rtsp",
     TransportSpec(delivery="unicast", client_port=(56330, 56331))),
])
def test_real_client_transports(name: str, expected: TransportSpec) -> None:
    assert parse_transport(header_of(name, "Transport")) == [expected]


def test_rfc2326_alternatives_and_quoted_mode() -> None:
    value = ('RTP/AVP;multicast;ttl=127;mode="PLAY",\r\n'
             ' RTP/AVP;unicast;client_port=3456-3457;mode="PLAY"')
    # The connection unfolds the line break; parse what it would hand over.
    value = re.sub(r"\r\n[ \t]+", " ", value)
    assert parse_transport(value) == [
        TransportSpec(delivery="multicast", ttl=127, mode="PLAY"),
        TransportSpec(delivery="unicast", client_port=(3456, 3457), mode="PLAY"),
    ]
    (spec,) = parse_transport('RTP/AVP;unicast;client_port=5000-5001;mode="play, record"')
    assert spec.mode == "PLAY,RECORD"


def test_server_reply_fields() -> None:
    value = ("RTP/AVP;unicast;destination=192.0.2.7;source=192.0.2.1;"
             "client_port=5000-5001;server_port=6970-6971;ssrc=0A1B2C3D")
    (spec,) = parse_transport(value)
    assert spec == TransportSpec(delivery="unicast", destination="192.0.2.7", source="192.0.2.1",
                                 client_port=(5000, 5001), server_port=(6970, 6971),
                                 ssrc=0x0A1B2C3D)
    assert format_transport(spec) == value
    (short,) = parse_transport("RTP/AVP;unicast;ssrc=1234")
    assert short.ssrc == 0x1234


def test_single_ports_odd_ports_and_ipv6() -> None:
    (spec,) = parse_transport("RTP/AVP/UDP;unicast;client_port=5001;destination=[2001:db8::1]")
    assert spec.client_port == (5001, 5002)
    assert spec.destination == "[2001:db8::1]"
    (spec,) = parse_transport("rtp/avp/tcp;interleaved=4")
    assert (spec.lower_transport, spec.interleaved, spec.delivery) == ("TCP", (4, 5), None)


def test_unknown_parameters_are_kept_not_written() -> None:
    (spec,) = parse_transport("RTP/AVP;unicast;client_port=5000-5001;append;layers=2;"
                              "x-foo=\"a;b\";destination")
    assert spec.extra == (("append", None), ("layers", "2"), ("x-foo", '"a;b"'),
                          ("destination", None))
    assert spec.destination is None
    assert format_transport(spec) == "RTP/AVP;unicast;client_port=5000-5001"


def test_unsupported_profiles_are_dropped_among_alternatives() -> None:
    specs = parse_transport("RTP/SAVP;unicast;client_port=6000-6001,"
                            "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/SCTP;unicast")
    assert specs == [TransportSpec(delivery="unicast", client_port=(5000, 5001))]


@pytest.mark.parametrize("value", [
    "", " , ", "RTP/SAVP;unicast;client_port=5000-5001", "RTP/AVPF;unicast",
    "RAW/RAW/UDP;unicast", "RTP;unicast", "RTP/AVP/UDP/X;unicast",
    "RTP/AVP;unicast;client_port=0-1", "RTP/AVP;unicast;client_port=65535",
    "RTP/AVP;unicast;client_port=65536-65537", "RTP/AVP;unicast;client_port=5001-5000",
    "RTP/AVP;unicast;client_port=abc", "RTP/AVP;unicast;client_port=",
    "RTP/AVP;unicast;client_port", "RTP/AVP;unicast;client_port=-5000",
    "RTP/AVP;unicast;client_port=5000-5001;client_port=6000-6001",
    "RTP/AVP;unicast;multicast", "RTP/AVP;unicast=1", "RTP/AVP/TCP;interleaved=255",
    "RTP/AVP/TCP;interleaved=0-256", "RTP/AVP;ssrc=xyz", "RTP/AVP;ssrc=123456789",
    "RTP/AVP;ttl=256", "RTP/AVP;ttl=", 'RTP/AVP;mode="PLAY', "RTP/AVP;mode=1",
    "RTP/AVP;destination=a b", "RTP/AVP;un icast", "RTP/AVP;unicast," + "x" * 5000,
    "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP;server_port=0",
])
def test_bad_transports_are_461(value: str) -> None:
    with pytest.raises(TransportError) as info:
        parse_transport(value)
    assert info.value.status == 461


def test_transport_spec_validates_itself() -> None:
    for kwargs in ({"profile": "RTP/SAVP"}, {"lower_transport": "SCTP"},
                   {"delivery": "broadcast"}, {"client_port": (0, 1)},
                   {"server_port": (5000, 4999)}, {"interleaved": (0, 256)},
                   {"client_port": (True, 2)}, {"ttl": 300}, {"ssrc": -1},
                   {"ssrc": 1 << 32}, {"destination": "evil\r\nX: y"}, {"mode": "PLAY\r\n"},
                   {"extra": (("bad name", None),)}):
        with pytest.raises(TransportError):
            TransportSpec(**kwargs)


@pytest.mark.parametrize("value", [
    "RTP/AVP;unicast;client_port=5000-5001",
    "RTP/AVP/TCP;unicast;interleaved=0-1",
    "RTP/AVP;multicast;destination=232.1.1.1;port=5004-5005;ttl=16",
    'RTP/AVP;unicast;source=10.0.0.1;client_port=5000-5001;server_port=6970-6971;'
    'ssrc=DEADBEEF;mode="PLAY"',
])
def test_canonical_transport_strings_round_trip(value: str) -> None:
    (spec,) = parse_transport(value)
    assert format_transport(spec) == value


_pairs = st.integers(1, 65534).map(lambda p: (p, p + 1))
_specs = st.builds(
    TransportSpec,
    lower_transport=st.sampled_from(["UDP", "TCP"]),
    delivery=st.sampled_from([None, "unicast", "multicast"]),
    destination=st.one_of(st.none(), st.ip_addresses(v=4).map(str)),
    source=st.one_of(st.none(), st.ip_addresses(v=6).map(str)),
    interleaved=st.one_of(st.none(), st.integers(0, 254).map(lambda c: (c, c + 1))),
    client_port=st.one_of(st.none(), _pairs),
    server_port=st.one_of(st.none(), _pairs),
    port=st.one_of(st.none(), _pairs),
    ttl=st.one_of(st.none(), st.integers(0, 255)),
    ssrc=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
    mode=st.one_of(st.none(), st.sampled_from(["PLAY", "RECORD", "PLAY,RECORD"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_specs, min_size=1, max_size=3))
def test_formatted_transports_parse_back(specs: list[TransportSpec]) -> None:
    assert parse_transport(",".join(format_transport(s) for s in specs)) == specs


# -------------------------------------------------------------- Range ---

@pytest.mark.parametrize("value, start, end", [
    ("npt=0.000-", 0.0, None),           # ffmpeg, live555
    ("npt=0-3", 0.0, 3.0),               # GStreamer
    ("npt=5-", 5.0, None),
    ("npt=5.5-10", 5.5, 10.0),
    ("npt=now-", None, None),
    ("npt=0-", 0.0, None),
    ("npt=00:01:05.5-", 65.5, None),
    ("npt=1:00:00-1:00:01.25", 3600.0, 3601.25),
    ("NPT = 7. - 8", 7.0, 8.0),
    ("npt=5-5", 5.0, 5.0),
    ("npt=12.5-;time=19970123T143720Z", 12.5, None),
])
def test_npt_ranges(value: str, start: float | None, end: float | None) -> None:
    assert parse_range(value) == NptRange(start, end)


def test_real_client_ranges() -> None:
    assert parse_range(header_of("ffmpeg-5.1/play.rtsp", "Range")) == NptRange(0.0, None)
    assert parse_range(header_of("gstreamer-1.22/play.rtsp", "Range")) == NptRange(0.0, 3.0)


@pytest.mark.parametrize("value", [
    "smpte=10:07:00-10:07:33:05.01", "smpte-25=0:0:0-", "clock=19961108T142300Z-",
    "npt=10-5", "npt=-5", "npt=-5-", "npt=5", "npt=", "5-10", "npt=0-now", "npt=a-",
    "npt=00:60:00-", "npt=00:00:60-", "npt=.5-", "npt=0-1,npt=2-3", "npt=1e5-",
    "npt=" + "9" * 400 + "-", "npt=0-" + " " * 300, "npt=inf-", "npt=nan-", "npt=--",
])
def test_bad_ranges_are_457(value: str) -> None:
    with pytest.raises(RangeError) as info:
        parse_range(value)
    assert info.value.status == 457


def test_backwards_ranges_run_from_the_later_time() -> None:
    """A negative Scale's range is in the direction of play (what
    GStreamer's rtspsrc sends for a reverse seek)."""
    assert parse_range("npt=9-0", backwards=True) == NptRange(9.0, 0.0, True)
    assert parse_range("npt=9-", backwards=True) == NptRange(9.0, None, True)
    assert parse_range("npt=5-5", backwards=True) == NptRange(5.0, 5.0, True)
    with pytest.raises(RangeError, match="backwards") as info:
        parse_range("npt=0-9", backwards=True)
    assert info.value.status == 457
    with pytest.raises(RangeError, match="before it starts"):
        parse_range("npt=9-0")
    assert format_range(9, 0, backwards=True) == "npt=9.000-0.000"


@given(st.integers(0, 10**9), st.one_of(st.none(), st.integers(0, 10**6)))
def test_backwards_ranges_round_trip(start_ms: int, length_ms: int | None) -> None:
    start = start_ms / 1000
    end = None if length_ms is None else max(start_ms - length_ms, 0) / 1000
    text = format_range(start, end, backwards=True)
    assert parse_range(text, backwards=True) == NptRange(start, end, True)


def test_smpte_gets_a_clear_message() -> None:
    with pytest.raises(RangeError, match="only npt"):
        parse_range("smpte=0:10:00-")


def test_format_range() -> None:
    assert format_range(0, None) == "npt=0.000-"
    assert format_range(12.3456, 20) == "npt=12.346-20.000"
    assert format_range(None) == "npt=now-"
    for bad in ((-1, None), (5, 4), (float("nan"), None), (0, float("inf"))):
        with pytest.raises(RangeError):
            format_range(*bad)


@given(st.integers(0, 10**9), st.one_of(st.none(), st.integers(0, 10**6)))
def test_ranges_round_trip_at_millisecond_precision(start_ms: int, length_ms: int | None) -> None:
    start = start_ms / 1000
    end = None if length_ms is None else (start_ms + length_ms) / 1000
    assert parse_range(format_range(start, end)) == NptRange(start, end)


# ------------------------------------------------------------ Session ---

def test_sessions() -> None:
    assert parse_session(header_of("gstreamer-1.22/pause.rtsp", "Session")) == ("12345678", None)
    assert parse_session("12345678;timeout=60") == ("12345678", 60)
    assert parse_session(" Ab$-_.+9 ; Timeout = 5 ;x-ext=1") == ("Ab$-_.+9", 5)
    assert format_session("12345678") == "12345678"
    assert format_session("a1B2c3D4e5", 60) == "a1B2c3D4e5;timeout=60"
    assert parse_session(format_session("a1B2c3D4e5", 60)) == ("a1B2c3D4e5", 60)


@pytest.mark.parametrize("value", [
    "", "1234567", "1234 5678", "12345678;timeout=", "12345678;timeout=-1",
    "12345678;timeout=0", "12345678;timeout=x", "12345678;timeout=1;timeout=2",
    "1234/5678", "12345678;bad param", "x" * 300,
])
def test_bad_sessions_are_454(value: str) -> None:
    with pytest.raises(SessionHeaderError) as info:
        parse_session(value)
    assert info.value.status == 454


def test_format_session_refuses_weak_ids() -> None:
    for args in (("short",), ("has space!",), ("12345678", 0)):
        with pytest.raises(ValueError):
            format_session(*args)


# ----------------------------------------------------------- RTP-Info ---

def test_rtp_info() -> None:
    entries = [("rtsp://h/x/trackID=0", 45102, 12345678), ("rtsp://h/x/trackID=1", 30211, None)]
    value = format_rtp_info(entries)
    assert value == ("url=rtsp://h/x/trackID=0;seq=45102;rtptime=12345678,"
                     "url=rtsp://h/x/trackID=1;seq=30211")
    assert parse_rtp_info(value) == entries
    for bad in ([], [("rtsp://h/x;y", 1, 2)], [("rtsp://h/x,y", 1, 2)], [("a b", 1, 2)],
                [("rtsp://h/x", 65536, 0)], [("rtsp://h/x", 0, 1 << 32)]):
        with pytest.raises(ValueError):
            format_rtp_info(bad)
    for bad in ("seq=1", "url=rtsp://h/x;seq=x", "url=rtsp://h/x;seq", "url=a;url=b"):
        with pytest.raises(HeaderError):
            parse_rtp_info(bad)


# ------------------------------------------------ CSeq, Content-Length ---

def test_cseq_and_content_length() -> None:
    assert parse_cseq(" 42 ") == 42 and format_cseq(42) == "42"
    for bad in ("", "-1", "1.0", "x", "1" * 11, "\u0661"):
        with pytest.raises(CSeqError):
            parse_cseq(bad)
    assert parse_content_length(["10", "010"]) == 10
    for bad in ([], ["1", "2"], ["-1"], ["+1"], ["1 1"]):
        with pytest.raises(HeaderError) as info:
            parse_content_length(bad)
        assert info.value.status == 400
    with pytest.raises(HeaderError) as info:
        parse_content_length(["9" * 19])
    assert info.value.status == 413


# --------------------------------------------------------------- fuzz ---

_header_text = st.one_of(
    st.text(max_size=120),
    st.text("RTPAVUDCnicastl_or=-0123456789;,\"/ .:mdeTNSOW", max_size=120),
)


@settings(max_examples=400, deadline=None)
@given(_header_text)
def test_parsers_return_or_raise_their_own_error(text: str) -> None:
    for parse, error in ((parse_transport, TransportError), (parse_range, RangeError),
                         (parse_session, SessionHeaderError), (parse_rtp_info, HeaderError),
                         (parse_cseq, CSeqError)):
        try:
            parse(text)
        except error:
            pass


@settings(max_examples=300, deadline=None)
@given(st.text("npt=now0123456789.:-; ,smpteclock", max_size=40), st.booleans())
def test_range_fuzz_results_are_valid(text: str, backwards: bool) -> None:
    try:
        r = parse_range(text, backwards=backwards)
    except RangeError:
        return
    assert r.start is None or r.start >= 0
    assert r.backwards == backwards
    if r.end is not None and r.start is not None:
        assert r.end <= r.start if backwards else r.end >= r.start
