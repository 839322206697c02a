"""RTP (RFC 3550) in Python: a model for tests and control, never per packet.

The engines build headers in C or in the kernel; this module is the
reference they are checked against and the parser tests use on received
packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rtpengine.entropy import randbelow

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
_HDR = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A buffer is not a valid RTP packet."""


def seq_add(seq: int, n: int) -> int:
    """Sequence number ``n`` packets after ``seq`` (16-bit wrap-around)."""
    return (seq + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 16-bit sequence space."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def ts_add(ts: int, n: int) -> int:
    """RTP timestamp ``n`` ticks after ``ts`` (32-bit wrap-around)."""
    return (ts + n) & 0xFFFFFFFF


def ts_newer(a: int, b: int) -> bool:
    """True if timestamp ``a`` is after ``b`` in 32-bit serial arithmetic."""
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


def random_seq() -> int:
    """Random initial sequence number (RFC 3550 section 5.1)."""
    return randbelow(0x10000)


def random_ts() -> int:
    """Random initial timestamp (RFC 3550 section 5.1)."""
    return randbelow(0x100000000)


def random_ssrc() -> int:
    """Random non-zero SSRC."""
    return randbelow(0xFFFFFFFF) + 1


@dataclass(frozen=True)
class RtpHeader:
    """The fixed 12-byte RTP header (no CSRCs or extensions are sent)."""

    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    marker: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type < 128:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if not 0 <= self.seq <= 0xFFFF:
            raise RtpError(f"sequence number {self.seq} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise RtpError("timestamp or SSRC out of range")

    def pack(self) -> bytes:
        """The 12 header bytes."""
        return _HDR.pack(RTP_VERSION << 6, (self.marker << 7) | self.payload_type,
                         self.seq, self.timestamp, self.ssrc)


def parse_rtp(packet: bytes) -> tuple[RtpHeader, bytes]:
    """Split a received packet into its header and payload.

    CSRCs, a header extension and padding are skipped as RFC 3550 says.
    """
    if len(packet) < RTP_HEADER_SIZE:
        raise RtpError(f"{len(packet)} bytes is shorter than an RTP header")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(packet)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}")
    start = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(packet) < start + 4:
            raise RtpError("truncated header extension")
        start += 4 + 4 * struct.unpack_from("!H", packet, start + 2)[0]
    end = len(packet)
    if b0 & 0x20:
        if end == 0 or packet[-1] == 0:
            raise RtpError("bad padding")
        end -= packet[-1]
    if start > end:
        raise RtpError("header longer than packet")
    return RtpHeader(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80)), packet[start:end]
