"""Which stream an RTCP packet on the shared server port is about (sans-IO).

With ``[rtsp] server_ports = "shared"`` every stream's RTCP arrives on one
server socket, so each compound packet must be handed to the streams it
reports on. A client normally sends RTCP from the port it announced in
SETUP (``client_port=RTP-RTCP``): that (host, port) names its stream. Some
do not (NAT rewrites the port, or the client reports from another socket):
then the report blocks decide, since a receiver report names the SSRC of
the stream it is about, which we chose at random. Either way the packet
must come from the stream's client host: nobody else may keep a session
alive or change its figures. Nothing here opens a socket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, Iterator, TypeVar

from rtpengine import rtcp

K = TypeVar("K", bound=Hashable)


def plain_host(host: str) -> str:
    """``host`` as a socket reports it: an IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, an IPv4 client on a dual-stack listener) as the
    IPv4 address it is, every other address in its compressed form."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def report_blocks(packets: Iterable[object]) -> Iterator[rtcp.ReportBlock]:
    """The report blocks of a parsed compound packet (of its SRs and RRs)."""
    for packet in packets:
        yield from getattr(packet, "report_blocks", ())


def reported_ssrcs(packets: Iterable[object]) -> set[int]:
    """The SSRCs that the report blocks of a compound packet are about."""
    return {block.ssrc for block in report_blocks(packets)}


@dataclass(frozen=True)
class _Route(Generic[K]):
    host: str
    rtcp_port: int
    ssrc: int


class RtcpDemux(Generic[K]):
    """Streams registered by client RTCP address and by our SSRC.

    ``K`` is whatever the caller names a stream by (the stream itself in
    the daemon). Counters say how packets were matched, for status.
    """

    def __init__(self) -> None:
        self._routes: dict[K, _Route] = {}
        self._by_address: dict[tuple[str, int], list[K]] = {}
        self._by_ssrc: dict[int, list[K]] = {}
        self.by_address = 0
        self.by_ssrc = 0
        self.unknown = 0

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, key: K, *, host: str, rtcp_port: int, ssrc: int) -> None:
        """Expect RTCP for ``key`` from ``host``:``rtcp_port``, about ``ssrc``."""
        self.remove(key)
        route = _Route(plain_host(host), rtcp_port, ssrc)
        self._routes[key] = route
        self._by_address.setdefault((route.host, rtcp_port), []).append(key)
        self._by_ssrc.setdefault(ssrc, []).append(key)

    def remove(self, key: K) -> None:
        """Forget ``key``; unknown keys are ignored."""
        route = self._routes.pop(key, None)
        if route is None:
            return
        for table, index in ((self._by_address, (route.host, route.rtcp_port)),
                             (self._by_ssrc, route.ssrc)):
            keys = table[index]
            keys.remove(key)
            if not keys:
                del table[index]

    def route(self, source: tuple, packets: Iterable[object]) -> list[K]:
        """The streams a compound RTCP packet from ``source`` (host, port, ...)
        reports on; empty (and counted as unknown) when none matches."""
        packets = list(packets)
        host, port = plain_host(source[0]), source[1]
        named = reported_ssrcs(packets)
        keys = self._by_address.get((host, port), [])
        if len(keys) > 1 and named:
            # two SETUPs announced the same client ports: the blocks decide
            keys = [k for k in keys if self._routes[k].ssrc in named] or keys
        if keys:
            self.by_address += 1
            return list(keys)
        keys = [k for ssrc in named for k in self._by_ssrc.get(ssrc, ())
                if self._routes[k].host == host]
        if keys:
            self.by_ssrc += 1
            return keys
        self.unknown += 1
        return []

    def counters(self) -> dict[str, int]:
        """How many packets were matched by address, by SSRC, or not at all."""
        return {"by_address": self.by_address, "by_ssrc": self.by_ssrc,
                "unknown": self.unknown}
