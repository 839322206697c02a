"""An end-of-stream trailer that makes MPEG-TS demuxers flush the last frame.

A video PES in MPEG-TS usually has no length: a demuxer knows it is
complete only when the next PES on its PID starts. Reading a file, EOF
ends it; ffmpeg's RTP path (5.1) never flushes at RTCP BYE, so the last
video frame of every title is lost. The trailer is one TS packet per PES
PID that starts an empty padding-stream PES (stream_id 0xBE): it ends the
open PES, carries no data, and every demuxer drops it. Sent once per
stream end, never per packet.
"""

from __future__ import annotations

TS_PACKET = 188
# How far from the end to look for each PID's last packet.
TAIL_BYTES = 4 << 20
PADDING_STREAM = 0xBE


def _pes_stream(stream_id: int) -> bool:
    return 0xC0 <= stream_id <= 0xEF or stream_id == 0xBD


def last_continuity(data, end: int | None = None) -> dict[int, int]:
    """{PID: continuity counter of its last payload packet} for the PES PIDs
    seen starting a PES within the last TAIL_BYTES of ``data``."""
    end = len(data) if end is None else end
    end -= end % TS_PACKET
    start = max(0, end - TAIL_BYTES)
    start -= start % TS_PACKET
    last_cc: dict[int, int] = {}
    pes_pids: set[int] = set()
    for off in range(start, end, TS_PACKET):
        pkt = data[off:off + 4]
        if pkt[0] != 0x47:
            continue
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        afc = pkt[3] >> 4 & 0x3
        if not afc & 0x1:
            continue  # no payload: the counter does not advance
        last_cc[pid] = pkt[3] & 0x0F
        if pkt[1] & 0x40:
            body = 4 + (1 + data[off + 4] if afc & 0x2 else 0)
            head = data[off + body:off + body + 4]
            if len(head) == 4 and head[:3] == b"\x00\x00\x01" and _pes_stream(head[3]):
                pes_pids.add(pid)
    return {pid: last_cc[pid] for pid in sorted(pes_pids)}


def flush_packet(pid: int, continuity: int) -> bytes:
    """One TS packet on ``pid`` starting an empty padding-stream PES."""
    pes = bytes([0, 0, 1, PADDING_STREAM, 0, 0])
    stuffing = TS_PACKET - 4 - 1 - len(pes)   # adaptation field length
    adaptation = bytes([stuffing, 0x00]) + b"\xff" * (stuffing - 1)
    header = bytes([0x47, 0x40 | (pid >> 8 & 0x1F), pid & 0xFF,
                    0x30 | (continuity + 1) & 0x0F])
    return header + adaptation + pes


def pes_flush_trailer(data, end: int | None = None) -> bytes:
    """The trailer for a title whose bytes are ``data`` (up to 7 packets)."""
    pids = last_continuity(data, end)
    return b"".join(flush_packet(pid, cc) for pid, cc in list(pids.items())[:7])
