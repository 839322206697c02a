"""Server port pairs: shared by every stream, or one per stream.

Real sockets on loopback; the reactor is a stand-in that serves the RTCP
socket it is given by plain ``sendto`` (no global reactor), and the tests
deliver incoming RTCP by hand.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import pytest

from appliance.rtsp.media_api import MediaUnavailable
from appliance.media.server_ports import (PerSessionPorts, RtcpPort, SharedPorts,
                                          ephemeral_floor, ephemeral_overlap, server_ports,
                                          warn_of_ephemeral_ports)
from rtpengine import rtcp
from tests.helpers.daemon import free_udp_pair


class FakeUdpPort:
    """A listening UDP port as Twisted gives one: write() and stopListening()."""

    def __init__(self, sock: socket.socket, protocol):
        self.sock = sock
        self.protocol = protocol

    def write(self, data: bytes, addr) -> None:
        self.sock.sendto(data, addr)

    def stopListening(self) -> None:  # noqa: N802 (Twisted API)
        self.sock.close()


class FakeReactor:
    """Just the UDP calls of a reactor, on real sockets."""

    def __init__(self):
        self.ports: list[FakeUdpPort] = []
        self.calls: list[tuple[float, object]] = []
        self.readers: set = set()

    def addReader(self, reader):  # noqa: N802 (Twisted API)
        self.readers.add(reader)

    def removeReader(self, reader):  # noqa: N802 (Twisted API)
        self.readers.discard(reader)

    def callLater(self, delay, call):  # noqa: N802 (Twisted API)
        self.calls.append((delay, call))
        return FakeCall()

    def run_calls(self) -> None:
        calls, self.calls = self.calls, []
        for _, call in calls:
            call()

    def adoptDatagramPort(self, fd, family, protocol):  # noqa: N802 (Twisted API)
        # Twisted listens on a duplicate too
        port = FakeUdpPort(socket.socket(family, socket.SOCK_DGRAM, fileno=os.dup(fd)), protocol)
        self.ports.append(port)
        return port

    def listenUDP(self, port, protocol, interface=""):  # noqa: N802 (Twisted API)
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((interface, port))
        fake = FakeUdpPort(sock, protocol)
        self.ports.append(fake)
        return fake


class FakeCall:
    def active(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


@dataclass(eq=False)
class Stream:
    """What a lease needs of a stream, and what its client sent it."""

    client_host: str
    client_ports: tuple[int, int]
    ssrc: int
    label: str = "S/0"
    reports: list = field(default_factory=list)

    def receiver_report(self, packets) -> None:
        self.reports.append(packets)


class Client:
    """A client's RTP/RTCP socket pair on loopback."""

    def __init__(self, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.rtp = socket.socket(family, socket.SOCK_DGRAM)
        self.rtp.bind((host, 0))
        self.rtcp = socket.socket(family, socket.SOCK_DGRAM)
        self.rtcp.bind((host, 0))
        for s in (self.rtp, self.rtcp):
            s.settimeout(5)
        self.host = host
        self.ports = (self.rtp.getsockname()[1], self.rtcp.getsockname()[1])

    def stream(self, ssrc: int) -> Stream:
        return Stream(self.host, self.ports, ssrc)

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
def shared():
    reactor = FakeReactor()
    ports = SharedPorts(reactor, free_udp_pair())
    ports.start()
    yield ports, reactor
    ports.stop()


@pytest.fixture
def clients():
    made = []

    def make(host: str = "127.0.0.1") -> Client:
        made.append(Client(host))
        return made[-1]
    yield make
    for c in made:
        c.close()


def test_every_stream_sends_from_the_one_pair(shared, clients):
    ports, _ = shared
    rtp_port, rtcp_port = ports.server_ports
    a, b = clients(), clients()
    la, lb = ports.lease(a.stream(1)), ports.lease(b.stream(2))
    assert la.server_ports == lb.server_ports == (rtp_port, rtcp_port)
    assert la.sock is lb.sock and la.shared and lb.shared
    # unconnected: the engine names each client
    with pytest.raises(OSError):
        la.sock.getpeername()
    assert (la.dest, lb.dest) == (("127.0.0.1", a.ports[0]), ("127.0.0.1", b.ports[0]))
    # RTP (the flush trailer) and RTCP go to each client from the shared ports
    for lease, client, tag in ((la, a, b"a"), (lb, b, b"b")):
        assert lease.send_rtp(b"rtp-" + tag)
        lease.send_rtcp(b"rtcp-" + tag)
        assert client.rtp.recvfrom(100) == (b"rtp-" + tag, ("127.0.0.1", rtp_port))
        assert client.rtcp.recvfrom(100) == (b"rtcp-" + tag, ("127.0.0.1", rtcp_port))
    # one stream's end leaves the pair to the other
    la.close()
    la.close()
    assert lb.send_rtp(b"still")
    assert b.rtp.recv(100) == b"still"
    assert ports.status()["streams"] == 1
    ports.stop()
    assert lb.sock.fileno() == -1
    assert not lb.send_rtp(b"gone")  # logged, not raised


def test_incoming_rtcp_reaches_its_stream(shared, clients):
    ports, reactor = shared
    a, b = clients(), clients()
    sa, sb = a.stream(0xA), b.stream(0xB)
    ports.lease(sa)
    lease_b = ports.lease(sb)
    (protocol,) = {p.protocol for p in reactor.ports if p.sock.family == socket.AF_INET}
    block = rtcp.ReportBlock(ssrc=0xB, fraction_lost=1, cumulative_lost=2, highest_seq=3,
                             jitter=4, lsr=0, dlsr=0)
    report = rtcp.build_receiver_report(0x99, (block,))
    protocol.datagramReceived(rtcp.build_receiver_report(0x98), ("127.0.0.1", a.ports[1]))
    protocol.datagramReceived(report, ("127.0.0.1", 1))  # not b's port: by SSRC
    protocol.datagramReceived(report, ("127.0.0.2", 1))  # another host: ignored
    protocol.datagramReceived(b"\x00garbage", ("127.0.0.1", a.ports[1]))  # ignored
    assert len(sa.reports) == 1 and len(sb.reports) == 1
    assert sb.reports[0][0].report_blocks == (block,)
    assert ports.status()["rtcp_in"] == {"by_address": 1, "by_ssrc": 1, "unknown": 1}
    lease_b.close()
    protocol.datagramReceived(report, ("127.0.0.1", b.ports[1]))
    assert len(sb.reports) == 1  # a closed stream hears nothing


def test_status_of_the_shared_pair(shared):
    ports, _ = shared
    info = ports.status()
    assert info["mode"] == "shared"
    assert (info["rtp"], info["rtcp"]) == ports.server_ports
    assert "IPv4" in info["families"]


def test_ipv6_and_ipv4_mapped_clients(shared, clients):
    ports, _ = shared
    if "IPv6" not in ports.status()["families"]:
        pytest.skip("no IPv6 on this host")
    six = clients("::1")
    lease = ports.lease(six.stream(6))
    assert lease.sock.family == socket.AF_INET6 and lease.dest == ("::1", six.ports[0])
    assert lease.send_rtp(b"six")
    assert six.rtp.recvfrom(100)[:2] == (b"six", ("::1", ports.server_ports[0], 0, 0))
    # an IPv4 client seen through a dual-stack RTSP listener
    four = clients()
    mapped = Stream("::ffff:127.0.0.1", four.ports, 4)
    lease = ports.lease(mapped)
    assert lease.sock.family == socket.AF_INET and lease.dest == ("127.0.0.1", four.ports[0])


def test_no_pair_for_the_family_is_media_unavailable(clients):
    ports = SharedPorts(FakeReactor(), free_udp_pair())
    with pytest.raises(MediaUnavailable, match="no shared IPv4 server port pair"):
        ports.lease(clients().stream(1))


def test_a_pair_in_use_is_an_error_and_nothing_stays_bound():
    port = free_udp_pair()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("0.0.0.0", port + 1))
    reactor = FakeReactor()
    ports = SharedPorts(reactor, port)
    try:
        with pytest.raises(OSError):
            ports.start()
    finally:
        taken.close()
    assert not reactor.ports
    # the RTP port was let go: binding it again works
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))


def test_the_engine_sends_every_client_from_the_shared_socket(shared, clients, tmp_path):
    from rtpengine.engine import Engine
    from rtpengine.rtp import parse_rtp
    from tests.helpers.engine import chunk_records, wait_state, write_hints
    ports, _ = shared
    media = tmp_path / "m.bin"
    media.write_bytes(bytes(range(250)) * 20)
    hints = write_hints(tmp_path / "m.hint", chunk_records(5000, 0, chunk=500))
    a, b = clients(), clients()
    with Engine(threads=1) as engine, open(media, "rb") as m, open(hints, "rb") as h:
        streams = []
        for client, ssrc in ((a, 0xA), (b, 0xB)):
            lease = ports.lease(client.stream(ssrc))
            streams.append(engine.open_stream(lease.sock, m, h, dest=lease.dest, ssrc=ssrc,
                                              seq0=0, ts0=0))
        for stream in streams:
            stream.play()
        for stream in streams:
            wait_state(stream, "ended")
            assert stream.stats().shared and stream.stats().packets_sent == 10
    for client, ssrc in ((a, 0xA), (b, 0xB)):
        for _ in range(10):
            data, source = client.rtp.recvfrom(2000)
            assert source == ("127.0.0.1", ports.server_ports[0])
            assert parse_rtp(data)[0].ssrc == ssrc


def test_per_session_pairs_are_each_streams_own(clients):
    low = free_udp_pair()
    ports = server_ports(FakeReactor(), mode="per-session", port_min=low, port_max=low + 40)
    assert isinstance(ports, PerSessionPorts)
    a, b = clients(), clients()
    la, lb = ports.lease(a.stream(1)), ports.lease(b.stream(2))
    try:
        assert la.server_ports != lb.server_ports and la.sock is not lb.sock
        assert la.dest is None and not la.shared
        assert la.sock.getpeername() == ("127.0.0.1", a.ports[0])
        assert la.send_rtp(b"x") and a.rtp.recv(10) == b"x"
        la.send_rtcp(b"y")
        assert a.rtcp.recvfrom(10) == (b"y", ("127.0.0.1", la.server_ports[1]))
        assert ports.status()["mode"] == "per-session"
        assert ports.status()["range"] == [low, low + 40]
    finally:
        la.close()
        lb.close()
    assert la.sock.fileno() == -1


def test_server_ports_picks_the_mode():
    shared = server_ports(FakeReactor(), mode="shared", port_min=30000, port_max=30100)
    assert isinstance(shared, SharedPorts) and shared.server_ports == (30000, 30001)
    shared = server_ports(FakeReactor(), mode="shared", port_min=30000, port_max=30100,
                          shared_rtp_port=5004)
    assert shared.server_ports == (5004, 5005)
    with pytest.raises(ValueError, match="unknown server_ports mode"):
        server_ports(FakeReactor(), mode="multicast", port_min=30000, port_max=30100)


def kernel_ports(tmp_path, port_range: str, reserved: str | None = "") -> str:
    """A stand-in for /proc/sys/net/ipv4 with the two port settings."""
    (tmp_path / "ip_local_port_range").write_text(port_range + "\n")
    if reserved is not None:
        (tmp_path / "ip_local_reserved_ports").write_text(reserved + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("port_range, reserved, span, clash", [
    ("32768\t60999", "", (20000, 29999), None),                 # kvod's default: clear
    ("32768\t60999", "", (30000, 59998), (32768, 59998, 27231)),
    ("32768\t60999", "", (60000, 61000), (60000, 60999, 1000)),
    ("32768\t60999", "40000-40099", (40000, 40099), None),      # all reserved
    ("32768\t60999", "40000-40049,40098", (40000, 40099), (40050, 40099, 49)),
    ("32768\t60999", None, (40000, 40001), (40000, 40001, 2)),  # no reserved list
    ("1024\t65535", "", (5004, 5005), (5004, 5005, 2)),
])
def test_ephemeral_overlap_reads_the_kernels_range_less_its_reserved_ports(
        tmp_path, port_range, reserved, span, clash):
    assert ephemeral_overlap(*span, kernel_ports(tmp_path, port_range, reserved)) == clash


def test_an_unreadable_kernel_range_is_no_overlap(tmp_path):
    assert ephemeral_overlap(40000, 40100, str(tmp_path / "absent")) is None
    assert ephemeral_overlap(40000, 40100, kernel_ports(tmp_path, "garbage")) is None


def test_the_ephemeral_floor_is_the_kernel_s_or_linux_s_default(tmp_path):
    assert ephemeral_floor(kernel_ports(tmp_path, "40000 50000")) == 40000
    assert ephemeral_floor(str(tmp_path / "absent")) == 32768


def test_an_overlap_is_warned_of_with_the_way_out(tmp_path, caplog):
    proc = kernel_ports(tmp_path, "32768 60999")
    with caplog.at_level("WARNING", logger="appliance.media.server_ports"):
        warn_of_ephemeral_ports(20000, 29999, "rtsp.rtp_port_min..rtp_port_max", proc)
        assert not caplog.records
        warn_of_ephemeral_ports(40000, 49998, "rtsp.rtp_port_min..rtp_port_max", proc)
    [record] = caplog.records
    text = record.getMessage()
    assert text.startswith("9999 of the RTP/RTCP ports 40000-49998 "
                           "(rtsp.rtp_port_min..rtp_port_max), from 40000 to 49998, are "
                           "also ephemeral ports (net.ipv4.ip_local_port_range 32768-60999)")
    assert "ip_local_reserved_ports" in text


def test_kvod_status_checks_the_ports_the_daemon_reports(tmp_path):
    """The packaged daemon cannot read /proc/sys (ProcSubset=pid): the
    status command, which is not sandboxed, checks its ports instead."""
    from appliance.cli.main import _ports_overlap
    proc = kernel_ports(tmp_path, "32768 60999")
    assert _ports_overlap({"mode": "per-session", "range": [20000, 29999]}, proc) is None
    text = _ports_overlap({"mode": "per-session", "range": [40000, 40099]}, proc)
    assert text.startswith("100 of the RTP/RTCP ports 40000-40099 "
                           "(rtsp.rtp_port_min..rtp_port_max)")
    text = _ports_overlap({"mode": "shared", "rtp": 50000, "rtcp": 50001}, proc)
    assert text.startswith("2 of the RTP/RTCP ports 50000-50001 (rtsp.shared_rtp_port)")
    assert _ports_overlap({}, proc) is None


def test_this_machines_kernel_range_is_read():
    """The real /proc file parses: the default range sits inside it or not,
    but the call answers without error."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(v) for v in f.read().split())
    assert ephemeral_overlap(low, low + 1) in (None, (low, low + 1, 2), (low, low, 1),
                                              (low + 1, low + 1, 1))
    assert ephemeral_overlap(high + 1, high + 1) is None


def _open_ports(reactor) -> set[int]:
    """The RTCP ports the reactor reads."""
    return {r.sock.getsockname()[1] for r in reactor.readers}


def test_per_session_pairs_come_bound_from_a_pool_refilled_later(clients):
    low = free_udp_pair()
    reactor = FakeReactor()
    ports = PerSessionPorts(reactor, low, low + 40, pool=3)
    ports.start()
    try:
        assert ports.status()["pool"] == {"size": 3, "ready": 3, "hits": 0, "misses": 0}
        pooled = _open_ports(reactor)
        a = clients()
        stream = a.stream(1)
        lease = ports.lease(stream)
        # the stream got a pair bound before it asked; the pool refills later
        assert lease.server_ports[1] in pooled and ports.status()["pool"]["ready"] == 2
        assert lease.sock.getpeername() == ("127.0.0.1", a.ports[0])
        assert [delay for delay, _ in reactor.calls] == [ports.refill_delay]
        reactor.run_calls()
        assert ports.status()["pool"]["ready"] == 3
        # RTCP to the leased pair reaches its stream, from its client only
        reader = next(r for r in reactor.readers
                      if r.sock.getsockname()[1] == lease.server_ports[1])
        report = rtcp.build_receiver_report(1234)
        a.rtcp.sendto(report, ("127.0.0.1", lease.server_ports[1]))
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))
        stranger.sendto(report, ("127.0.0.1", lease.server_ports[1]))
        stranger.close()
        for _ in range(100):
            reader.doRead()
            if stream.reports:
                break
        assert len(stream.reports) == 1
        # and RTCP from the server's port reaches the client
        lease.send_rtcp(b"sr")
        assert a.rtcp.recvfrom(10) == (b"sr", ("127.0.0.1", lease.server_ports[1]))
        lease.close()
        assert reader not in reactor.readers and reader.sock.fileno() == -1
    finally:
        ports.stop()
    assert not _open_ports(reactor)      # the pool's pairs are closed with it


def test_an_empty_pool_binds_on_the_spot_and_a_full_range_is_unavailable(clients):
    low = free_udp_pair()
    reactor = FakeReactor()
    ports = PerSessionPorts(reactor, low, low + 8, pool=1)   # 4 pairs, 1 ahead
    ports.start()
    leases = []
    try:
        leases = [ports.lease(clients().stream(i)) for i in range(4)]
        assert len({le.server_ports for le in leases}) == 4
        assert ports.status()["pool"]["hits"] == 1 and ports.status()["pool"]["misses"] == 3
        reactor.run_calls()                  # nothing left to pool
        assert ports.status()["pool"]["ready"] == 0
        with pytest.raises(MediaUnavailable, match="no free RTP/RTCP port pair"):
            ports.lease(clients().stream(9))
    finally:
        for le in leases:
            le.close()
        ports.stop()


def test_a_pooled_port_owned_by_no_stream_drops_what_arrives():
    RtcpPort("pooled", None).datagramReceived(b"\x80\xc9\x00\x01\x00\x00\x04\xd2",
                                              ("127.0.0.1", 9))
