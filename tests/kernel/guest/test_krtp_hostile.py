"""Hostile callers inside the guest: bad descriptors and sockets, bad and
truncated files, vanished mappings and clients, thousands of streams,
concurrent commands, processes that exit or are killed, and unloading
while streaming. Nothing may crash, warn or leak."""

from __future__ import annotations

import errno
import fcntl
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
from rtpengine.hintfile import REC_BLOB, HintRecord
from tests.helpers.engine import SEC, chunk_records, expected, open_stream, wait_state, write_hints
from tests.helpers.krtp import STRATEGIES, raw_fd


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
