"""The engine's RTP interleaved on a TCP connection (RFC 2326 10.12):
frames equal the reference packetiser's packets, short writes never cut a
frame for the bytes written beside them, memory per connection stays
bounded, and a slow reader skips to keyframes or, stalled, is cut off.
Real loopback TCP connections throughout."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time

import pytest

from rtpengine._kvod_engine import lib
from rtpengine.engine import Engine, EngineError
from rtpengine.hintfile import REC_KEYFRAME, HintFile
from tests.helpers.engine import (MS, SEC, chunk_records, expected, odd_title,
                                  ts_title_hints, wait_state, write_hints)
from tests.helpers.interleaved import (Message, StreamParser, frame, read_all,
                                       tcp_pair)

OUTQ = 4 + 65535 + 65536  # KVOD_TCP_OUTQ


def open_tcp(engine: Engine, sock: socket.socket, media, hints, channel: int, **kw):
    with open(media, "rb") as m, open(hints, "rb") as h:
        return engine.open_stream(sock, m, h, interleaved=channel, **kw)


@pytest.fixture(params=["gso", "sendmmsg", "mmap_writev"])
def engine(request):
    with Engine(strategy=request.param) as e:
        yield e


@pytest.fixture
def ts_title(ts_file, tmp_path):
    return ts_file, ts_title_hints(ts_file, tmp_path / "ts.hint")


def reply(cseq: int, body: bytes = b"") -> bytes:
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_frames_match_packetizer(engine, ts_title):
    """Every byte read is a frame on the stream's channel holding exactly
    the reference packet, whatever the engine's UDP strategy."""
    media, hints = ts_title
    server, client = tcp_pair()
    kw = dict(ssrc=0x11223344, seq0=65000, ts0=5)
    want = expected(hints, media, **kw)
    stream = open_tcp(engine, server, media, hints, 6, **kw)
    server.close()  # the engine holds its own duplicate
    stream.play(unpaced=True)
    parser = StreamParser()
    total = sum(len(p) + 4 for p in want)
    read_all(client, parser, until=lambda p: len(p.items) >= len(want))
    assert parser.frames(6) == want
    assert not parser.buf and len(parser.items) == len(want)
    st = wait_state(stream, "ended")
    assert st.interleaved and st.packets_sent == len(want)
    assert st.strategy == "mmap_writev" and st.pacing == "engine"
    assert (st.send_errors, st.packets_dropped, st.skips) == (0, 0, 0)
    # one sendmsg carries many frames
    assert st.syscalls < len(want) / 50, (st.syscalls, total)
    stream.close()
    client.close()


def test_odd_records_frame_exactly(tmp_path):
    """Prefixes, blob payloads, empty payloads and the largest packet
    frame as the reference says (length field included)."""
    media, hints = odd_title(tmp_path)
    with Engine(strategy="gso") as engine:
        server, client = tcp_pair()
        kw = dict(ssrc=7, seq0=1, ts0=2)
        want = expected(hints, str(media), **kw)
        stream = open_tcp(engine, server, str(media), hints, 0, **kw)
        stream.play(unpaced=True)
        parser = StreamParser()
        read_all(client, parser, until=lambda p: len(p.items) >= len(want))
        data = b"".join(frame(0, p) for p in want)
        assert b"".join(frame(0, f) for f in parser.frames(0)) == data
        assert max(len(p) for p in want) == 65507
        stream.close()
        server.close()
        client.close()


def test_two_tracks_share_the_connection(tmp_path):
    """Two streams on one connection keep their channels and their own
    packets; paced, both stay on time."""
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(400 * 1000))
    h1 = write_hints(tmp_path / "a.hint", chunk_records(200 * 1000, 0, chunk=1000,
                                                        gap_ns=5 * MS))
    recs = chunk_records(400 * 1000, 0, chunk=1000, gap_ns=5 * MS)[200:]
    h2 = write_hints(tmp_path / "b.hint", [r._replace(send_ns=r.send_ns - 200 * 5 * MS)
                                           if hasattr(r, "_replace") else r for r in recs])
    with Engine(threads=2) as engine:
        server, client = tcp_pair()
        a = open_tcp(engine, server, str(media), h1, 0, ssrc=1, seq0=0, ts0=0)
        b = open_tcp(engine, server, str(media), h2, 2, ssrc=2, seq0=0, ts0=0)
        want_a = expected(h1, str(media), ssrc=1, seq0=0, ts0=0)
        want_b = expected(h2, str(media), ssrc=2, seq0=0, ts0=0)
        a.play()
        b.play()
        parser = StreamParser()
        read_all(client, parser, until=lambda p: len(p.items) >= len(want_a) + len(want_b))
        assert parser.frames(0) == want_a and parser.frames(2) == want_b
        for s in (a, b):
            st = wait_state(s, "ended")
            # a shared machine (and ASan builds) may be late once or twice
            assert st.late_5ms <= 2 and st.skips == 0
            s.close()
        server.close()
        client.close()


def test_writes_never_land_inside_a_frame(ts_title):
    """A tiny send buffer and a slow reader make most writes short; replies
    written meanwhile from another thread all arrive whole, in order, and
    every frame is the reference packet. The queue never holds more than
    one frame's tail and the replies."""
    media, hints = ts_title
    with Engine(strategy="gso") as engine:
        server, client = tcp_pair(sndbuf=4096, rcvbuf=4096)
        kw = dict(ssrc=9, seq0=0, ts0=0)
        want = expected(hints, media, **kw)[:3000]
        stream = open_tcp(engine, server, media, hints, 0, **kw)
        server.close()
        stream.play(unpaced=True)
        stop = threading.Event()
        sent: list[int] = []

        def writer():
            cseq = 0
            while not stop.is_set() and cseq < 400:
                body = (b"x" * (cseq * 37 % 3000))
                try:
                    stream.write(reply(cseq, body))
                except EngineError as exc:
                    assert exc.errno == errno.ENOBUFS
                    time.sleep(0.002)
                    continue
                sent.append(cseq)
                cseq += 1
                time.sleep(0.001)

        t = threading.Thread(target=writer)
        t.start()
        parser = StreamParser()
        try:
            # slow: small reads with pauses, so the engine meets a full socket
            read_all(client, parser, chunk=3000, rate=4e6,
                     until=lambda p: len(p.frames(0)) >= len(want)
                     and len(p.messages()) >= 400, timeout=30)
        finally:
            stop.set()
            t.join()
        read_all(client, parser, until=lambda p: len(p.messages()) >= len(sent), timeout=5)
        assert parser.frames(0)[:len(want)] == want
        got = [int(m.head.split(b"CSeq: ")[1].split(b"\r\n")[0]) for m in parser.messages()]
        assert got == sent and len(sent) == 400
        for m in parser.messages():
            cseq = int(m.head.split(b"CSeq: ")[1].split(b"\r\n")[0])
            assert m.body == b"x" * (cseq * 37 % 3000)
        st = stream.stats()
        assert st.blocked > 0           # short writes did happen
        assert 0 < st.out_queued_max <= OUTQ
        stream.close()
        client.close()


def test_write_rules(tmp_path, receivers):
    """A write goes out at once when nothing waits; too big is EMSGSIZE;
    a UDP stream has no connection to write on; a full queue is ENOBUFS."""
    media = tmp_path / "m.bin"
    media.write_bytes(bytes(10000))
    hints = write_hints(tmp_path / "m.hint", chunk_records(10000, SEC))
    with Engine() as engine:
        server, client = tcp_pair(sndbuf=4096, rcvbuf=4096)
        stream = open_tcp(engine, server, str(media), hints, 0, ssrc=1, seq0=0, ts0=0)
        # frames are not held back for the client's ACK (Nagle)
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        stream.write(reply(1))
        parser = StreamParser()
        read_all(client, parser, until=lambda p: p.messages())
        assert parser.messages() == [Message(reply(1), b"")]
        with pytest.raises(EngineError) as exc:
            stream.write(b"x" * 65537)
        assert exc.value.errno == errno.EMSGSIZE
        # the client reads nothing: the kernel's buffers fill, then the queue
        with pytest.raises(EngineError) as exc:
            for _ in range(1000):
                stream.write(b"y" * 60000)
        assert exc.value.errno == errno.ENOBUFS
        assert stream.stats().out_queued <= OUTQ
        rx = receivers()
        with open(media, "rb") as m, open(hints, "rb") as h:
            udp = engine.open_stream(rx.sender(), m, h, ssrc=2, seq0=0, ts0=0)
        with pytest.raises(EngineError) as exc:
            udp.write(b"x")
        assert exc.value.errno == errno.EPROTOTYPE
        udp.close()
        stream.close()
        server.close()
        client.close()


def test_bad_interleaved_open(tmp_path, receivers):
    media = tmp_path / "m.bin"
    media.write_bytes(bytes(1000))
    hints = write_hints(tmp_path / "m.hint", chunk_records(1000, SEC))
    with Engine() as engine:
        rx = receivers()
        with pytest.raises(EngineError) as exc:
            open_tcp(engine, rx.sender(), str(media), hints, 0, ssrc=1, seq0=0, ts0=0)
        assert exc.value.errno == errno.EPROTOTYPE
        server, client = tcp_pair()
        with pytest.raises(EngineError) as exc:
            open_tcp(engine, server, str(media), hints, 255, ssrc=1, seq0=0, ts0=0)
        assert exc.value.errno == errno.EINVAL
        with pytest.raises(EngineError) as exc:
            with open(media, "rb") as m, open(hints, "rb") as h:
                engine.open_stream(server, m, h, ssrc=1, seq0=0, ts0=0)
        assert exc.value.errno == errno.EPROTOTYPE  # TCP without interleaved=
        server.close()
        client.close()


def keyframe_title(tmp_path, seconds: int = 8, rate: int = 500):
    """``seconds`` of 1316-byte records at ``rate`` a second (about 5 Mbit/s),
    a keyframe every 100 records (0.2 s)."""
    n = seconds * rate
    media = tmp_path / "k.bin"
    media.write_bytes(os.urandom(n * 1316))
    recs = chunk_records(n * 1316, 0, gap_ns=SEC // rate)
    recs = [r.__class__(r.offset, r.length, r.rtp_ts, r.send_ns,
                        REC_KEYFRAME if i % 100 == 0 else 0, b"")
            for i, r in enumerate(recs)]
    return str(media), write_hints(tmp_path / "k.hint", recs)


def test_slow_reader_skips_to_keyframes_others_on_time(tmp_path, receivers):
    """A reader at half the media rate: its stream falls behind, then skips
    whole packets to keyframes (a valid byte stream, seq gaps as losses),
    its queue stays bounded, and a UDP viewer and a fast TCP viewer on the
    same engine stay on time."""
    media, hints = keyframe_title(tmp_path)
    with HintFile(hints) as hf:
        keyframes = {i for i in range(len(hf)) if hf.record(i).flags & REC_KEYFRAME}
    with Engine(threads=1) as engine:
        slow_srv, slow = tcp_pair(sndbuf=8192, rcvbuf=8192)
        fast_srv, fast = tcp_pair()
        kw = dict(ssrc=5, seq0=0, ts0=0)
        want = expected(hints, media, **kw)
        s_slow = open_tcp(engine, slow_srv, media, hints, 0, max_lag_ms=300, **kw)
        s_fast = open_tcp(engine, fast_srv, media, hints, 0, **kw)
        rx = receivers()
        with open(media, "rb") as m, open(hints, "rb") as h:
            udp = engine.open_stream(rx.sender(), m, h, **kw)
        for s in (s_slow, s_fast, udp):
            s.play()
        p_slow, p_fast = StreamParser(), StreamParser()
        rate = 500 * 1320 / 2
        threads = [threading.Thread(target=read_all, args=(slow, p_slow),
                                    kwargs=dict(until=lambda p: False, timeout=7,
                                                chunk=4096, rate=rate)),
                   threading.Thread(target=read_all, args=(fast, p_fast),
                                    kwargs=dict(until=lambda p: len(p.items) >= len(want),
                                                timeout=12))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert p_fast.frames(0) == want
        st_slow = s_slow.stats()
        assert st_slow.skips >= 2 and st_slow.packets_skipped > 500
        assert st_slow.out_queued_max <= OUTQ and not st_slow.stalled
        # what the slow one got is whole reference packets; after each gap,
        # a keyframe
        index = {struct.unpack_from("!H", p, 2)[0]: i for i, p in enumerate(want)}
        got = p_slow.frames(0)
        assert got and all(p == want[index[struct.unpack_from("!H", p, 2)[0]]] for p in got)
        pos = [index[struct.unpack_from("!H", p, 2)[0]] for p in got]
        gaps = [b for a, b in zip(pos, pos[1:]) if b != a + 1]
        assert gaps and all(b in keyframes for b in gaps)
        assert all(b > a for a, b in zip(pos, pos[1:]))
        wait_state(udp, "ended", timeout=5)
        for s in (s_fast, udp):
            st = s.stats()
            # never held back by the slow one; on time but for what a
            # shared 2-core machine's scheduling costs (2.7% late with two
            # busy loops beside it; 0-2 packets when quiet)
            assert st.skips == 0 and st.packets_sent == len(want), st
            assert st.late_5ms <= len(want) // 100, st
        for s in (s_slow, s_fast, udp):
            s.close()
        for so in (slow_srv, fast_srv, slow, fast):
            so.close()


def test_stalled_reader_is_cut_off(tmp_path):
    """A reader that takes nothing: after the stall time its connection is
    shut down, its streams fail (ETIMEDOUT, stalled), writes say EPIPE."""
    media, hints = keyframe_title(tmp_path, seconds=4)
    with Engine() as engine:
        server, client = tcp_pair(sndbuf=4096, rcvbuf=4096)
        a = open_tcp(engine, server, media, hints, 0, stall_ms=400, ssrc=1, seq0=0, ts0=0)
        b = open_tcp(engine, server, media, hints, 2, stall_ms=400, ssrc=2, seq0=0, ts0=0)
        server.close()
        a.play()
        b.play()
        st = wait_state(a, "failed", timeout=3)
        assert st.state == "failed" and st.stalled and st.last_errno == errno.ETIMEDOUT
        # tries back off (2 ms doubling to 50 ms): a dozen, not one every 2 ms
        assert 3 <= st.blocked <= 40, st.blocked
        assert b.stats().state == "failed" and b.stats().stalled
        with pytest.raises(EngineError) as exc:
            a.write(b"late")
        assert exc.value.errno == errno.EPIPE
        # the client sees the connection end (after what was buffered)
        client.settimeout(2)
        while True:
            try:
                data = client.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
        a.close()
        b.close()
        client.close()


def test_reset_connection_fails_streams(tmp_path):
    media, hints = keyframe_title(tmp_path, seconds=4)
    with Engine() as engine:
        server, client = tcp_pair()
        s = open_tcp(engine, server, media, hints, 0, ssrc=1, seq0=0, ts0=0)
        server.close()
        s.play()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        st = wait_state(s, "failed", timeout=3)
        assert st.state == "failed" and not st.stalled
        assert st.last_errno in (errno.EPIPE, errno.ECONNRESET)
        s.close()


def test_paused_stream_reply_leaves_after_queued_tail(tmp_path):
    """A reply written while a cut frame's tail is queued and the stream is
    paused goes out after that tail, once the reader reads again."""
    media, hints = keyframe_title(tmp_path, seconds=2)
    with Engine() as engine:
        server, client = tcp_pair(sndbuf=4096, rcvbuf=4096)
        kw = dict(ssrc=3, seq0=0, ts0=0)
        want = expected(hints, media, **kw)
        s = open_tcp(engine, server, media, hints, 0, **kw)
        server.close()
        s.play(unpaced=True)
        time.sleep(0.2)
        s.pause()
        s.write(reply(7))
        parser = StreamParser()
        read_all(client, parser, until=lambda p: p.messages(), timeout=5)
        assert parser.messages() and parser.messages()[0].head == reply(7)
        frames = parser.frames(0)
        assert frames and frames == want[:len(frames)]
        assert lib.KVOD_INTERLEAVED == 16
        s.close()
        client.close()


def test_play_after_write_holds_frames_until_the_reply(tmp_path):
    """With after_write, frames wait for the next write (the PLAY reply,
    which clients read before any frame), then follow it on schedule; with
    no write they start after 1 s at most."""
    media, hints = keyframe_title(tmp_path, seconds=2)
    with Engine() as engine:
        server, client = tcp_pair()
        kw = dict(ssrc=3, seq0=0, ts0=0)
        want = expected(hints, media, **kw)
        s = open_tcp(engine, server, media, hints, 0, **kw)
        server.close()
        s.play(after_write=True)
        time.sleep(0.15)
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)
        s.write(reply(3))
        parser = StreamParser()
        read_all(client, parser, until=lambda p: len(p.items) > len(want))
        assert parser.items[0] == Message(reply(3), b"")
        assert parser.frames(0) == want
        st = s.stats()
        # the schedule ran from the play: the held packets left late, once
        assert st.late_5ms < 100 and st.skips == 0
        # no write: held 1 s, then sent
        s.pause()
        s.play(start_record=0, after_write=True)
        started = time.monotonic()
        parser = StreamParser()
        read_all(client, parser, until=lambda p: p.items, timeout=3)
        assert 0.9 < time.monotonic() - started < 1.5
        assert parser.frames(0)[0] == want[0][:2] + parser.frames(0)[0][2:4] + want[0][4:]
        s.close()
        client.close()


def test_ipv6_connection(tmp_path):
    """An interleaved stream on an IPv6 connection frames the same way."""
    media, hints = keyframe_title(tmp_path, seconds=1)
    lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        lst.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    lst.listen(1)
    client = socket.create_connection(lst.getsockname()[:2])
    server, _ = lst.accept()
    lst.close()
    kw = dict(ssrc=4, seq0=9, ts0=9)
    want = expected(hints, media, **kw)
    with Engine() as engine:
        s = open_tcp(engine, server, media, hints, 2, **kw)
        server.close()
        s.play(unpaced=True)
        parser = StreamParser()
        read_all(client, parser, until=lambda p: len(p.items) >= len(want))
        assert parser.frames(2) == want
        s.close()
    client.close()


def test_a_unix_stream_pair_carries_frames_for_a_tls_relay(ts_title):
    """RTSPS: the engine writes its frames into one end of a Unix stream
    socket pair (the daemon encrypts what comes out of the other); the
    bytes are the same as on a TCP connection. A datagram socket is not
    a connection."""
    media, hints = ts_title
    engine_end, relay_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    kw = dict(ssrc=0x55667788, seq0=1, ts0=2)
    want = expected(hints, media, **kw)
    with Engine() as engine:
        stream = open_tcp(engine, engine_end, media, hints, 0, **kw)
        engine_end.close()
        stream.play(unpaced=True)
        stream.write(reply(7))
        parser = StreamParser()
        read_all(relay_end, parser, until=lambda p: len(p.frames(0)) >= len(want))
        assert parser.frames(0) == want
        assert [i for i in parser.items if isinstance(i, Message)]
        stream.close()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram, \
                pytest.raises(EngineError, match="not a TCP/IP or Unix stream socket"):
            open_tcp(engine, dgram, media, hints, 0, **kw)
    relay_end.close()
