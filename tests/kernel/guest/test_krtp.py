"""The krtp module for real, inside the guest: every packet it sends over
the guest's loopback must equal the reference packetiser's, byte for byte,
for krtpsendfile and krtpmsend, paced and unpaced; commands, hostile
callers and process exits must leave nothing behind."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from rtpengine import krtp
from rtpengine.hintfile import REC_BLOB, REC_MARKER, HintRecord
from tests.kernel.guest.conftest import (SEC, chunk_records, expected, open_stream,
                                         wait_state, write_hints)
from tests.media import make_ts

STRATEGIES = ["krtpsendfile", "krtpmsend"]
# 6.5+ sends with MSG_SPLICE_PAGES (and UDP GSO batches); 6.1 with ->sendpage
SPLICE_KERNEL = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 5)


@pytest.fixture(scope="module")
def ts_file() -> str:
    # made on the host before the guest boots (tests/test_krtp_kernel.py)
    return make_ts(seconds=10)


@pytest.fixture(scope="module")
def short_ts_file() -> str:
    return make_ts(seconds=3, size="320x240", video_bitrate="500k")


def raw_fd() -> int:
    return os.open(krtp.DEVICE, os.O_RDWR | os.O_CLOEXEC)


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
    span = rx.times[-1] - rx.times[0]
    planned = chunk_records(os.path.getsize(media), 3 * SEC)[-1].send_ns
    # software emulation is slow and jittery: the packets must still be
    # spread over the schedule, not sent in one burst
    assert span >= 0.9 * planned, (span, planned)
    assert rx.times[0] >= t0 - 2_000_000
    # paced: many sends, not one burst (packets that fall due together under
    # emulation's jitter may share one GSO datagram)
    assert st.syscalls >= len(want) // 2


# --- commands --------------------------------------------------------------------

def test_fill_limit_holds_the_stream_and_releases_it(engine_factory, receivers, tmp_path,
                                                     tmpfs_copy, ts_file):
    media = tmpfs_copy(ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "f.hint", chunk_records(size, 10 * SEC))
    kw = dict(ssrc=9, seq0=1, ts0=2)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    limit = 1316 * 100 + 500
    stream.set_fill_limit(limit)
    stream.play(unpaced=True)
    st = wait_state(stream, "waiting")
    assert st.state == "waiting" and st.next_record == 100 and st.fill_limit == limit
    assert rx.collect(100) == want[:100]
    rx.settle(0.2)
    assert len(rx.packets) == 100
    stream.set_fill_limit(size)
    st = wait_state(stream, "ended")
    assert rx.collect(len(want)) == want


def test_pause_continue_and_seek(engine_factory, receivers, tmp_path, tmpfs_copy, ts_file):
    media = tmpfs_copy(ts_file)
    hints = write_hints(tmp_path / "p.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    kw = dict(ssrc=5, seq0=100, ts0=1000)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    stream.play()                       # paced: about 100 packets a second
    time.sleep(0.6)
    stream.pause()
    st = wait_state(stream, "paused")
    n = st.packets_sent
    assert 0 < n < len(want) and st.next_record == n
    rx.collect(n)
    time.sleep(0.3)
    rx.drain()
    assert len(rx.packets) == n         # nothing while paused
    stream.play(unpaced=True)           # continues where it stopped
    wait_state(stream, "ended")
    assert rx.collect(len(want)) == want
    # a seek starts again at a record; sequence numbers go on
    stream.seek(10)
    assert stream.stats().next_record == 10
    stream.play(unpaced=True)
    wait_state(stream, "ended")
    again = expected(hints, media, ssrc=5, seq0=(100 + len(want)) & 0xFFFF, ts0=1000, start=10)
    assert rx.collect(len(want) + len(again))[len(want):] == again
    # play from a record beyond the last is refused, at the last ends at once
    with pytest.raises(krtp.KrtpError) as exc:
        stream.play(start_record=len(want) + 1)
    assert exc.value.errno == errno.ERANGE
    stream.play(start_record=len(want))
    assert stream.stats().state == "ended"


def test_streams_of_one_file_close_with_it(engine_factory, receivers, tmp_path, tmpfs_copy,
                                           short_ts_file):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "c.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    e = engine_factory()
    streams = []
    for i in range(8):
        rx = receivers()
        s = open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=i, ts0=i)
        s.play()
        streams.append(s)
    time.sleep(0.3)
    assert e.info().streams == 8
    e.close()                            # while they play
    with krtp.KrtpEngine() as probe:
        assert probe.info().streams == 0


# --- hostile callers --------------------------------------------------------------

def _open_raw(e: krtp.KrtpEngine, sock_fd: int, media_fd: int, hint_fd: int, *, pt=-1,
              flags=0, addr=0, length=0) -> int:
    buf = bytearray(krtp.OPEN.pack(sock_fd, media_fd, hint_fd, pt, 1, 2, 3, flags, 0,
                                   addr, length, 0))
    fcntl.ioctl(e._require(), krtp.IOC_OPEN, buf, True)
    return krtp.OPEN.unpack(buf)[8]


def _errno_of(fn) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return 0


def test_bad_descriptors_and_sockets_are_refused(engine_factory, receivers, tmp_path,
                                                 tmpfs_copy, short_ts_file):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "b.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    e = engine_factory()
    rx = receivers()
    good = rx.sender()
    mfd, hfd = os.open(media, os.O_RDONLY), os.open(hints, os.O_RDONLY)
    tcp_listen = socket.socket()
    tcp_listen.bind(("127.0.0.1", 0))
    tcp_listen.listen()
    tcp = socket.create_connection(tcp_listen.getsockname())
    unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wronly = os.open(media, os.O_WRONLY)
    dev = raw_fd()
    dirfd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    pipe_r, pipe_w = os.pipe()
    closed = os.open(media, os.O_RDONLY)
    os.close(closed)
    try:
        assert _errno_of(lambda: _open_raw(e, -1, mfd, hfd)) == errno.EBADF
        assert _errno_of(lambda: _open_raw(e, closed, mfd, hfd)) == errno.EBADF
        assert _errno_of(lambda: _open_raw(e, mfd, mfd, hfd)) == errno.ENOTSOCK
        assert _errno_of(lambda: _open_raw(e, tcp.fileno(), mfd, hfd)) == errno.EPROTOTYPE
        assert _errno_of(lambda: _open_raw(e, unconnected.fileno(), mfd, hfd)) == errno.ENOTCONN
        g = good.fileno()
        assert _errno_of(lambda: _open_raw(e, g, -1, hfd)) == errno.EBADF
        assert _errno_of(lambda: _open_raw(e, g, dev, hfd)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, e._require(), hfd)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, dirfd, hfd)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, pipe_r, hfd)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, wronly, hfd)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, mfd, mfd)) == errno.EBADMSG
        assert _errno_of(lambda: _open_raw(e, g, mfd, hfd, pt=128)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, mfd, hfd, flags=0x80)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, mfd, hfd, flags=1)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, -1, hfd, flags=1, addr=2**64 - 4096,
                                           length=8192)) == errno.EINVAL
        assert _errno_of(lambda: _open_raw(e, g, -1, hfd, flags=1, addr=2**63,
                                           length=4096)) == errno.EFAULT
        # commands on streams that do not exist
        for req in (krtp.IOC_PAUSE, krtp.IOC_SEEK, krtp.IOC_FILL, krtp.IOC_CLOSE):
            buf = bytearray(krtp.CMD.pack(12345, 0, 0))
            assert _errno_of(lambda: fcntl.ioctl(e._require(), req, buf, True)) == errno.ENOENT
        sid = _open_raw(e, g, mfd, hfd)
        buf = bytearray(krtp.CMD.pack(sid, 1, 0))
        assert _errno_of(lambda: fcntl.ioctl(e._require(), krtp.IOC_PAUSE, buf, True)) \
            == errno.EINVAL
        buf = bytearray(krtp.PLAY.pack(sid, 0x10, 0, 0))
        assert _errno_of(lambda: fcntl.ioctl(e._require(), krtp.IOC_PLAY, buf, True)) \
            == errno.EINVAL
        buf = bytearray(krtp.PLAY.pack(sid, 0, 0, -5))
        assert _errno_of(lambda: fcntl.ioctl(e._require(), krtp.IOC_PLAY, buf, True)) \
            == errno.EINVAL
        # a stream in another file is not reachable from this one
        with krtp.KrtpEngine() as other:
            buf = bytearray(krtp.CMD.pack(sid, 0, 0))
            assert _errno_of(lambda: fcntl.ioctl(other._require(), krtp.IOC_CLOSE, buf,
                                                 True)) == errno.ENOENT
    finally:
        for fd in (mfd, hfd, wronly, dev, dirfd, pipe_r, pipe_w):
            os.close(fd)
        for s in (tcp_listen, tcp, unconnected, good):
            s.close()


def test_bad_hint_files_are_refused(engine_factory, receivers, tmp_path):
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(10000))
    e = engine_factory()
    rx = receivers()
    cases = {
        "past the end": ([HintRecord(9000, 1001, 0, 0, 0, b"")], errno.ERANGE),
        "offset past the end": ([HintRecord(2**64 - 10, 100, 0, 0, 0, b"")], errno.ERANGE),
        "too big": ([HintRecord(0, 65500, 0, 0, 0, b"")], errno.EBADMSG),
        "blob past its end": ([HintRecord(0, 10, 0, 0, REC_BLOB, b"")], errno.ERANGE),
    }
    for name, (recs, err) in cases.items():
        hints = write_hints(tmp_path / "bad.hint", recs)
        with pytest.raises(krtp.KrtpError) as exc:
            open_stream(e, rx.sender(), str(media), hints, ssrc=1, seq0=1, ts0=1)
        assert exc.value.errno == err, name
    # a prefix length beyond 5, a record count beyond the file, bad magic
    hints = write_hints(tmp_path / "p.hint", [HintRecord(0, 10, 0, 0, 0, b"")])
    raw = bytearray(open(hints, "rb").read())
    raw[64 + 26] = 6
    (tmp_path / "p.hint").write_bytes(raw)
    with pytest.raises(krtp.KrtpError) as exc:
        open_stream(e, rx.sender(), str(media), hints, ssrc=1, seq0=1, ts0=1)
    assert exc.value.errno == errno.EBADMSG
    raw[64 + 26] = 0
    struct.pack_into("<Q", raw, 24, 2)
    (tmp_path / "p.hint").write_bytes(raw)
    with pytest.raises(krtp.KrtpError) as exc:
        open_stream(e, rx.sender(), str(media), hints, ssrc=1, seq0=1, ts0=1)
    assert exc.value.errno == errno.EBADMSG
    (tmp_path / "p.hint").write_bytes(b"NOTAHINT" + bytes(200))
    with pytest.raises(krtp.KrtpError) as exc:
        open_stream(e, rx.sender(), str(media), hints, ssrc=1, seq0=1, ts0=1)
    assert exc.value.errno == errno.EBADMSG


@pytest.mark.parametrize("which", ["media", "hints"])
def test_file_truncated_while_streaming(engine_factory, receivers, tmp_path, tmpfs_copy,
                                        short_ts_file, which):
    media = tmpfs_copy(short_ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "t.hint", chunk_records(size, 3 * SEC))
    n = len(chunk_records(size, 3 * SEC))
    kw = dict(ssrc=3, seq0=3, ts0=3)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    stream.play()
    time.sleep(1.0)
    os.truncate(media if which == "media" else hints, (size // 2) if which == "media" else 64 + 32 * (n // 2))
    st = wait_state(stream, "ended", timeout=30)
    rx.settle(0.3)
    assert st.state == "ended"
    assert st.packets_sent + st.packets_dropped == n
    assert st.packets_dropped > 0 and st.last_errno == errno.ERANGE
    # what was sent before the cut is the reference, sequence numbers included
    sent = {p[2:4]: p for p in rx.packets}
    for p in want:
        if p[2:4] in sent:
            assert sent[p[2:4]] == p


def test_msend_mapping_gone_drops_without_harm(engine_factory, receivers, tmp_path,
                                              tmpfs_copy, short_ts_file):
    media = tmpfs_copy(short_ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "u.hint", chunk_records(size, 3 * SEC))
    e = engine_factory("krtpmsend")
    rx = receivers()
    stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
    stream._mapping.close()            # the application unmaps its media
    stream.play(unpaced=True)
    st = wait_state(stream, "ended")
    assert st.packets_sent == 0 and st.packets_dropped == st.record_count
    assert st.last_errno == errno.EFAULT
    # an address range that was never mapped
    with open(hints, "rb") as h:
        sock = rx.sender()
        sid = _open_raw(e, sock.fileno(), -1, h.fileno(), flags=1, addr=0x10000,
                        length=size)
        sock.close()
    buf = bytearray(krtp.PLAY.pack(sid, krtp.PLAY_UNPACED, 0, 0))
    fcntl.ioctl(e._require(), krtp.IOC_PLAY, buf, True)
    deadline = time.monotonic() + 30
    while True:
        buf = bytearray(krtp.STATS.pack(sid, *([0] * 20)))
        fcntl.ioctl(e._require(), krtp.IOC_STATS, buf, True)
        fields = krtp.STATS.unpack(buf)
        if fields[1] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert fields[1] == 4 and fields[12] == fields[7]   # ended, all dropped


def test_thousands_of_streams(engine_factory, receivers, tmp_path):
    media = tmp_path / "tiny.bin"
    media.write_bytes(os.urandom(1000))
    recs = [HintRecord(i * 100, 100, i, i * 1000, 0, b"") for i in range(10)]
    hints = write_hints(tmp_path / "tiny.hint", recs)
    e = engine_factory()
    rx = receivers()
    sock = rx.sender()
    streams = []
    with open(media, "rb") as m, open(hints, "rb") as h:
        for i in range(3000):
            streams.append(e.open_stream(sock, m, h, ssrc=i, seq0=i, ts0=i))
    sock.close()
    assert e.info().streams == 3000
    for s in streams[:1000]:
        s.play(unpaced=True)
    for s in streams[1000:2000]:
        s.play(at_ns=time.monotonic_ns() + 3600 * SEC)     # an hour from now
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(s.stats().state == "ended" for s in streams[:1000:50]):
            break
        time.sleep(0.1)
    total = sum(s.stats().packets_sent for s in streams[:1000])
    assert total == 10_000
    for s in streams[:500]:
        s.close()
    assert e.info().streams == 2500
    e.close()                              # the rest go with the file
    with krtp.KrtpEngine() as probe:
        info = probe.info()
    assert info.streams == 0 and info.pages_held == 0


def test_concurrent_commands_on_one_stream(engine_factory, receivers, tmp_path, tmpfs_copy,
                                           ts_file):
    media = tmpfs_copy(ts_file)
    hints = write_hints(tmp_path / "x.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    e = engine_factory()
    rx = receivers()
    stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
    n = stream.stats().record_count
    stop = time.monotonic() + 3
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        import random
        rnd = random.Random(seed)
        try:
            while time.monotonic() < stop:
                op = rnd.randrange(6)
                try:
                    if op == 0:
                        stream.play(start_record=rnd.randrange(n + 1), unpaced=rnd.random() < .5)
                    elif op == 1:
                        stream.pause()
                    elif op == 2:
                        stream.seek(rnd.randrange(n + 1))
                    elif op == 3:
                        stream.set_fill_limit(rnd.randrange(os.path.getsize(media) + 1))
                    elif op == 4:
                        stream.stats()
                    else:
                        stream.play()
                except krtp.KrtpError as exc:
                    if exc.errno not in (errno.EBADF, errno.ENOENT):
                        raise
                rx.drain()
        except BaseException as exc:     # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    stream.close()                        # closed while the others hammer it
    for t in threads:
        t.join()
    assert not errors, errors


CHILD = r"""
import os, socket, sys, time
sys.path.insert(0, os.getcwd())
from rtpengine import krtp
media, hints, port, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
e = krtp.KrtpEngine(strategy="krtpmsend" if how == "msend" else "krtpsendfile")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
streams = []
for i in range(20):
    with open(media, "rb") as m, open(hints, "rb") as h:
        st = e.open_stream(s, m, h, ssrc=i, seq0=i, ts0=i)
    st.play()
    streams.append(st)
print("playing", flush=True)
if how == "exit":
    os._exit(0)                 # no close: the kernel must clean up
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["exit", "kill", "msend"])
def test_process_exit_releases_everything(receivers, tmp_path, tmpfs_copy, short_ts_file,
                                          how):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "e.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    rx = receivers()
    port = rx.sock.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", CHILD, media, hints, str(port), how],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "playing"
    if how != "exit":
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    rx.drain()
    with krtp.KrtpEngine() as probe:
        info = probe.info()
    assert info.streams == 0 and info.pages_held == 0 and info.files == 1, info


def test_unload_refused_while_streaming(receivers, tmp_path, tmpfs_copy, short_ts_file):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "r.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    rx = receivers()
    child = subprocess.Popen([sys.executable, "-c", CHILD, media, hints,
                              str(rx.sock.getsockname()[1]), "stay"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "playing"
        r = subprocess.run(["rmmod", "krtp"], capture_output=True, text=True)
        assert r.returncode != 0 and "in use" in r.stderr, r
        with open("/proc/modules") as f:
            assert any(line.startswith("krtp ") for line in f)
    finally:
        child.kill()
        child.wait(timeout=30)


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
    assert len(got) == 4 * len(want[1])
    by_ssrc: dict[int, list[bytes]] = {}
    for p in got:
        by_ssrc.setdefault(struct.unpack_from("!I", p, 8)[0], []).append(p)
    assert by_ssrc == want


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_client_port_closed(engine_factory, receivers, tmp_path, tmpfs_copy,
                            short_ts_file, strategy):
    """A vanished client: ICMP port unreachable comes back as ECONNREFUSED on
    later sends. The stream goes on to its end, counts the errors, and does
    not mistake them for a path that refuses GSO."""
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "gone.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    rx = receivers()
    sock = rx.sender()
    rx.close()                                   # nobody listens on the port now
    stream = open_stream(engine_factory(strategy), sock, media, hints, ssrc=1, seq0=1, ts0=1)
    stream.play(unpaced=True)
    st = wait_state(stream, "ended")
    assert st.state == "ended"
    assert st.packets_sent + st.packets_dropped == st.record_count
    assert st.send_errors > 0 and st.last_errno == errno.ECONNREFUSED, st
    assert not st.gso_fallback, st
