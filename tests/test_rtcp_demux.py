"""RTCP on the shared server port: which stream each packet is about."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appliance.media.rtcp_demux import RtcpDemux, plain_host, reported_ssrcs
from rtpengine import rtcp


def rr(*ssrcs: int, sender: int = 0x1234) -> list:
    """A parsed receiver report with one block per SSRC."""
    blocks = tuple(rtcp.ReportBlock(ssrc=s, fraction_lost=0, cumulative_lost=0,
                                    highest_seq=0, jitter=0, lsr=0, dlsr=0) for s in ssrcs)
    return rtcp.parse_compound(rtcp.build_receiver_report(sender, blocks))


def demux() -> RtcpDemux:
    d = RtcpDemux()
    # two clients on one host, one on another
    d.add("a", host="10.0.0.1", rtcp_port=5001, ssrc=0xA)
    d.add("b", host="10.0.0.1", rtcp_port=5003, ssrc=0xB)
    d.add("c", host="2001:db8::1", rtcp_port=5001, ssrc=0xC)
    return d


def test_by_source_address_not_host_alone():
    d = demux()
    assert d.route(("10.0.0.1", 5001), rr(0xA)) == ["a"]
    assert d.route(("10.0.0.1", 5003), rr(0xB)) == ["b"]
    # an RR with no blocks (or only SDES) still names its stream by address
    assert d.route(("10.0.0.1", 5003), rr()) == ["b"]
    # IPv6 sources come with flowinfo and scope; compressed or not
    assert d.route(("2001:db8:0::1", 5001, 0, 0), rr()) == ["c"]
    assert d.counters() == {"by_address": 4, "by_ssrc": 0, "unknown": 0}


def test_by_ssrc_when_the_source_port_is_not_the_announced_one():
    d = demux()
    # NAT, or a client that reports from another socket
    assert d.route(("10.0.0.1", 40000), rr(0xB)) == ["b"]
    # sender reports carry report blocks too
    sr = rtcp.parse_compound(rtcp.SenderReport(
        ssrc=1, ntp_timestamp=0, rtp_timestamp=0, packet_count=0, octet_count=0,
        report_blocks=rr(0xA)[0].report_blocks).pack())
    assert d.route(("10.0.0.1", 40000), sr) == ["a"]
    assert d.counters()["by_ssrc"] == 2


def test_ssrc_of_another_hosts_stream_is_refused():
    d = demux()
    # only the client a stream sends to may report on it
    assert d.route(("10.0.0.2", 5001), rr(0xA)) == []
    assert d.route(("10.0.0.1", 40000), rr(0xC)) == []
    assert d.route(("10.0.0.1", 40000), rr(0xDEAD)) == []
    assert d.route(("10.0.0.1", 40000), rr()) == []
    assert d.counters() == {"by_address": 0, "by_ssrc": 0, "unknown": 4}


def test_same_announced_ports_twice_are_told_apart_by_ssrc():
    d = RtcpDemux()
    d.add("a", host="10.0.0.1", rtcp_port=5001, ssrc=0xA)
    d.add("b", host="10.0.0.1", rtcp_port=5001, ssrc=0xB)
    assert d.route(("10.0.0.1", 5001), rr(0xB)) == ["b"]
    assert sorted(d.route(("10.0.0.1", 5001), rr())) == ["a", "b"]


def test_remove_and_re_add():
    d = demux()
    d.remove("a")
    d.remove("a")  # twice is harmless
    d.remove("nobody")
    assert len(d) == 2
    assert d.route(("10.0.0.1", 5001), rr(0xA)) == []
    d.add("b", host="10.0.0.1", rtcp_port=5001, ssrc=0xB)  # moved: the old route goes
    assert d.route(("10.0.0.1", 5003), rr()) == []
    assert d.route(("10.0.0.1", 5001), rr()) == ["b"]
    for key in ("b", "c"):
        d.remove(key)
    assert len(d) == 0 and not d._by_address and not d._by_ssrc


def test_ipv4_mapped_addresses_are_ipv4():
    assert plain_host("::ffff:192.0.2.1") == "192.0.2.1"
    assert plain_host("2001:db8:0:0::1") == "2001:db8::1"
    assert plain_host("192.0.2.1") == "192.0.2.1"
    assert plain_host("not an address") == "not an address"
    d = RtcpDemux()
    d.add("a", host="::ffff:10.0.0.1", rtcp_port=5001, ssrc=0xA)
    assert d.route(("10.0.0.1", 5001), rr()) == ["a"]
    assert d.route(("::ffff:10.0.0.1", 5001), rr()) == ["a"]


def test_reported_ssrcs_ignores_packets_without_blocks():
    packets = rtcp.parse_compound(rtcp.build_receiver_report(9) + rtcp.build_sdes_cname(9, "x")
                                  + rtcp.build_bye(9)) + rr(1, 2)
    assert reported_ssrcs(packets) == {1, 2}


@given(port=st.integers(0, 65535), ssrcs=st.lists(st.integers(0, 2**32 - 1), max_size=31),
       host=st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1", "::ffff:10.0.0.1"]))
def test_route_returns_only_streams_of_the_source_host(port, ssrcs, host):
    d = demux()
    keys = d.route((host, port), rr(*ssrcs))
    want_host = plain_host(host)
    assert all(d._routes[k].host == want_host for k in keys)
    assert sum(d.counters().values()) == 1
