"""RTCP (RFC 3550 section 6) in Python: a model for control, never per packet.

kvod sends a sender report, an SDES CNAME and at the end a BYE for each
stream, and reads the receiver reports clients send back into loss and
jitter figures. Received compounds are untrusted: ``parse_compound``
applies the validity checks of RFC 3550 appendix A.2 (version 2, an SR or
RR first, no padding but on the last packet, lengths that add up to the
datagram) and checks each packet's own layout, raising ``RtcpError`` for
anything else.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Union

RTCP_VERSION = 2
SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204
SDES_END, SDES_CNAME = 0, 1
MAX_COUNT = 31                      # the 5-bit RC / SC field
# One datagram, or one interleaved frame on the RTSP connection.
MAX_COMPOUND_BYTES = 65535

NTP_UNIX_OFFSET = 2_208_988_800     # seconds from 1900-01-01 to 1970-01-01

_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIIII")  # sender SSRC, NTP hi, NTP lo, RTP ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")    # SSRC, lost (8+24 bits), highest seq, jitter, LSR, DLSR
_U32 = struct.Struct("!I")


class RtcpError(ValueError):
    """A buffer is not a valid RTCP compound packet, or a value does not fit."""


# ------------------------------------------------------------- NTP time ---

def unix_to_ntp(unix_time: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time.

    The seconds wrap in 2036 as NTP's do (era 1 starts at 0 again).
    """
    if not math.isfinite(unix_time) or unix_time < -NTP_UNIX_OFFSET:
        raise RtcpError(f"{unix_time!r} is not a time NTP can hold")
    seconds = unix_time + NTP_UNIX_OFFSET
    whole = math.floor(seconds)
    fraction = round((seconds - whole) * 2**32)
    if fraction == 2**32:
        whole, fraction = whole + 1, 0
    return ((whole & 0xFFFFFFFF) << 32) | fraction


def ntp_to_unix(ntp: int) -> float:
    """The Unix time of a 64-bit NTP timestamp.

    Seconds with the top bit clear are taken as era 1 (2036-2104), as
    RFC 4330 section 3 suggests, so times 1968-2104 come back right.
    """
    seconds, fraction = ntp >> 32, ntp & 0xFFFFFFFF
    if seconds < 0x80000000:
        seconds += 2**32
    return seconds - NTP_UNIX_OFFSET + fraction / 2**32


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR a receiver echoes."""
    return (ntp >> 16) & 0xFFFFFFFF


# -------------------------------------------------------------- packets ---

def _check_u32(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise RtcpError(f"{name} {value!r} is not a 32-bit unsigned number")


def _check_count(what: str, items: tuple) -> None:
    if len(items) > MAX_COUNT:
        raise RtcpError(f"{len(items)} {what} do not fit a 5-bit count")


def _header(padding: bool, count: int, packet_type: int, body_len: int) -> bytes:
    return _HEADER.pack((RTCP_VERSION << 6) | (padding << 5) | count, packet_type,
                        body_len // 4)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


@dataclass(frozen=True)
class ReportBlock:
    """Reception statistics for one source (RFC 3550 section 6.4.1).

    ``cumulative_lost`` is signed: duplicates can make it negative.
    ``jitter`` is in RTP timestamp units; ``lsr`` and ``dlsr`` in 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def __post_init__(self) -> None:
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            _check_u32(name, getattr(self, name))
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"fraction lost {self.fraction_lost} is not 0..255")
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise RtcpError(f"cumulative lost {self.cumulative_lost} is not signed 24-bit")

    @property
    def loss_fraction(self) -> float:
        """Fraction of packets lost since the previous report, 0.0 to ~1.0."""
        return self.fraction_lost / 256

    def round_trip_seconds(self, arrival_unix: float) -> float | None:
        """Round-trip time to the reporter (RFC 3550 section 6.4.1), or None
        before it has seen a sender report (LSR 0)."""
        if self.lsr == 0:
            return None
        now = ntp_middle32(unix_to_ntp(arrival_unix))
        return ((now - self.lsr - self.dlsr) & 0xFFFFFFFF) / 65536

    def pack(self) -> bytes:
        """The 24 bytes of this block."""
        lost = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost, self.highest_seq, self.jitter, self.lsr, self.dlsr)


def _parse_block(data: bytes, offset: int) -> ReportBlock:
    ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
    cumulative = lost & 0xFFFFFF
    if cumulative & 0x800000:
        cumulative -= 0x1000000
    return ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True)
class SenderReport:
    """SR: what a sender sent, and when (``ntp_timestamp`` is the raw 64 bits).

    ``extension`` holds profile-specific bytes after the report blocks.
    """

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    report_blocks: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _check_u32(name, getattr(self, name))
        if not 0 <= self.ntp_timestamp < 2**64:
            raise RtcpError(f"NTP timestamp {self.ntp_timestamp} is not 64-bit")
        object.__setattr__(self, "report_blocks", tuple(self.report_blocks))
        _check_count("report blocks", self.report_blocks)
        if len(self.extension) % 4:
            raise RtcpError("a profile extension is a whole number of 32-bit words")

    @property
    def ntp_time(self) -> float:
        """The NTP timestamp as Unix time."""
        return ntp_to_unix(self.ntp_timestamp)

    def pack(self) -> bytes:
        """The SR packet, without padding."""
        body = _SR_INFO.pack(self.ssrc, self.ntp_timestamp >> 32,
                             self.ntp_timestamp & 0xFFFFFFFF, self.rtp_timestamp,
                             self.packet_count, self.octet_count)
        body += b"".join(b.pack() for b in self.report_blocks) + self.extension
        return _header(False, len(self.report_blocks), SR, len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    """RR: reception statistics from a participant that does not send."""

    ssrc: int
    report_blocks: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_u32("ssrc", self.ssrc)
        object.__setattr__(self, "report_blocks", tuple(self.report_blocks))
        _check_count("report blocks", self.report_blocks)
        if len(self.extension) % 4:
            raise RtcpError("a profile extension is a whole number of 32-bit words")

    def pack(self) -> bytes:
        """The RR packet, without padding."""
        body = _U32.pack(self.ssrc) + b"".join(b.pack() for b in self.report_blocks)
        body += self.extension
        return _header(False, len(self.report_blocks), RR, len(body)) + body


@dataclass(frozen=True)
class SdesChunk:
    """The items one source describes itself with: ``(type, text bytes)``."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        _check_u32("ssrc", self.ssrc)
        object.__setattr__(self, "items", tuple(self.items))
        for kind, text in self.items:
            if not 1 <= kind <= 255 or len(text) > 255:
                raise RtcpError(f"SDES item {kind} of {len(text)} bytes does not fit")

    @property
    def cname(self) -> str | None:
        """The CNAME item as text, if there is one."""
        for kind, text in self.items:
            if kind == SDES_CNAME:
                return text.decode("utf-8", "replace")
        return None

    def pack(self) -> bytes:
        """The chunk, ended by a null item and padded to 32 bits."""
        items = b"".join(bytes((kind, len(text))) + text for kind, text in self.items)
        return _pad4(_U32.pack(self.ssrc) + items + b"\0")


@dataclass(frozen=True)
class SourceDescription:
    """SDES: one chunk per described source."""

    chunks: tuple[SdesChunk, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", tuple(self.chunks))
        _check_count("SDES chunks", self.chunks)

    def pack(self) -> bytes:
        """The SDES packet."""
        body = b"".join(c.pack() for c in self.chunks)
        return _header(False, len(self.chunks), SDES, len(body)) + body


@dataclass(frozen=True)
class Bye:
    """BYE: the sources are leaving; ``reason`` is optional text.

    Received reason bytes that are not UTF-8 are kept as surrogate escapes,
    so a parsed BYE packs back to the same reason bytes.
    """

    ssrcs: tuple[int, ...]
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ssrcs", tuple(self.ssrcs))
        _check_count("BYE sources", self.ssrcs)
        for ssrc in self.ssrcs:
            _check_u32("ssrc", ssrc)
        if self.reason is not None and len(self._reason_bytes()) > 255:
            raise RtcpError("a BYE reason is at most 255 bytes")

    def _reason_bytes(self) -> bytes:
        try:
            return (self.reason or "").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise RtcpError(f"BYE reason {self.reason!r} cannot be encoded") from None

    def pack(self) -> bytes:
        """The BYE packet."""
        body = b"".join(_U32.pack(s) for s in self.ssrcs)
        if self.reason is not None:
            text = self._reason_bytes()
            body = _pad4(body + bytes((len(text),)) + text)
        return _header(False, len(self.ssrcs), BYE, len(body)) + body


@dataclass(frozen=True)
class RawPacket:
    """A packet kvod does not interpret (APP, XR, feedback ...), kept as is."""

    packet_type: int
    count: int
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.packet_type <= 255 or not 0 <= self.count <= MAX_COUNT:
            raise RtcpError("packet type or count out of range")
        if len(self.payload) % 4:
            raise RtcpError("an RTCP payload is a whole number of 32-bit words")

    def pack(self) -> bytes:
        """The packet with its header."""
        return _header(False, self.count, self.packet_type, len(self.payload)) + self.payload


RtcpPacket = Union[SenderReport, ReceiverReport, SourceDescription, Bye, RawPacket]


# ------------------------------------------------------------- building ---

def build_sender_report(ssrc: int, ntp_time: float, rtp_ts: int, packet_count: int,
                        octet_count: int, report_blocks: tuple[ReportBlock, ...] = ()) -> bytes:
    """An SR packet; ``ntp_time`` is wall-clock Unix time in seconds.

    The counts wrap at 32 bits as RFC 3550 says they do.
    """
    return SenderReport(ssrc, unix_to_ntp(ntp_time), rtp_ts, packet_count & 0xFFFFFFFF,
                        octet_count & 0xFFFFFFFF, tuple(report_blocks)).pack()


def build_receiver_report(ssrc: int, report_blocks: tuple[ReportBlock, ...] = ()) -> bytes:
    """An RR packet (what clients send; kvod builds them for tests)."""
    return ReceiverReport(ssrc, tuple(report_blocks)).pack()


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk holding the CNAME of ``ssrc``."""
    text = cname.encode("utf-8")
    if not text:
        raise RtcpError("a CNAME cannot be empty")
    return SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, text),)),)).pack()


def build_bye(ssrc: int, reason: str | None = None) -> bytes:
    """A BYE packet for ``ssrc``."""
    return Bye((ssrc,), reason).pack()


def build_compound(*packets: bytes) -> bytes:
    """Packets joined into one compound, checked as a receiver would check it.

    RFC 3550 section 6.1: the first packet is an SR or RR (then SDES with
    the CNAME, and BYE last when leaving).
    """
    compound = b"".join(packets)
    parse_compound(compound)
    return compound


# -------------------------------------------------------------- parsing ---

def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtcpError("SDES chunk runs past its packet")
        ssrc = _U32.unpack_from(body, pos)[0]
        pos += 4
        items = []
        while True:
            if pos >= len(body):
                raise RtcpError("SDES chunk has no end item")
            kind = body[pos]
            if kind == SDES_END:
                pos = (pos + 4) & ~3  # the null item, then zeros to 32 bits
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("SDES item runs past its packet")
            items.append((kind, bytes(body[pos + 2:pos + 2 + body[pos + 1]])))
            pos += 2 + body[pos + 1]
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos != len(body):
        raise RtcpError(f"SDES has {len(body) - pos} bytes after its {count} chunks")
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, body: bytes) -> Bye:
    end = 4 * count
    if end > len(body):
        raise RtcpError(f"BYE of {len(body)} bytes cannot hold {count} sources")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    if end < len(body):
        length = body[end]
        if end + 1 + length > len(body):
            raise RtcpError("BYE reason runs past its packet")
        if len(body) - (end + 1 + length) > 3:
            raise RtcpError("BYE has bytes after its reason and padding")
        reason = bytes(body[end + 1:end + 1 + length]).decode("utf-8", "surrogateescape")
    return Bye(ssrcs, reason)


def _parse_packet(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        blocks_at = _SR_INFO.size
        end = blocks_at + _BLOCK.size * count
        if len(body) < end:
            raise RtcpError(f"SR body of {len(body)} bytes, {end} needed for {count} blocks")
        ssrc, hi, lo, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        blocks = tuple(_parse_block(body, blocks_at + _BLOCK.size * i) for i in range(count))
        return SenderReport(ssrc, (hi << 32) | lo, rtp_ts, packets, octets, blocks,
                            bytes(body[end:]))
    if packet_type == RR:
        end = 4 + _BLOCK.size * count
        if len(body) < end:
            raise RtcpError(f"RR body of {len(body)} bytes, {end} needed for {count} blocks")
        blocks = tuple(_parse_block(body, 4 + _BLOCK.size * i) for i in range(count))
        return ReceiverReport(_U32.unpack_from(body)[0], blocks, bytes(body[end:]))
    if packet_type == SDES:
        return _parse_sdes(count, body)
    if packet_type == BYE:
        return _parse_bye(count, body)
    return RawPacket(packet_type, count, bytes(body))


def parse_compound(data: bytes, max_bytes: int = MAX_COMPOUND_BYTES) -> list[RtcpPacket]:
    """The packets of a received compound RTCP packet (RFC 3550 A.2)."""
    if len(data) > max_bytes:
        raise RtcpError(f"{len(data)} bytes is over the {max_bytes}-byte bound")
    if len(data) < _HEADER.size or len(data) % 4:
        raise RtcpError(f"{len(data)} bytes is not a whole number of RTCP words")
    view = memoryview(data)
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError(f"RTCP version {first >> 6} at byte {pos}")
        padded, count = bool(first & 0x20), first & 0x1F
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtcpError(
                f"packet at byte {pos} claims {end - pos} bytes, {len(data) - pos} left")
        if pos == 0 and (padded or packet_type not in (SR, RR)):
            raise RtcpError("a compound must start with an unpadded SR or RR")
        body_end = end
        if padded:
            if end != len(data):
                raise RtcpError("only the last packet of a compound may be padded")
            padding = data[end - 1]
            if padding == 0 or padding > end - pos - _HEADER.size:
                raise RtcpError(f"padding of {padding} bytes does not fit its packet")
            body_end -= padding
        packets.append(_parse_packet(packet_type, count, view[pos + _HEADER.size:body_end]))
        pos = end
    return packets
