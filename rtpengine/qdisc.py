"""Does the fq qdisc pace the way to a destination? Asked over rtnetlink.

Kernel pacing (``Engine.open_stream(pacing="kernel")``: departure times
with SO_TXTIME) only works where the fq qdisc sits on the egress
interface: everywhere else the kernel accepts the times and ignores them,
and packets leave at once. So the engine asks, per destination:

1. the egress interface: ``RTM_GETROUTE`` for the address, ``RTA_OIF`` of
   the answer;
2. that interface's qdiscs: an ``RTM_GETQDISC`` dump (``TCA_KIND`` and the
   parent handles). Its transmit path is fq when the root qdisc is "fq",
   or a multiqueue root ("mq", "mqprio") whose every child is "fq".

No dependency beyond ``socket`` and ``struct``. The parsers are pure
functions of the bytes the kernel answered, and hostile or odd answers
(truncated, wrong lengths, errors, other sequence numbers) raise
:class:`NetlinkError`, which :class:`FqDetector` turns into "not fq" with
the reason: never a crash. Answers are cached per interface for a few
seconds (``ttl``), so opening many streams asks the kernel once.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

__all__ = ["FqAnswer", "FqDetector", "NetlinkError", "Qdisc", "fq_verdict",
           "parse_messages", "parse_qdiscs", "parse_route_oif", "detect_fq"]

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
RTA_DST, RTA_OIF = 1, 4
TCA_KIND = 1
TC_H_ROOT = 0xFFFFFFFF
TC_H_MAJ_MASK = 0xFFFF0000
MULTIQUEUE = ("mq", "mqprio")

_NLMSGHDR = struct.Struct("=IHHII")       # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")      # family .. type, flags
_TCMSG = struct.Struct("=BBHiIII")        # family, pads, ifindex, handle, parent, info
_RTATTR = struct.Struct("=HH")            # len, type
# bounds on what one answer may be: a host with thousands of interfaces
# still fits; a kernel (or impostor) that never stops does not
MAX_ANSWER_BYTES = 8 << 20
MAX_QDISCS = 100_000


class NetlinkError(Exception):
    """The kernel's answer was an error, or could not be understood."""


@dataclass(frozen=True)
class Qdisc:
    """One qdisc of a dump: where it hangs and what it is."""

    ifindex: int
    handle: int
    parent: int
    kind: str


@dataclass(frozen=True)
class FqAnswer:
    """Whether the way to a destination is paced by fq, and why (not)."""

    fq: bool
    reason: str
    ifindex: int = 0
    interface: str = ""


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The netlink messages in ``data``: (type, flags, seq, payload).

    Raises :class:`NetlinkError` on a length that is too short or runs
    beyond the data."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _NLMSGHDR.size:
            raise NetlinkError(f"truncated netlink header at byte {pos}")
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or length > len(data) - pos:
            raise NetlinkError(f"netlink message length {length} at byte {pos} "
                               f"does not fit {len(data) - pos} bytes")
        yield kind, flags, seq, bytes(data[pos + _NLMSGHDR.size:pos + length])
        pos += _align(length)


def _attrs(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    pos = start
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size or length > len(data) - pos:
            raise NetlinkError(f"attribute length {length} at byte {pos} "
                               f"does not fit {len(data) - pos} bytes")
        yield kind & 0x3FFF, data[pos + _RTATTR.size:pos + length]  # less NLA_F_* bits
        pos += _align(length)


def _error_of(payload: bytes) -> int:
    if len(payload) < 4:
        raise NetlinkError("truncated netlink error message")
    return -struct.unpack_from("=i", payload)[0]


def parse_route_oif(data: bytes, seq: int) -> int:
    """The output interface index of the ``RTM_NEWROUTE`` answer to
    request ``seq`` in ``data``."""
    for kind, _flags, mseq, payload in parse_messages(data):
        if mseq != seq:
            continue
        if kind == NLMSG_ERROR:
            err = _error_of(payload)
            raise NetlinkError(f"route lookup failed: {os.strerror(err) if err > 0 else err}")
        if kind != RTM_NEWROUTE:
            continue
        if len(payload) < _RTMSG.size:
            raise NetlinkError("truncated route message")
        for akind, value in _attrs(payload, _RTMSG.size):
            if akind == RTA_OIF:
                if len(value) < 4:
                    raise NetlinkError("truncated RTA_OIF")
                oif = struct.unpack_from("=i", value)[0]
                if oif <= 0:
                    raise NetlinkError(f"route names interface index {oif}")
                return oif
        raise NetlinkError("the route has no output interface (RTA_OIF)")
    raise NetlinkError("no answer to the route lookup")


def parse_qdiscs(data: bytes, seq: int) -> tuple[list[Qdisc], bool]:
    """The qdiscs in one chunk of an ``RTM_GETQDISC`` dump answer to
    ``seq``, and whether the dump is done (``NLMSG_DONE`` seen)."""
    out: list[Qdisc] = []
    for kind, _flags, mseq, payload in parse_messages(data):
        if mseq != seq:
            continue
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            err = _error_of(payload)
            raise NetlinkError(f"qdisc dump failed: {os.strerror(err) if err > 0 else err}")
        if kind != RTM_NEWQDISC:
            continue
        if len(payload) < _TCMSG.size:
            raise NetlinkError("truncated qdisc message")
        _fam, _p1, _p2, ifindex, handle, parent, _info = _TCMSG.unpack_from(payload)
        qkind = ""
        for akind, value in _attrs(payload, _TCMSG.size):
            if akind == TCA_KIND:
                qkind = value.split(b"\0", 1)[0].decode("ascii", "replace")
        out.append(Qdisc(ifindex, handle, parent, qkind))
    return out, False


def fq_verdict(qdiscs: list[Qdisc], ifindex: int) -> tuple[bool, str]:
    """Whether interface ``ifindex``'s transmit path is fq, and why (not)."""
    mine = [q for q in qdiscs if q.ifindex == ifindex]
    roots = [q for q in mine if q.parent == TC_H_ROOT]
    if len(roots) != 1:
        return False, f"{len(roots)} root qdiscs on the interface (want one)"
    root = roots[0]
    if root.kind == "fq":
        return True, "root qdisc is fq"
    if root.kind not in MULTIQUEUE:
        return False, f"root qdisc is {root.kind or '(no kind)'}, not fq"
    major = root.handle & TC_H_MAJ_MASK
    children = [q for q in mine if q is not root and q.parent != TC_H_ROOT
                and major and q.parent & TC_H_MAJ_MASK == major]
    if not children:
        return False, f"root qdisc {root.kind} has no child qdiscs"
    others = sorted({q.kind or "(no kind)" for q in children if q.kind != "fq"})
    if others:
        return False, f"root qdisc {root.kind} has non-fq children ({', '.join(others)})"
    return True, f"root qdisc {root.kind}, every one of its {len(children)} children fq"


def _request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def _rtattr(kind: int, value: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


class _Netlink:
    """A NETLINK_ROUTE socket with bounded waits."""

    def __init__(self, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.settimeout(timeout)
        self.sock.bind((0, 0))
        self.seq = int(time.monotonic_ns()) & 0x7FFFFFFF

    def ask(self, kind: int, flags: int, body: bytes) -> int:
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        self.sock.send(_request(kind, NLM_F_REQUEST | flags, self.seq, body))
        return self.seq

    def recv(self) -> bytes:
        return self.sock.recv(1 << 16)

    def close(self) -> None:
        self.sock.close()


def _route_body(address: str) -> bytes:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    bits = 32 if ip.version == 4 else 128
    return (_RTMSG.pack(family, bits, 0, 0, 0, 0, 0, 0, 0)
            + _rtattr(RTA_DST, ip.packed))


def query_oif(address: str, timeout: float = 1.0) -> int:
    """The interface index the kernel routes ``address`` (numeric) out of."""
    body = _route_body(address)
    nl = _Netlink(timeout)
    try:
        seq = nl.ask(RTM_GETROUTE, 0, body)
        return parse_route_oif(nl.recv(), seq)
    finally:
        nl.close()


def query_qdiscs(timeout: float = 1.0) -> list[Qdisc]:
    """Every qdisc of this network namespace (an RTM_GETQDISC dump)."""
    nl = _Netlink(timeout)
    try:
        seq = nl.ask(RTM_GETQDISC, NLM_F_DUMP, _TCMSG.pack(0, 0, 0, 0, 0, 0, 0))
        out: list[Qdisc] = []
        total = 0
        while True:
            chunk = nl.recv()
            total += len(chunk)
            if not chunk or total > MAX_ANSWER_BYTES:
                raise NetlinkError(f"qdisc dump ended early or ran past {MAX_ANSWER_BYTES} bytes")
            found, done = parse_qdiscs(chunk, seq)
            out.extend(found)
            if len(out) > MAX_QDISCS:
                raise NetlinkError(f"more than {MAX_QDISCS} qdiscs")
            if done:
                return out
    finally:
        nl.close()


def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"#{ifindex}"


class FqDetector:
    """Answers "is fq on the way to this address?", cached per interface
    for ``ttl`` seconds (``clock`` and the two queries may be replaced,
    for tests).

    The route to each address is cached for ``ttl`` too (at most
    ``max_routes`` addresses, then it starts again empty): asking rtnetlink
    costs about 0.1 ms, a tenth of a viewer's start-up, and a player's
    tracks and its next sessions come from the same address. A route that
    changes is seen within ``ttl``, as a qdisc that changes is.
    """

    def __init__(self, ttl: float = 5.0, *, clock: Callable[[], float] = time.monotonic,
                 oif: Callable[[str], int] = query_oif,
                 qdiscs: Callable[[], list[Qdisc]] = query_qdiscs,
                 max_routes: int = 4096) -> None:
        self.ttl = ttl
        self.max_routes = max_routes
        self._routes: dict[str, tuple[float, int, str]] = {}
        self._clock = clock
        self._oif = oif
        self._qdiscs = qdiscs
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, bool, str]] = {}

    def detect(self, address: str) -> FqAnswer:
        """Whether packets to ``address`` (numeric IPv4/IPv6) leave through
        fq. Every failure is an answer: not fq, and why."""
        now = self._clock()
        with self._lock:
            route = self._routes.get(address)
        if route is not None and now - route[0] < self.ttl:
            _, ifindex, name = route
        else:
            try:
                ifindex = self._oif(address)
            except (NetlinkError, OSError, ValueError) as exc:
                return FqAnswer(False, f"no egress interface for {address}: {exc}")
            name = _ifname(ifindex)
            with self._lock:
                if len(self._routes) >= self.max_routes:
                    self._routes.clear()
                self._routes[address] = (now, ifindex, name)
        with self._lock:
            hit = self._cache.get(ifindex)
        if hit is not None and now - hit[0] < self.ttl:
            return FqAnswer(hit[1], f"{name}: {hit[2]}", ifindex, name)
        try:
            fq, why = fq_verdict(self._qdiscs(), ifindex)
        except (NetlinkError, OSError) as exc:
            fq, why = False, f"qdiscs unknown: {exc}"
        with self._lock:
            self._cache[ifindex] = (now, fq, why)
        return FqAnswer(fq, f"{name}: {why}", ifindex, name)


_default: Optional[FqDetector] = None


def detect_fq(address: str) -> FqAnswer:
    """:meth:`FqDetector.detect` with a process-wide detector (its cache
    shared by every engine of the process)."""
    global _default
    if _default is None:
        _default = FqDetector()
    return _default.detect(address)
