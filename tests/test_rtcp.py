"""RTCP model: NTP time, building, parsing real and hostile compounds."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtsp import InterleavedFrame, RTSPConnection
from rtpengine.rtcp import (MAX_COMPOUND_BYTES, SDES_CNAME, Bye, RawPacket,
                            ReceiverReport, ReportBlock, RtcpError, SdesChunk, SenderReport,
                            SourceDescription, build_bye, build_compound,
                            build_receiver_report, build_sdes_cname, build_sender_report,
                            ntp_middle32, ntp_to_unix, parse_compound, unix_to_ntp)

FIXTURES = Path(__file__).parent / "fixtures" / "rtsp" / "gstreamer-1.22"


# ------------------------------------------------------------- NTP time ---

def test_ntp_conversion_known_values() -> None:
    assert unix_to_ntp(0) == 2_208_988_800 << 32
    assert unix_to_ntp(1.5) == (2_208_988_801 << 32) | 0x80000000
    assert unix_to_ntp(-2_208_988_800) == 0
    assert ntp_to_unix(unix_to_ntp(1_700_000_000.25)) == 1_700_000_000.25
    # 2040 is in NTP era 1: the seconds field has wrapped.
    t2040 = 2_208_988_800.0
    assert unix_to_ntp(t2040) >> 32 == (t2040 + 2_208_988_800) - 2**32
    assert ntp_to_unix(unix_to_ntp(t2040)) == t2040
    assert ntp_middle32(0x0123456789ABCDEF) == 0x456789AB
    for bad in (float("nan"), float("inf"), -3e9):
        with pytest.raises(RtcpError):
            unix_to_ntp(bad)


# The 136 years NTP's two-era reading covers: 1968-01-20 to 2104-02-26.
@given(st.floats(-61_505_152, 4_233_462_143, allow_nan=False))
def test_ntp_round_trip_is_within_a_microsecond(t: float) -> None:
    assert abs(ntp_to_unix(unix_to_ntp(t)) - t) < 1e-6


def test_fraction_rounding_carries_into_seconds() -> None:
    almost = 10 + (2**32 - 0.4) / 2**32
    ntp = unix_to_ntp(almost)
    assert ntp & 0xFFFFFFFF == 0 and (ntp >> 32) == 2_208_988_811


# ------------------------------------------------------------- building ---

def test_sender_report_bytes() -> None:
    block = ReportBlock(0xAABBCCDD, 0x40, -2, 0x00010005, 17, 0x12345678, 0x10000)
    data = build_sender_report(0x11223344, 1.5, 0xDEADBEEF, 10, 13160, (block,))
    assert data == (
        b"\x81\xc8\x00\x0c" + b"\x11\x22\x33\x44"
        + struct.pack("!II", 2_208_988_801, 0x80000000)
        + b"\xde\xad\xbe\xef" + struct.pack("!II", 10, 13160)
        + b"\xaa\xbb\xcc\xdd" + b"\x40\xff\xff\xfe" + b"\x00\x01\x00\x05"
        + struct.pack("!III", 17, 0x12345678, 0x10000))


def test_counts_wrap_at_32_bits() -> None:
    (sr,) = parse_compound(build_sender_report(1, 0.0, 0, 2**32 + 5, 2**33 + 7))
    assert (sr.packet_count, sr.octet_count) == (5, 7)


def test_sdes_cname_and_bye_bytes() -> None:
    assert build_sdes_cname(0x01020304, "kvod@h") == (
        b"\x81\xca\x00\x04\x01\x02\x03\x04\x01\x06kvod@h" + b"\x00\x00\x00\x00")
    assert build_bye(0x01020304) == b"\x81\xcb\x00\x01\x01\x02\x03\x04"
    assert build_bye(0x01020304, "end") == b"\x81\xcb\x00\x02\x01\x02\x03\x04\x03end"
    assert build_bye(1, "done") == b"\x81\xcb\x00\x03\x00\x00\x00\x01\x04done\x00\x00\x00"


def test_sr_sdes_and_sr_sdes_bye_compounds_round_trip() -> None:
    sr = build_sender_report(0x4B564F44, 1_700_000_000.123, 90000, 100, 131600)
    sdes = build_sdes_cname(0x4B564F44, "kvod@vod.example.net")
    bye = build_bye(0x4B564F44, "teardown")
    for packets in ((sr, sdes), (sr, sdes, bye)):
        compound = build_compound(*packets)
        parsed = parse_compound(compound)
        assert b"".join(p.pack() for p in parsed) == compound
    report, description, goodbye = parse_compound(build_compound(sr, sdes, bye))
    assert isinstance(report, SenderReport) and report.ssrc == 0x4B564F44
    assert abs(report.ntp_time - 1_700_000_000.123) < 1e-6
    assert (report.rtp_timestamp, report.packet_count, report.octet_count) == (90000, 100, 131600)
    assert description.chunks[0].cname == "kvod@vod.example.net"
    assert goodbye == Bye((0x4B564F44,), "teardown")


def test_build_compound_checks_what_it_joins() -> None:
    sdes = build_sdes_cname(1, "x")
    with pytest.raises(RtcpError):
        build_compound(sdes, build_sender_report(1, 0.0, 0, 0, 0))
    with pytest.raises(RtcpError):
        build_compound(build_receiver_report(1) + b"\x00\x00")


def test_values_that_do_not_fit_are_refused() -> None:
    for kwargs in ({"fraction_lost": 256}, {"cumulative_lost": 1 << 23},
                   {"cumulative_lost": -(1 << 23) - 1}, {"ssrc": -1}, {"jitter": 1 << 32}):
        args = {"ssrc": 1, "fraction_lost": 0, "cumulative_lost": 0, "highest_seq": 0,
                "jitter": 0, "lsr": 0, "dlsr": 0, **kwargs}
        with pytest.raises(RtcpError):
            ReportBlock(**args)
    block = ReportBlock(1, 0, 0, 0, 0, 0, 0)
    with pytest.raises(RtcpError):
        build_receiver_report(1, (block,) * 32)
    with pytest.raises(RtcpError):
        build_sdes_cname(1, "x" * 256)
    with pytest.raises(RtcpError):
        build_sdes_cname(1, "")
    with pytest.raises(RtcpError):
        build_bye(1, "r" * 256)
    with pytest.raises(RtcpError):
        build_bye(1, "\ud800")
    with pytest.raises(RtcpError):
        SenderReport(1, 2**64, 0, 0, 0)
    with pytest.raises(RtcpError):
        RawPacket(204, 0, b"abc")


# ------------------------------------------------- real client reports ---

def check_gstreamer_report(packets: list) -> None:
    rr, sdes = packets
    assert isinstance(rr, ReceiverReport) and isinstance(sdes, SourceDescription)
    (block,) = rr.report_blocks
    assert block.ssrc == 0x1234                      # the SSRC the capture server sent
    assert block.fraction_lost == 0
    assert block.cumulative_lost == -1               # 0xFFFFFF on the wire: signed
    assert (block.lsr, block.dlsr) == (0, 0)
    assert block.round_trip_seconds(1_700_000_000.0) is None
    (chunk,) = sdes.chunks
    assert chunk.ssrc == rr.ssrc
    assert chunk.cname.startswith("user") and "@host-" in chunk.cname
    assert (6, b"GStreamer") in chunk.items          # the TOOL item


def test_gstreamer_udp_receiver_report() -> None:
    data = (FIXTURES / "rtcp-rr-sdes.bin").read_bytes()
    packets = parse_compound(data)
    check_gstreamer_report(packets)
    assert packets[0].report_blocks[0].highest_seq == 0x4BC
    assert packets[0].report_blocks[0].jitter == 0x387
    assert b"".join(p.pack() for p in packets) == data


def test_gstreamer_interleaved_receiver_report() -> None:
    data = (FIXTURES / "interleaved-rtcp.bin").read_bytes()
    (frame,) = RTSPConnection("server").receive_data(data)
    assert isinstance(frame, InterleavedFrame) and frame.channel == 1
    check_gstreamer_report(parse_compound(frame.data))


def test_round_trip_time_from_a_report() -> None:
    sent_at = 1_700_000_000.0
    lsr = ntp_middle32(unix_to_ntp(sent_at))
    block = ReportBlock(1, 0, 0, 0, 0, lsr, dlsr=int(0.25 * 65536))
    assert block.round_trip_seconds(sent_at + 0.3) == pytest.approx(0.05, abs=1e-4)
    assert block.loss_fraction == 0.0
    assert ReportBlock(1, 64, 0, 0, 0, 0, 0).loss_fraction == 0.25


# -------------------------------------------------------------- parsing ---

def test_padding_on_the_last_packet_is_accepted() -> None:
    rr = build_receiver_report(7)
    chunk = SdesChunk(7, ((SDES_CNAME, b"c"),)).pack()
    padded_sdes = b"\xa1\xca\x00\x03" + chunk + b"\x00\x00\x00\x04"
    rr_packet, sdes = parse_compound(rr + padded_sdes)
    assert rr_packet == ReceiverReport(7) and sdes.chunks[0].cname == "c"


def test_unknown_packet_types_are_kept_raw() -> None:
    app = b"\x81\xcc\x00\x02" + b"\x00\x00\x00\x07" + b"NAME"
    xr = b"\x80\xcf\x00\x01" + b"\x00\x00\x00\x07"
    _, raw_app, raw_xr = parse_compound(build_receiver_report(7) + app + xr)
    assert raw_app == RawPacket(204, 1, b"\x00\x00\x00\x07NAME")
    assert raw_xr == RawPacket(207, 0, b"\x00\x00\x00\x07")
    assert raw_app.pack() == app


def test_sr_extension_and_empty_sdes_chunk() -> None:
    sr = SenderReport(1, 5, 6, 7, 8, (), extension=b"EXT!")
    empty = SourceDescription((SdesChunk(9),))
    data = sr.pack() + empty.pack()
    assert empty.pack() == b"\x81\xca\x00\x02\x00\x00\x00\x09\x00\x00\x00\x00"
    assert parse_compound(data) == [sr, empty]


RR = build_receiver_report(0x55)


def _bad(*parts: bytes) -> bytes:
    return b"".join(parts)


@pytest.mark.parametrize("data", [
    b"",
    b"\x80\xc9\x00",                                              # not a word
    RR + b"\x80",                                                 # trailing byte
    b"\x40\xc9\x00\x01\x00\x00\x00\x55",                          # version 1
    build_sdes_cname(1, "x"),                                     # SDES first
    build_bye(1),                                                 # BYE first
    b"\x80\xcc\x00\x00",                                          # APP first
    b"\xa0\xc9\x00\x01\x00\x00\x00\x55",                          # padded first packet
    b"\x80\xc9\x00\x05\x00\x00\x00\x55",                          # length past the end
    RR[:2] + b"\x00\x00" + RR[4:],                                # length shorter: rest misread
    b"\x81\xc9\x00\x01\x00\x00\x00\x55",                          # RC=1, no block
    b"\x81\xc8\x00\x06" + b"\x00" * 24,                           # SR RC=1, no block
    b"\x80\xc8\x00\x01\x00\x00\x00\x01",                          # SR shorter than sender info
    _bad(RR, b"\xa0\xca\x00\x01\x00\x00\x00\x00", RR),            # padding not on the last
    _bad(RR, b"\xa0\xcb\x00\x01\x00\x00\x00\x00"),                # padding count 0
    _bad(RR, b"\xa0\xcb\x00\x01\x00\x00\x00\x09"),                # padding bigger than packet
    _bad(RR, b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x02ab"),      # SDES chunk without end
    _bad(RR, b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x09ab"),      # SDES item past the end
    _bad(RR, b"\x82\xca\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00"),  # SC=2, one chunk
    _bad(RR, b"\x81\xca\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"),  # extra
    _bad(RR, b"\x82\xcb\x00\x01\x00\x00\x00\x01"),                # BYE SC=2, one SSRC
    _bad(RR, b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc"),         # reason past the end
    _bad(RR, b"\x81\xcb\x00\x03\x00\x00\x00\x01\x01a\x00\x00\x00\x00\x00\x00"),  # junk after reason
    _bad(RR, b"\x81\xc8\x00\x06" + b"\x00" * 24),                 # later SR, too short
    _bad(RR, b"\x80\xc9\x00\x02\x00\x00\x00\x01\x00\x00"),        # odd-sized later packet
    _bad(RR, b"\xa0\xc8\x00\x07" + b"\x00" * 24 + b"\x00\x00\x00\x01"),  # extension not words
])
def test_invalid_compounds_raise_rtcp_error(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_compound(data)


def test_size_bound() -> None:
    filler = RawPacket(204, 0, b"\x00" * 1020).pack()
    big = RR + filler * (MAX_COMPOUND_BYTES // len(filler) + 1)
    with pytest.raises(RtcpError, match="bound"):
        parse_compound(big)
    assert len(parse_compound(big[:len(RR) + len(filler) * 4], max_bytes=5000)) == 5


# ----------------------------------------------------------------- fuzz ---

_u32 = st.integers(0, 0xFFFFFFFF)
_blocks = st.lists(st.builds(ReportBlock, _u32, st.integers(0, 255),
                             st.integers(-(1 << 23), (1 << 23) - 1), _u32, _u32, _u32, _u32),
                   max_size=3).map(tuple)
_words = st.binary(max_size=12).map(lambda b: b[:len(b) // 4 * 4])
_first = st.one_of(
    st.builds(SenderReport, _u32, st.integers(0, 2**64 - 1), _u32, _u32, _u32, _blocks, _words),
    st.builds(ReceiverReport, _u32, _blocks, _words),
)
_later = st.one_of(
    _first,
    st.builds(SourceDescription, st.lists(st.builds(
        SdesChunk, _u32, st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)),
                                  max_size=3).map(tuple)), max_size=3).map(tuple)),
    st.builds(Bye, st.lists(_u32, max_size=3).map(tuple),
              st.one_of(st.none(), st.text(max_size=20))),
    st.builds(RawPacket, st.integers(204, 210), st.integers(0, 31), _words),
)


@settings(max_examples=100, deadline=None)
@given(_first, st.lists(_later, max_size=4))
def test_built_compounds_parse_back_equal(first, later: list) -> None:
    packets = [first, *later]
    compound = build_compound(*(p.pack() for p in packets))
    assert parse_compound(compound) == packets


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_packets_or_rtcp_error(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    assert packets and isinstance(packets[0], (SenderReport, ReceiverReport))


@settings(max_examples=150, deadline=None)
@given(_first, st.lists(_later, max_size=3), st.lists(st.tuples(st.integers(0, 10**6),
                                                               st.integers(0, 255)), max_size=4))
def test_corrupted_compounds_give_packets_or_rtcp_error(first, later: list, flips: list) -> None:
    data = bytearray(b"".join(p.pack() for p in [first, *later]))
    for where, value in flips:
        data[where % len(data)] = value
    try:
        parse_compound(bytes(data))
    except RtcpError:
        pass


def test_bye_reason_bytes_survive_a_round_trip() -> None:
    raw = _bad(RR, b"\x81\xcb\x00\x02\x00\x00\x00\x01\x02\xff\xfe\x00")
    _, bye = parse_compound(raw)
    assert bye.pack() == raw[len(RR):]
