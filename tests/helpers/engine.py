"""What the engine tests share: loopback RTP receivers that keep every
packet and its arrival time, hint files made from records, the reference
packetiser's packets, and ways to tell the engine's faults from loopback's.

Used on the host and inside the QEMU guest (KVOD_GUEST=1), where software
emulation makes everything about ten times slower: default waits scale
with ``TIME_SCALE``.
"""

from __future__ import annotations

import math
import os
import selectors
import socket
import struct
import time
from typing import TYPE_CHECKING

import pytest

from rtpengine.hintfile import (HEADER_SIZE, REC_BLOB, REC_KEYFRAME, REC_MARKER, HintFile,
                                HintHeader, HintRecord, write_hint_file)
from rtpengine.packetizer import packetize

if TYPE_CHECKING:
    from rtpengine.engine import Engine, Stream

#: how much slower than the host the tests run (the QEMU guest emulates the CPU)
TIME_SCALE = 12.0 if os.environ.get("KVOD_GUEST") else 1.0

SO_RCVBUFFORCE = 33


SO_NO_CHECK = 11


SO_TIMESTAMPNS = 35


MS = 1_000_000


SEC = 1_000_000_000


class Receiver:
    """A UDP socket on 127.0.0.1 that keeps every packet and its arrival
    time (the kernel's stamp, moved to CLOCK_MONOTONIC: the engine's
    clock)."""

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # kernel arrival stamps, so that a late drain does not skew times
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)
        self.packets: list[bytes] = []
        self.times: list[int] = []
        # Loopback ports are reused: another process's stream to a port that
        # was closed may land here. Only the senders made below count.
        self._senders: set = set()
        self.strays = 0
        self._realtime_offset = time.time_ns() - time.monotonic_ns()
        self.kernel_before = loopback_counters()

    def sender(self) -> socket.socket:
        """A UDP socket connected to this receiver."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.sock.getsockname())
        self._senders.add(s.getsockname())
        return s

    def drain(self) -> int:
        """Read what is queued now; returns how many packets came."""
        n = 0
        while True:
            try:
                data, anc, _, source = self.sock.recvmsg(65536, 64)
            except BlockingIOError:
                return n
            if self._senders and source not in self._senders:
                self.strays += 1
                continue
            stamp = time.time_ns()
            for level, kind, value in anc:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    sec, nsec = struct.unpack("@ll", value[:16])
                    stamp = sec * SEC + nsec
            self.packets.append(data)
            self.times.append(stamp - self._realtime_offset)
            n += 1

    def collect(self, n: int, timeout: float | None = None) -> list[bytes]:
        """Wait until ``n`` packets in all have come (or the timeout: 5 s on
        the host by default)."""
        deadline = time.monotonic() + (5.0 * TIME_SCALE if timeout is None else timeout)
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while len(self.packets) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if sel.select(left):
                    self.drain()
        return self.packets

    def settle(self, quiet: float = 0.1) -> list[bytes]:
        """Read until nothing has come for ``quiet`` seconds."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while sel.select(quiet * TIME_SCALE):
                self.drain()
        return self.packets

    def drops(self) -> int:
        """Datagrams the kernel dropped at this socket (receive buffer or
        memory limits): the drops column of /proc/net/udp."""
        ino = os.fstat(self.sock.fileno()).st_ino
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[9]) == ino:
                    return int(cols[12])
        return 0

    def kernel_losses(self) -> dict:
        """What the kernel lost since this receiver was made: its own
        drops exactly, and the machine's loopback counters (any traffic)
        that grew."""
        now = loopback_counters()
        lost = {k: now[k] - v for k, v in self.kernel_before.items() if now[k] > v}
        drops = self.drops()
        if drops:
            lost["socket_drops"] = drops
        return lost

    def close(self) -> None:
        self.sock.close()


def loopback_counters() -> dict:
    """Kernel counters of packets lost between a loopback sender and its
    receiver: the per-CPU backlog (netdev_max_backlog, /proc/net/softnet_stat
    column 2), loopback's own rx drops, UDP receive buffer and memory drops,
    and sends that udp_send_skb() reported as done although ip_send_skb()
    said ENOBUFS (SndbufErrors)."""
    c = {}
    with open("/proc/net/softnet_stat") as f:
        c["backlog_drops"] = sum(int(line.split()[1], 16) for line in f)
    with open("/sys/class/net/lo/statistics/rx_dropped") as f:
        c["lo_rx_dropped"] = int(f.read())
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    udp = dict(zip(rows[0][1:], map(int, rows[1][1:])))
    for k in ("RcvbufErrors", "MemErrors", "SndbufErrors", "InErrors"):
        c["udp_" + k] = udp.get(k, 0)
    return c


def check_stream(got: list[bytes], want: list[bytes], rx: Receiver, st=None) -> None:
    """The packets of one stream equal the reference's, told apart from what
    loopback does to them: the two CPUs' backlogs may deliver packets out
    of send order (a CPU's backlog left to ksoftirqd while the sender runs
    on the other), which is not the engine's; a packet the kernel dropped
    (its counters say so, and the engine counts it sent) is not either."""
    if got == want:
        return
    order = {ssrc_seq(p): i for i, p in enumerate(want)}
    if sorted(got, key=lambda p: order.get(ssrc_seq(p), -1)) == want:
        return  # every packet once and byte-identical: only arrival order differs
    lost = rx.kernel_losses()
    engine_sent_all = st is None or (st.packets_sent == len(want) and
                                     st.packets_dropped == 0)
    have = set(map(bytes, got))
    if lost and engine_sent_all and len(got) < len(want) and have <= set(want):
        pytest.xfail(f"loopback lost {len(want) - len(got)} of {len(want)} "
                     f"packets, not the engine: {lost}")
    raise AssertionError(f"{difference(got, want)}\nkernel: {lost or 'no losses'}"
                         f"\nengine: {st}")


def write_hints(path, records: list[HintRecord], *, payload_type: int = 33,
                blob: bytes = b"", duration_ns: int | None = None) -> str:
    """A hint file of ``records``, with ``blob`` as its blob area."""
    body = b"".join(r.pack() for r in records)
    duration = duration_ns if duration_ns is not None else (
        records[-1].send_ns if records else 0)
    header = HintHeader(clock_rate=90000, payload_type=payload_type,
                        record_count=len(records), duration_ns=duration,
                        blob_offset=HEADER_SIZE + len(body) if blob else 0,
                        blob_size=len(blob))
    path = os.fspath(path)
    if blob:
        with open(path, "wb") as f:
            f.write(header.pack() + body + blob)
    else:
        write_hint_file(path, header, body)
    return path


def chunk_records(size: int, duration_ns: int, chunk: int = 1316,
                  gap_ns: int | None = None) -> list[HintRecord]:
    """Records cutting ``size`` media bytes into ``chunk``-byte payloads
    (7 TS packets, as RFC 2250 does) plus a short last one, spread evenly
    over ``duration_ns`` (or ``gap_ns`` apart)."""
    n = math.ceil(size / chunk)
    recs = []
    for i in range(n):
        off = i * chunk
        send = i * gap_ns if gap_ns is not None else i * duration_ns // n
        recs.append(HintRecord(off, min(chunk, size - off), send * 90000 // SEC,
                               send, REC_KEYFRAME if i % 25 == 0 else 0, b""))
    return recs


def expected(hint_path: str, media_path: str, **kw) -> list[bytes]:
    """The reference packetiser's packets."""
    with open(media_path, "rb") as f:
        media = f.read()
    with HintFile(hint_path) as hints:
        return list(packetize(hints, media, **kw))


def open_stream(engine: Engine, sock: socket.socket, media_path: str,
                hint_path: str, **kw) -> Stream:
    """Open a stream and close the caller's descriptors at once: the engine
    must hold its own."""
    with open(media_path, "rb") as media, open(hint_path, "rb") as hints:
        stream = engine.open_stream(sock, media, hints, **kw)
    sock.close()
    return stream


def wait_state(stream: Stream, states, timeout: float | None = None):
    """Poll until the stream's state is ``states`` (one name or several);
    returns its stats. The default wait is 5 s on the host."""
    if isinstance(states, str):
        states = (states,)
    deadline = time.monotonic() + (5.0 * TIME_SCALE if timeout is None else timeout)
    while True:
        s = stream.stats()
        if s.state in states or time.monotonic() > deadline:
            return s
        time.sleep(0.005)


def ssrc_seq(packet: bytes) -> tuple[int, int]:
    """An RTP packet's (SSRC, sequence number): which packet it is."""
    return struct.unpack_from("!I", packet, 8)[0], struct.unpack_from("!H", packet, 2)[0]


def seqs(packets: list[bytes]) -> list[int]:
    return [struct.unpack_from("!H", p, 2)[0] for p in packets]


def difference(got: list[bytes], want: list[bytes]) -> str:
    """How two packet lists differ, for an assertion message: counts, packets
    received twice, missing ones, and the first packet that differs (by
    position), so that a rare failure says what happened."""
    seen: dict[tuple, int] = {}
    for p in got:
        seen[ssrc_seq(p)] = seen.get(ssrc_seq(p), 0) + 1
    twice = [k for k, n in seen.items() if n > 1]
    wanted = {ssrc_seq(p) for p in want}
    lines = [f"{len(got)} packets, {len(want)} wanted; (ssrc, seq) received more than "
             f"once: {twice[:5]}; missing: {sorted(wanted - set(seen))[:5]}; "
             f"unknown: {sorted(set(seen) - wanted)[:5]}"]
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            at = next(j for j in range(min(len(a), len(b))) if a[j] != b[j]) \
                if a[:len(b)] != b[:len(a)] else min(len(a), len(b))
            lines.append(f"first difference: packet {i} (ssrc, seq) {ssrc_seq(a)} vs {ssrc_seq(b)}, "
                         f"{len(a)} vs {len(b)} bytes, first differing byte {at}; "
                         f"same bytes elsewhere in the list: {b in got}")
            break
    return "\n".join(lines)


def ts_title_hints(ts_file: str, path) -> str:
    """1316-byte records over the title, ending with a shorter one: the
    title is as long as ffmpeg made it (one time in seven a multiple of
    1316 bytes), so then the records leave its last TS packet out."""
    size = os.path.getsize(ts_file)
    if size % 1316 == 0:
        size -= 188
    return write_hints(path, chunk_records(size, 10 * SEC))


def odd_records(media_size: int, blob_size: int) -> list[HintRecord]:
    """Records that stress batching: runs of equal sizes longer than a GSO
    message holds, shorter and longer packets, prefixes, BLOB payloads,
    markers, empty payloads, datagrams near the size limit."""
    recs = []
    t = 0

    def add(off, length, flags=0, prefix=b""):
        nonlocal t
        recs.append(HintRecord(off, length, (t * 7919) & 0xFFFFFFFF, t * 1000,
                               flags, prefix))
        t += 1

    for i in range(70):                          # > 64 equal segments
        add(i * 100, 100)
    add(7000, 60)                                # shorter: ends a message
    add(7100, 60)
    add(7200, 900, REC_MARKER)                   # longer: a new message
    for i in range(5):
        add(8000 + i * 50, 47, 0, b"\x7c\x85")   # FU-A-like prefix
    add(9000, 49)                                # same size as 47 + 2
    add(0, 0, REC_MARKER, b"\x01\x02\x03\x04\x05")  # prefix only
    add(0, 0)                                    # header only
    for i in range(4):
        add(i * 10, 10, REC_BLOB)                # from the hint's blob area
    add(blob_size - 3, 3, REC_BLOB | REC_MARKER)
    for i in range(6):                           # 6 x 12000 > 65507: split
        add(i * 12000, 12000)
    add(0, 65507 - 12 - 5, 0, b"abcde")          # the largest datagram
    add(media_size - 1, 1)                       # the last media byte
    return recs


def odd_title(tmp_path) -> tuple:
    """A random 80 kB title and its odd records (see odd_records), with a
    blob in the hint file: (media path, hint path)."""
    media = tmp_path / "odd.bin"
    media.write_bytes(os.urandom(80000))
    blob = bytes(range(256)) * 2
    hints = write_hints(tmp_path / "odd.hint", odd_records(80000, len(blob)),
                        payload_type=96, blob=blob)
    return media, hints
