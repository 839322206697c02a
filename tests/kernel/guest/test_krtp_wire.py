"""The krtp module on the wire, inside the guest: every packet it sends
must equal the reference packetiser's, byte for byte, for krtpsendfile and
krtpmsend, paced and unpaced, over IPv4 and IPv6, alone or sharing a
socket, in UDP GSO batches or one by one; and a real client (GStreamer)
receives a title whole."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from rtpengine import krtp
from rtpengine.hintfile import REC_BLOB, REC_MARKER, HintRecord
from tests.helpers.engine import SEC, chunk_records, expected, open_stream, wait_state, write_hints
from tests.helpers.krtp import SPLICE_KERNEL, STRATEGIES, raw_fd
from tests.helpers.engine import difference


# --- the ABI handshake ---------------------------------------------------------

def test_handshake_must_come_first_and_match():
    fd = raw_fd()
    try:
        info = bytearray(krtp.INFO.size)
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, krtp.IOC_INFO, info, True)
        assert exc.value.errno == errno.EPROTO
        # a caller from another ABI version is told the module's view
        bad = bytearray(krtp._hello_request())
        struct.pack_into("<I", bad, 0, krtp.ABI_VERSION + 1)
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, krtp.IOC_HELLO, bad, True)
        assert exc.value.errno == errno.EPROTO
        assert struct.unpack_from("<I", bad)[0] == krtp.ABI_VERSION
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, krtp.IOC_INFO, info, True)
        assert exc.value.errno == errno.EPROTO
        # a structure size that differs fails too
        bad = bytearray(krtp._hello_request())
        struct.pack_into("<H", bad, 10, krtp.OPEN.size + 8)
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, krtp.IOC_HELLO, bad, True)
        assert exc.value.errno == errno.EPROTO
        good = krtp._hello_request()
        fcntl.ioctl(fd, krtp.IOC_HELLO, good, True)
        fcntl.ioctl(fd, krtp.IOC_INFO, info, True)
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, 0xC000B9FF, bytearray(8), True)
        assert exc.value.errno == errno.ENOTTY
    finally:
        os.close(fd)
    ok, why = krtp.available()
    assert ok, why


# --- byte for byte -------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("where", ["tmpfs", "9p"])
def test_unpaced_title_is_the_reference(engine_factory, receivers, tmp_path, tmpfs_copy,
                                        ts_file, strategy, where):
    media = tmpfs_copy(ts_file) if where == "tmpfs" else ts_file
    hints = write_hints(tmp_path / "t.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    # sequence numbers and timestamps wrap around during the title
    kw = dict(ssrc=0xDEADBEEF, seq0=65535 - 300, ts0=0xFFFFFFFF - 90000)
    want = expected(hints, media, **kw)
    rx = receivers()
    e = engine_factory(strategy)
    stream = open_stream(e, rx.sender(), media, hints, **kw)
    stream.play(unpaced=True)
    st = wait_state(stream, "ended")
    got = rx.collect(len(want))
    rx.settle(0.2)
    assert st.state == "ended" and st.packets_sent == len(want), st
    assert st.packets_dropped == 0 and st.send_errors == 0
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"packet {i} differs"
    assert st.strategy == strategy
    assert st.spliced_octets == os.path.getsize(media) and st.copied_octets == 0, st
    assert st.last_seq == (65535 - 300 + len(want) - 1) & 0xFFFF
    assert not st.gso_fallback
    if SPLICE_KERNEL:
        # packets due together leave as UDP GSO batches: far fewer calls
        assert st.syscalls * 4 < st.packets_sent, st
    else:
        # 6.1: a corked header, then one ->sendpage() per payload page (a
        # batch is one datagram, but still these calls)
        assert st.syscalls >= 2 * st.packets_sent, st


def test_a_path_without_gso_falls_back_to_single_packets(engine_factory, receivers,
                                                         tmp_path, tmpfs_copy, ts_file):
    """UDP GSO needs checksums: with SO_NO_CHECK the kernel refuses a batch,
    and the stream goes on one packet a call, nothing lost."""
    media = tmpfs_copy(ts_file)
    hints = write_hints(tmp_path / "n.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    kw = dict(ssrc=8, seq0=8, ts0=8)
    want = expected(hints, media, **kw)
    rx = receivers()
    sock = rx.sender()
    sock.setsockopt(socket.SOL_SOCKET, 11, 1)            # SO_NO_CHECK
    stream = open_stream(engine_factory(), sock, media, hints, **kw)
    stream.play(unpaced=True)
    st = wait_state(stream, "ended")
    assert rx.collect(len(want)) == want
    assert st.packets_sent == len(want) and st.packets_dropped == 0
    assert st.gso_fallback                                # a batch was tried


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prefix_marker_blob_and_page_straddling_records(engine_factory, receivers,
                                                        tmp_path, strategy):
    media = tmp_path / "m.bin"
    data = os.urandom(300_000)
    media.write_bytes(data)
    blob = os.urandom(10000)
    recs = [
        HintRecord(0, 1000, 0, 0, REC_MARKER, b"\x7c\x85"),
        HintRecord(4000, 200, 10, 1000, 0, b"\x01\x02\x03\x04\x05"),   # crosses a page
        HintRecord(100, 0, 20, 2000, REC_MARKER, b""),                   # header only
        HintRecord(123, 60000, 30, 3000, 0, b"\xaa"),                    # 16 pages
        HintRecord(0, 3000, 40, 4000, REC_BLOB, b"\x10"),                # from the blob
        HintRecord(4090, 4900, 50, 5000, REC_BLOB | REC_MARKER, b""),
        HintRecord(299_999, 1, 60, 6000, 0, b""),                        # the last byte
    ]
    hints = write_hints(tmp_path / "h.hint", recs, payload_type=96, blob=blob)
    kw = dict(ssrc=1, seq0=65534, ts0=5)
    want = expected(hints, str(media), **kw)
    rx = receivers()
    stream = open_stream(engine_factory(strategy), rx.sender(), str(media), hints, **kw)
    stream.play(unpaced=True)
    st = wait_state(stream, "ended")
    assert rx.collect(len(want)) == want
    assert st.packets_sent == len(want) and st.packets_dropped == 0
    assert st.payload_octets == sum(len(p) - 12 for p in want)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_paced_title_keeps_its_schedule(engine_factory, receivers, tmp_path, tmpfs_copy,
                                        short_ts_file, strategy):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "s.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    kw = dict(ssrc=77, seq0=65000, ts0=123)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(strategy), rx.sender(), media, hints, **kw)
    t0 = time.monotonic_ns() + 200_000_000
    stream.play(at_ns=t0)
    # nothing before the start instant, the whole title by its end
    time.sleep(0.1)
    assert rx.drain() == 0
    got = rx.collect(len(want), timeout=30)
    st = wait_state(stream, "ended")
    assert got == want
    # never early: each packet arrives no sooner than its due time (less
    # the 0.5 ms lookahead); emulation and load may make it late, and then
    # packets due together leave together (one GSO batch), which is fine
    sends = [r.send_ns for r in chunk_records(os.path.getsize(media), 3 * SEC)]
    early = [(i, t0 + ns - t) for i, (ns, t) in enumerate(zip(sends, rx.times))
             if t < t0 + ns - 1_000_000]
    assert not early, early[:5]


# --- a real client -----------------------------------------------------------------

def _udp_listening(port: int) -> bool:
    with open("/proc/net/udp") as f:
        return any(line.split()[1].endswith(f":{port:04X}") for line in list(f)[1:])


def _udp_queued(port: int) -> bool:
    """Bytes wait in the receive queue of the socket on ``port``."""
    with open("/proc/net/udp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}"):
                return int(fields[4].split(":")[1], 16) > 0
    return False


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gstreamer_receives_the_title_whole(engine_factory, tmp_path, tmpfs_copy,
                                            short_ts_file, strategy):
    """GStreamer's rtpmp2tdepay writes exactly the file the module streamed."""
    media = tmpfs_copy(short_ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "g.hint", chunk_records(size, 3 * SEC))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    out = tmp_path / "received.ts"
    gst = subprocess.Popen(
        ["gst-launch-1.0", "-q", "-e", "udpsrc", "address=127.0.0.1", f"port={port}",
         "buffer-size=8388608",
         "caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=MP2T,payload=33",
         "!", "rtpmp2tdepay", "!", "filesink", f"location={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _udp_listening(port):
            assert gst.poll() is None, gst.stdout.read()
            assert time.monotonic() < deadline, "gst-launch never listened"
            time.sleep(0.1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        stream = open_stream(engine_factory(strategy), sock, media, hints,
                             ssrc=0x1234, seq0=65500, ts0=7)
        stream.play()
        st = wait_state(stream, "ended", timeout=60)
        assert st.packets_sent == st.record_count and st.packets_dropped == 0
        # filesink buffers: the size tells nothing until EOS; let the
        # client drain its socket, then stop it
        deadline = time.monotonic() + 30
        while _udp_queued(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        gst.send_signal(signal.SIGINT)          # -e: EOS, then the file is complete
        try:
            gst.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gst.kill()
            gst.wait()
    with open(media, "rb") as f:
        assert out.read_bytes() == f.read()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ipv6_loopback_and_what_was_copied(engine_factory, tmp_path, tmpfs_copy,
                                           short_ts_file, strategy):
    """Over ::1 too; the counters say whether payload was attached or copied:
    6.1's IPv6 sockets have no ->sendpage, so there the stack copies."""
    media = tmpfs_copy(short_ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "v6.hint", chunk_records(size, 3 * SEC))
    kw = dict(ssrc=6, seq0=6, ts0=6)
    want = expected(hints, media, **kw)
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)       # SO_RCVBUFFORCE
    rx.bind(("::1", 0))
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname()[:2])
    try:
        stream = open_stream(engine_factory(strategy), tx, media, hints, **kw)
        stream.play(unpaced=True)
        st = wait_state(stream, "ended")
        rx.settimeout(10)
        got = [rx.recv(65536) for _ in want]
    finally:
        rx.close()
    assert got == want
    assert st.spliced_octets + st.copied_octets == size
    if os.uname().release.startswith("6.1."):
        assert st.copied_octets == size, st
    else:
        assert st.spliced_octets == size, st


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_streams_sharing_one_socket_never_mix(engine_factory, receivers, tmp_path,
                                              tmpfs_copy, ts_file, strategy):
    """Sessions may share one server port: many streams, one socket, sent at
    once by every pacing thread; each datagram is still one whole packet."""
    media = tmpfs_copy(ts_file)
    hints = write_hints(tmp_path / "s.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    rx = receivers()
    sock = rx.sender()
    e = engine_factory(strategy)
    want: dict[int, list[bytes]] = {}
    streams = []
    with open(media, "rb") as m, open(hints, "rb") as h:
        for ssrc in range(1, 5):
            want[ssrc] = expected(hints, media, ssrc=ssrc, seq0=ssrc * 1000, ts0=ssrc)
            streams.append(e.open_stream(sock, m, h, ssrc=ssrc, seq0=ssrc * 1000, ts0=ssrc))
    sock.close()
    for s in streams:
        s.play(unpaced=True)
    for s in streams:
        assert wait_state(s, "ended").packets_sent == len(want[1])
    got = rx.collect(4 * len(want[1]))
    rx.settle(0.2)
    by_ssrc: dict[int, list[bytes]] = {}
    for p in got:
        by_ssrc.setdefault(struct.unpack_from("!I", p, 8)[0], []).append(p)
    # Two pacing CPUs send on one socket, and loopback delivers each CPU's
    # backlog on its own: arrival order is not wire order. Each datagram
    # must still be one whole packet, every packet once.
    for ssrc, packets in by_ssrc.items():
        packets.sort(key=lambda p, s=ssrc: (struct.unpack_from("!H", p, 2)[0] - s * 1000) & 0xFFFF)
    assert by_ssrc == want, difference(got, [p for ps in want.values() for p in ps])
