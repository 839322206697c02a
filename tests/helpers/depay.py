"""Reference RTP depacketisers for the MP4 payload formats, written from the
RFCs and nothing else: H.264 (RFC 6184 single NAL, STAP-A, FU-A), H.265
(RFC 7798 single NAL, AP, FU) and AAC (RFC 3640 AAC-hbr). Slow and
obvious; tests compare what they rebuild with the samples ffprobe finds
in the file."""

from __future__ import annotations

from rtpengine.rtp import parse_rtp


class DepayError(AssertionError):
    """The packets do not follow the payload format."""


def _units(packets: list[bytes]):
    """(rtp_ts, marker, payload) per packet, checking the sequence numbers run on."""
    prev = None
    for pkt in packets:
        header, payload = parse_rtp(pkt)
        if prev is not None and header.seq != (prev + 1) & 0xFFFF:
            raise DepayError(f"sequence jumps from {prev} to {header.seq}")
        prev = header.seq
        yield header.timestamp, header.marker, payload


def depay_video(packets: list[bytes], codec: str) -> list[tuple[int, list[bytes]]]:
    """Access units as (RTP timestamp, NAL units), cut at the marker bit."""
    hevc = codec == "hevc"
    aus: list[tuple[int, list[bytes]]] = []
    nals: list[bytes] = []
    fu: bytearray | None = None
    ts_now = None
    for ts, marker, p in _units(packets):
        if ts_now is not None and ts != ts_now and nals:
            raise DepayError("timestamp changed inside an access unit (marker missing)")
        ts_now = ts
        kind = (p[0] >> 1) & 0x3F if hevc else p[0] & 0x1F
        if (hevc and kind == 49) or (not hevc and kind == 28):
            hdr = 2 if hevc else 1
            fu_header = p[hdr]
            start, end, inner = fu_header & 0x80, fu_header & 0x40, fu_header & 0x3F \
                if hevc else fu_header & 0x1F
            if start:
                if fu is not None:
                    raise DepayError("FU start inside an FU")
                if hevc:
                    fu = bytearray([(p[0] & 0x81) | (inner << 1), p[1]])
                else:
                    fu = bytearray([(p[0] & 0xE0) | inner])
            elif fu is None:
                raise DepayError("FU continuation without a start")
            fu += p[hdr + 1:]
            if end:
                nals.append(bytes(fu))
                fu = None
        elif (hevc and kind == 48) or (not hevc and kind == 24):
            pos = 2 if hevc else 1
            while pos < len(p):
                n = int.from_bytes(p[pos:pos + 2], "big")
                nals.append(bytes(p[pos + 2:pos + 2 + n]))
                pos += 2 + n
        else:
            nals.append(bytes(p))
        if marker:
            if fu is not None:
                raise DepayError("marker inside an FU")
            aus.append((ts, nals))
            nals = []
            ts_now = None
    if nals or fu is not None:
        raise DepayError("stream ends inside an access unit")
    return aus


def depay_aac(packets: list[bytes]) -> list[tuple[int, bytes]]:
    """AAC access units as (RTP timestamp, AU) from AAC-hbr packets
    (sizelength 13, indexlength 3, indexdeltalength 3)."""
    aus: list[tuple[int, bytes]] = []
    frag: bytearray | None = None
    frag_size = 0
    for ts, marker, p in _units(packets):
        bits = int.from_bytes(p[:2], "big")
        if bits % 16:
            raise DepayError(f"AU-headers-length {bits} is not whole 16-bit headers")
        headers = [int.from_bytes(p[2 + 2 * i:4 + 2 * i], "big") for i in range(bits // 16)]
        data = p[2 + bits // 8:]
        if len(headers) == 1 and (frag is not None or len(data) < headers[0] >> 3):
            size = headers[0] >> 3
            if frag is None:
                frag, frag_size = bytearray(), size
            elif size != frag_size:
                raise DepayError("AU-size changed inside a fragmented AU")
            frag += data
            if marker:
                if len(frag) != frag_size:
                    raise DepayError(f"fragmented AU of {len(frag)} bytes, said {frag_size}")
                aus.append((ts, bytes(frag)))
                frag = None
            continue
        pos = 0
        for h in headers:
            size = h >> 3
            aus.append((ts, bytes(data[pos:pos + size])))
            pos += size
        if pos != len(data):
            raise DepayError(f"AU sizes {pos} disagree with {len(data)} payload bytes")
        if not marker:
            raise DepayError("a packet of whole AUs without the marker bit")
    if frag is not None:
        raise DepayError("stream ends inside a fragmented AU")
    return aus


def split_nals(sample: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of a length-prefixed MP4 sample."""
    out, pos = [], 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos:pos + length_size], "big")
        pos += length_size
        if n:
            out.append(sample[pos:pos + n])
        pos += n
    return out
