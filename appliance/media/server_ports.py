"""The server's RTP/RTCP UDP ports: one pair per stream, or one pair for all.

``[rtsp] server_ports`` picks the mode:

- ``"per-session"``: each stream binds the next free even port of
  ``rtp_port_min..rtp_port_max`` for RTP (a socket connected to its client,
  handed to the engine) and the odd one above for RTCP;
- ``"shared"``: the backend binds one pair (``shared_rtp_port``, +1) per
  address family, unconnected. Every stream's engine stream sends from the
  one RTP socket and names its client, so the engine batches many clients
  into one system call; RTCP to clients goes out by ``sendto`` from the one
  RTCP socket, and RTCP from clients is handed to its stream by
  :class:`appliance.media.rtcp_demux.RtcpDemux`.

Both give a stream a :class:`PortLease`: the socket for the engine, the
destination to name (shared only), and how to send the few packets Python
sends itself. Closing a lease releases only what the stream owns.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Callable, Iterator, NamedTuple, Protocol

from twisted.internet.protocol import DatagramProtocol

from appliance.rtsp.media_api import MediaUnavailable
from appliance.media.rtcp_demux import RtcpDemux, plain_host
from rtpengine import rtcp

log = logging.getLogger(__name__)

# One socket sends for every client: room for the batches of many streams.
SHARED_SNDBUF = 8 << 20
# Nobody reads RTP arriving at the server (NAT openers of some clients).
SHARED_RCVBUF = 1 << 16
# A compound RTCP packet larger than this is not one a client sends.
MAX_RTCP_DATAGRAM = 65535


class ReportTaker(Protocol):
    """What a lease's owner does with RTCP from its client."""

    label: str
    client_host: str
    client_ports: tuple[int, int]
    ssrc: int

    def receiver_report(self, packets) -> None:
        """Take the figures of a parsed compound RTCP packet from the client."""


class RtcpPort(DatagramProtocol):
    """A server RTCP socket: parses what arrives and hands it to ``deliver``."""

    noisy = False  # one per session in per-session mode: Twisted's lines are noise

    def __init__(self, label: str, deliver: Callable[[tuple, list], None] | None):
        """``deliver`` None: a pooled port no stream owns yet drops what comes."""
        self.label = label
        self.deliver = deliver

    def datagramReceived(self, data: bytes, addr) -> None:  # noqa: N802 (Twisted API)
        if self.deliver is None:
            return
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError as exc:
            log.debug("%s: bad RTCP from %s: %s", self.label, addr, exc)
            return
        self.deliver(addr, packets)


class RtcpSocket:
    """A stream's own RTCP socket, read by the reactor: what Twisted's
    ``listenUDP`` gives, without its cost.

    A flash crowd opens a pair per viewer, and a Twisted UDP port costs
    about 0.15 ms to start and stop (its protocol start, its log lines),
    a third of a SETUP's own work; this is a socket the reactor polls,
    with the two calls a lease uses (``write``, ``stopListening``).
    """

    #: datagrams read per wake-up, so one flooded port cannot hold the reactor
    READ_BURST = 32

    def __init__(self, reactor, sock: socket.socket, protocol: RtcpPort) -> None:
        self.reactor = reactor
        self.sock = sock
        self.protocol = protocol
        sock.setblocking(False)
        reactor.addReader(self)

    # -- what the reactor calls (IReadDescriptor) --------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted API)
        return self.protocol.label

    def doRead(self) -> None:  # noqa: N802 (Twisted API)
        for _ in range(self.READ_BURST):
            try:
                data, addr = self.sock.recvfrom(MAX_RTCP_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send: nothing to read
                log.debug("%s: %s", self.protocol.label, exc)
                return
            self.protocol.datagramReceived(data, addr)

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        self.sock.close()

    # -- what a lease uses --------------------------------------------------------

    def write(self, data: bytes, addr) -> None:
        """Send one datagram (OSError if it cannot go)."""
        self.sock.sendto(data, addr)

    def stopListening(self) -> None:  # noqa: N802 (Twisted API)
        """Stop reading and close the socket (twice is fine)."""
        if self.sock.fileno() != -1:
            self.reactor.removeReader(self)
            self.sock.close()


class PortLease:
    """A stream's use of a server port pair, owned or shared."""

    def __init__(self, *, sock: socket.socket, rtcp_port, server_ports: tuple[int, int],
                 client_host: str, client_ports: tuple[int, int], shared: bool,
                 release: Callable[[], None], label: str):
        self.sock = sock
        self.rtcp_port = rtcp_port
        self.server_ports = server_ports
        self.client_host = client_host
        self.client_ports = client_ports
        self.shared = shared
        self.label = label
        self._release: Callable[[], None] | None = release

    @property
    def dest(self) -> tuple[str, int] | None:
        """The engine's ``dest``: the client's RTP address on a shared socket."""
        return (self.client_host, self.client_ports[0]) if self.shared else None

    @property
    def peer_host(self) -> str | None:
        """The address an own pair's socket is connected to (the client),
        None for a shared pair (not connected)."""
        return None if self.shared else self.client_host

    def send_rtp(self, data: bytes) -> bool:
        """One RTP packet to the client; False if the send failed."""
        try:
            self.sock.sendto(data, (self.client_host, self.client_ports[0]))
        except OSError as exc:
            log.debug("stream %s: RTP not sent: %s", self.label, exc)
            return False
        return True

    def send_rtcp(self, data: bytes) -> None:
        """One compound RTCP packet to the client's RTCP port."""
        try:
            self.rtcp_port.write(data, (self.client_host, self.client_ports[1]))
        except OSError as exc:  # the client's RTCP port may be gone
            log.debug("stream %s: RTCP send failed: %s", self.label, exc)

    def close(self) -> None:
        """Give back what the stream holds; a shared pair stays open."""
        release, self._release = self._release, None
        if release is not None:
            release()


class _BoundPair(NamedTuple):
    """A server port pair bound and listening, not yet any stream's."""

    rtp_port: int
    sock: socket.socket
    port: RtcpSocket
    protocol: RtcpPort


class PerSessionPorts:
    """A pair of its own for each stream, from ``port_min..port_max``.

    Binding a pair and listening on its RTCP port costs about a tenth of a
    millisecond, a tenth of a viewer's whole start-up; so ``pool`` pairs per
    address family are bound ahead, and a SETUP takes one and connects it.
    The pool is refilled shortly after (``refill_delay`` seconds, in one go,
    off the path of the request that emptied it); an empty pool binds a
    pair on the spot, as without one. A stream's pair is closed with it,
    never reused: its RTCP port may hold the last client's reports.
    """

    mode = "per-session"

    def __init__(self, reactor, port_min: int, port_max: int, *, pool: int = 8,
                 refill_delay: float = 0.05):
        self.reactor = reactor
        self.port_min = port_min - port_min % 2
        self.port_max = port_max
        self._next_port = self.port_min
        self.pool_size = max(0, min(pool, (self.port_max - self.port_min) // 4))
        self.refill_delay = refill_delay
        # per address family; IPv6 only once an IPv6 client came
        self._pools: dict[int, list[_BoundPair]] = {}
        self._refill_call = None
        #: leases served from the pool, and bound on the spot (status)
        self.pool_hits = 0
        self.pool_misses = 0

    def start(self) -> None:
        """Bind the IPv4 pool."""
        self._pools.setdefault(socket.AF_INET, [])
        self._refill()

    def stop(self) -> None:
        """Close the pooled pairs; streams close their own."""
        if self._refill_call is not None and self._refill_call.active():
            self._refill_call.cancel()
        self._refill_call = None
        for pool in self._pools.values():
            for pair in pool:
                pair.port.stopListening()
                pair.sock.close()
        self._pools.clear()

    def _refill(self) -> None:
        self._refill_call = None
        for family, pool in self._pools.items():
            while len(pool) < self.pool_size:
                pair = self._bind_pair(family)
                if pair is None:
                    break       # the range is used up: leases will say so
                pool.append(pair)

    def _bind_pair(self, family: int) -> _BoundPair | None:
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        for rtp_port in self.candidates():
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((wildcard, rtp_port))
            except OSError:
                sock.close()
                continue
            rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtcp_sock.bind((wildcard, rtp_port + 1))
            except OSError:
                rtcp_sock.close()
                sock.close()
                continue
            protocol = RtcpPort("pooled RTCP port", None)
            return _BoundPair(rtp_port, sock, RtcpSocket(self.reactor, rtcp_sock, protocol),
                              protocol)
        return None

    def _take(self, family: int) -> _BoundPair | None:
        pool = self._pools.setdefault(family, [])
        if self.pool_size and self._refill_call is None:
            self._refill_call = self.reactor.callLater(self.refill_delay, self._refill)
        if pool:
            self.pool_hits += 1
            return pool.pop(0)
        self.pool_misses += 1
        return self._bind_pair(family)

    def candidates(self) -> Iterator[int]:
        """Even RTP ports to try, round-robin from where the last one was found."""
        count = (self.port_max - self.port_min) // 2
        for i in range(count):
            port = self.port_min + (self._next_port - self.port_min + 2 * i) % (2 * count)
            yield port
            self._next_port = port + 2

    def lease(self, stream: ReportTaker) -> PortLease:
        """Bind a free pair for ``stream``; its RTCP reaches only ``stream``."""
        host = stream.client_host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def deliver(addr, packets) -> None:
            # only the client this stream sends to may report on it
            if addr[0] == host:
                stream.receiver_report(packets)
        pair = self._take(family)
        if pair is None:
            raise MediaUnavailable(
                f"no free RTP/RTCP port pair in {self.port_min}-{self.port_max}")
        sock, port, rtp_port = pair.sock, pair.port, pair.rtp_port
        try:
            sock.connect((host, stream.client_ports[0]))
        except OSError:
            port.stopListening()
            sock.close()
            raise
        pair.protocol.label = f"stream {stream.label}"
        pair.protocol.deliver = deliver

        def release(sock=sock, port=port) -> None:
            port.stopListening()
            sock.close()
        return PortLease(sock=sock, rtcp_port=port, server_ports=(rtp_port, rtp_port + 1),
                         client_host=host, client_ports=stream.client_ports,
                         shared=False, release=release, label=stream.label)

    def status(self) -> dict:
        """The mode, the range and the pool, JSON-able."""
        return {"mode": self.mode, "range": [self.port_min, self.port_max],
                "pool": {"size": self.pool_size,
                         "ready": sum(len(p) for p in self._pools.values()),
                         "hits": self.pool_hits, "misses": self.pool_misses}}


class SharedPorts:
    """One RTP/RTCP pair per address family that every stream sends from."""

    mode = "shared"

    def __init__(self, reactor, rtp_port: int):
        self.reactor = reactor
        self.server_ports = (rtp_port, rtp_port + 1)
        self.demux: RtcpDemux = RtcpDemux()
        # per family: (RTP socket for the engine, Twisted RTCP port)
        self._pairs: dict[int, tuple[socket.socket, object]] = {}

    def start(self) -> None:
        """Bind the pair on IPv4, and on IPv6 where the host has it.

        Raises OSError when the IPv4 pair cannot be bound (in use)."""
        self._bind(socket.AF_INET)
        try:
            self._bind(socket.AF_INET6)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                self.stop()
                raise
            log.info("shared server ports: no IPv6 here (%s); IPv4 clients only", exc)

    def _bind(self, family: int) -> None:
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        socks = []
        try:
            for port in self.server_ports:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                if family == socket.AF_INET6:
                    # the IPv4 pair has the same numbers
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((wildcard, port))
            rtp, rtcp_sock = socks
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SHARED_SNDBUF)
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SHARED_RCVBUF)
            rtcp_sock.setblocking(False)
            name = "IPv6" if family == socket.AF_INET6 else "IPv4"
            # Twisted listens on a duplicate of the RTCP socket (it has no
            # IPV6_V6ONLY option of its own, hence the adoption)
            port = self.reactor.adoptDatagramPort(
                rtcp_sock.fileno(), family,
                RtcpPort(f"shared RTCP port ({name})", self._deliver))
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        rtcp_sock.close()
        self._pairs[family] = (rtp, port)
        log.info("shared server ports %d-%d bound (%s)", *self.server_ports, name)

    def stop(self) -> None:
        """Close the pair; streams still open can no longer send."""
        for rtp, port in self._pairs.values():
            port.stopListening()
            rtp.close()
        self._pairs.clear()

    def _deliver(self, addr, packets) -> None:
        streams = self.demux.route(addr, packets)
        if not streams:
            log.debug("shared RTCP port: a report from %s for no stream of ours", addr[:2])
        for stream in streams:
            stream.receiver_report(packets)

    def lease(self, stream: ReportTaker) -> PortLease:
        """Send ``stream`` from the shared pair and route its client's RTCP to it."""
        host = plain_host(stream.client_host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        pair = self._pairs.get(family)
        if pair is None:
            raise MediaUnavailable(
                f"no shared {'IPv6' if family == socket.AF_INET6 else 'IPv4'} server port "
                f"pair for client {host}")
        rtp, port = pair
        self.demux.add(stream, host=host, rtcp_port=stream.client_ports[1], ssrc=stream.ssrc)
        return PortLease(sock=rtp, rtcp_port=port, server_ports=self.server_ports,
                         client_host=host, client_ports=stream.client_ports, shared=True,
                         release=lambda: self.demux.remove(stream), label=stream.label)

    def status(self) -> dict:
        """The mode, the pair, the families bound and how RTCP was matched."""
        return {"mode": self.mode, "rtp": self.server_ports[0], "rtcp": self.server_ports[1],
                "families": sorted("IPv6" if f == socket.AF_INET6 else "IPv4"
                                   for f in self._pairs),
                "streams": len(self.demux), "rtcp_in": self.demux.counters()}


KERNEL_PORTS = "/proc/sys/net/ipv4"


def _port_list(text: str) -> set[int]:
    """The ports of a kernel port list: "8080,9000-9010" (empty: none)."""
    ports: set[int] = set()
    for part in text.replace(",", " ").split():
        first, _, last = part.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


# Linux's net.ipv4.ip_local_port_range unless it was changed
LINUX_EPHEMERAL_RANGE = (32768, 60999)


def ephemeral_range(proc: str = KERNEL_PORTS) -> tuple[int, int] | None:
    """``net.ipv4.ip_local_port_range``: the ports the kernel picks from for
    a socket bound to port 0; None if it does not say."""
    try:
        with open(f"{proc}/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None
    return low, high


def ephemeral_floor(proc: str = KERNEL_PORTS) -> int:
    """The lowest port the kernel hands to a socket bound to port 0: its
    range's, or Linux's default (32768) if it does not say. Ports below it
    are where a server's range stays clear of clients on the same host."""
    return (ephemeral_range(proc) or LINUX_EPHEMERAL_RANGE)[0]


def ephemeral_overlap(port_min: int, port_max: int, proc: str = KERNEL_PORTS,
                      span: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """(first, last, count) of the ports of ``port_min..port_max`` that the
    kernel also hands to sockets bound to port 0
    (``net.ipv4.ip_local_port_range`` less ``ip_local_reserved_ports``), or
    None when there are none or the kernel does not say. ``span``: the
    kernel's range if the caller has read it already.

    Such a port taken by a client socket of this machine is one the server
    cannot bind (a failed bind each time its turn comes), and one the server
    holds is one fewer for the machine's own outgoing sockets."""
    span = span or ephemeral_range(proc)
    if span is None:
        return None
    low, high = span
    try:
        with open(f"{proc}/ip_local_reserved_ports") as f:
            reserved = _port_list(f.read())
    except (OSError, ValueError):
        reserved = set()
    first, last = max(port_min, low), min(port_max, high)
    if first > last:
        return None
    clash = set(range(first, last + 1)) - reserved
    if not clash:
        return None
    return min(clash), max(clash), len(clash)


def server_ports(reactor, *, mode: str, port_min: int, port_max: int,
                 shared_rtp_port: int = 0, pool: int = 8) -> PerSessionPorts | SharedPorts:
    """The port policy of ``[rtsp] server_ports``; ``shared_rtp_port`` 0 is
    ``port_min``; ``pool``: pairs bound ahead (per-session)."""
    if mode == "shared":
        rtp = shared_rtp_port or port_min - port_min % 2
        warn_of_ephemeral_ports(rtp, rtp + 1, "rtsp.shared_rtp_port")
        return SharedPorts(reactor, rtp)
    if mode == "per-session":
        warn_of_ephemeral_ports(port_min, port_max, "rtsp.rtp_port_min..rtp_port_max")
        return PerSessionPorts(reactor, port_min, port_max, pool=pool)
    raise ValueError(f"unknown server_ports mode {mode!r}")


def ephemeral_warning(port_min: int, port_max: int, keys: str,
                      proc: str = KERNEL_PORTS) -> str | None:
    """What to tell an operator whose RTP ports overlap the kernel's
    ephemeral ports, with the two ways out; None if they do not (or the
    kernel's settings cannot be read: the packaged unit's ``ProcSubset=pid``
    hides them from the daemon, and ``kvod status`` asks instead)."""
    span = ephemeral_range(proc)
    clash = span and ephemeral_overlap(port_min, port_max, proc, span)
    if not clash:
        return None
    first, last, count = clash
    low, high = span
    return (f"{count} of the RTP/RTCP ports {port_min}-{port_max} ({keys}), from {first} to "
            f"{last}, are also ephemeral ports (net.ipv4.ip_local_port_range {low}-{high}): a "
            "pair that another socket of this machine takes cannot serve a stream; move the "
            "range out of it, or reserve the ports in net.ipv4.ip_local_reserved_ports")


def warn_of_ephemeral_ports(port_min: int, port_max: int, keys: str,
                            proc: str = KERNEL_PORTS) -> None:
    """Log :func:`ephemeral_warning`, once at start."""
    warning = ephemeral_warning(port_min, port_max, keys, proc)
    if warning is not None:
        log.warning("%s", warning)
