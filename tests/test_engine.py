"""The user-space RTP engine, over real UDP sockets on 127.0.0.1.

Every packet the engine sends is checked byte for byte against the
reference packetiser (rtpengine.packetizer) for the same hint records,
SSRC, first sequence number and timestamp.
"""

from __future__ import annotations

import errno
import gc
import os
import ctypes
import mmap
import random
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtpengine._kvod_engine import ffi, lib
from rtpengine.engine import Engine, EngineError, now_ns
from rtpengine.hintfile import REC_BLOB, REC_KEYFRAME, REC_MARKER, HintFile, HintRecord
from rtpengine.rtp import parse_rtp, seq_add
from tests.helpers.engine import (MS, SEC, SO_NO_CHECK, Receiver, chunk_records,
                                  expected, odd_title, open_stream, seqs, ts_title_hints,
                                  wait_state, write_hints)


# --- helpers -------------------------------------------------------------------


@pytest.fixture
def ts_title(ts_file, tmp_path):
    """The 10 s TS title and hint records of 1316 bytes over it."""
    return ts_file, ts_title_hints(ts_file, tmp_path / "ts.hint")


@pytest.fixture
def short_title(short_ts_file, tmp_path):
    """The 3 s TS title and hint records spread over 3 s."""
    size = os.path.getsize(short_ts_file)
    return short_ts_file, write_hints(tmp_path / "short.hint",
                                      chunk_records(size, 3 * SEC))


@pytest.fixture
def paced_title(tmp_path):
    """200 records of 500 distinct bytes, 5 ms apart (1 s)."""
    media = tmp_path / "paced.bin"
    media.write_bytes(b"".join(struct.pack("!I", i) * 125 for i in range(200)))
    recs = chunk_records(200 * 500, 0, chunk=500, gap_ns=5 * MS)
    return str(media), write_hints(tmp_path / "paced.hint", recs)


@pytest.fixture(params=["gso", "sendmmsg"])
def engine(request):
    with Engine(strategy=request.param) as e:
        yield e


# --- strategies ----------------------------------------------------------------

def test_auto_picks_gso_here():
    with Engine() as e:
        assert e.strategy == "gso"  # kernel 6.18 takes UDP_SEGMENT
        assert e.threads == os.cpu_count()


def test_forced_strategies_are_reported():
    with Engine(threads=1, strategy="sendmmsg") as e:
        assert (e.strategy, e.threads) == ("sendmmsg", 1)
    with Engine(threads=3, strategy="gso") as e:
        assert (e.strategy, e.threads) == ("gso", 3)


def test_bad_engine_arguments():
    with pytest.raises(ValueError, match="unknown strategy"):
        Engine(strategy="carrier-pigeon")
    with pytest.raises(EngineError) as exc:
        Engine(threads=-1)
    assert exc.value.errno == errno.EINVAL and "threads" in str(exc.value)
    assert lib.kvod_engine_new(1, 99) == ffi.NULL
    assert ffi.errno == errno.EINVAL
    assert "strategy" in ffi.string(lib.kvod_last_error()).decode()


# --- bytes on the wire ---------------------------------------------------------

def test_unpaced_ts_title_matches_packetizer(engine, ts_title, receivers):
    media, hints = ts_title
    rx = receivers()
    kw = dict(ssrc=0xDEADBEEF, seq0=65530, ts0=2**32 - 1000)
    want = expected(hints, media, **kw)
    stream = open_stream(engine, rx.sender(), media, hints, **kw)
    stream.play(unpaced=True)
    got = rx.collect(len(want))
    st_ = wait_state(stream, "ended")
    assert len(got) == len(want)
    assert got == want  # seq and timestamp wrap, the short last packet
    assert len(want[-1]) < len(want[0])
    assert seqs(got)[:7] == [65530, 65531, 65532, 65533, 65534, 65535, 0]
    assert st_.packets_sent == len(want) == st_.next_record == st_.record_count
    # every payload byte of the records (ts_title leaves the title's last
    # TS packet out when ffmpeg made it a multiple of 1316 bytes)
    assert st_.payload_octets == sum(len(p) - 12 for p in want)
    assert st_.last_seq == seq_add(65530, len(want) - 1)
    assert st_.last_rtp_ts == parse_rtp(want[-1])[0].timestamp
    assert (st_.send_errors, st_.packets_dropped, st_.gso_fallback) == (0, 0, False)
    assert st_.strategy == engine.strategy
    if engine.strategy == "gso":
        # equal-sized packets coalesce: ~49 segments a message, 64 a call
        assert st_.syscalls <= len(want) // 40
    else:
        assert st_.syscalls >= len(want) / 1024  # UIO_MAXIOV messages a call


def test_indexed_ts_title_matches_packetizer(engine, ts_file, tmp_path, receivers):
    """Hints from the real MPEG-TS indexer (PCR timing, a short first and
    last record) give the same bytes too."""
    mpegts = pytest.importorskip("rtpengine.index.mpegts")
    hints = str(tmp_path / "indexed.hint")
    mpegts.index_mpegts(ts_file, hints)
    rx = receivers()
    kw = dict(ssrc=0x01020304, seq0=0xFFFF, ts0=0x7FFFFFFF)
    want = expected(hints, ts_file, **kw)
    stream = open_stream(engine, rx.sender(), ts_file, hints, **kw)
    stream.play(unpaced=True)
    assert rx.collect(len(want)) == want
    st_ = wait_state(stream, "ended")
    assert st_.payload_octets == os.path.getsize(ts_file)


def test_unpaced_odd_records_match_packetizer(engine, tmp_path, receivers):
    media, hints = odd_title(tmp_path)
    rx = receivers()
    kw = dict(ssrc=7, seq0=65000, ts0=0xFFFFFF00)
    want = expected(hints, str(media), **kw)
    stream = open_stream(engine, rx.sender(), str(media), hints, **kw)
    stream.play(unpaced=True)
    got = rx.collect(len(want))
    assert got == want
    st_ = wait_state(stream, "ended")
    assert st_.payload_octets == sum(len(p) - 12 for p in want)
    assert st_.send_errors == 0


def test_payload_type_override(tmp_path, receivers):
    media = tmp_path / "m.bin"
    media.write_bytes(b"x" * 100)
    hints = write_hints(tmp_path / "m.hint", [HintRecord(0, 100, 0, 0, REC_MARKER, b"")],
                        payload_type=33)
    rx = receivers()
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), str(media), hints,
                             ssrc=1, seq0=2, ts0=3, payload_type=97)
        stream.play(unpaced=True)
        (pkt,) = rx.collect(1)
    hdr, payload = parse_rtp(pkt)
    assert (hdr.payload_type, hdr.marker, hdr.seq, hdr.timestamp, hdr.ssrc) == (97, True, 2, 3, 1)
    assert payload == b"x" * 100


record_st = st.builds(
    lambda off, length, prefix, flags: (off, length, prefix, flags),
    st.integers(0, 3000), st.sampled_from([0, 1, 7, 100, 100, 100, 1316, 1316, 1400, 3000]),
    st.binary(max_size=5), st.sampled_from([0, REC_MARKER, REC_BLOB, REC_KEYFRAME]))


@settings(max_examples=25, deadline=None)
@given(specs=st.lists(record_st, min_size=1, max_size=300),
       seq0=st.integers(0, 0xFFFF), ts0=st.integers(0, 0xFFFFFFFF),
       use_gso=st.booleans())
def test_any_records_match_packetizer(specs, seq0, ts0, use_gso, tmp_path_factory):
    """Random record sequences: GSO batching never changes the bytes."""
    d = tmp_path_factory.mktemp("h")
    media = os.urandom(6000)
    blob = os.urandom(3000)
    recs = [HintRecord(min(off, (3000 if fl & REC_BLOB else 6000) - length), length,
                       i * 3000, 0, fl, prefix)
            for i, (off, length, prefix, fl) in enumerate(specs)]
    (d / "m").write_bytes(media)
    hints = write_hints(d / "h", recs, blob=blob)
    want = expected(hints, str(d / "m"), ssrc=5, seq0=seq0, ts0=ts0)
    rx = Receiver()
    try:
        with Engine(threads=1, strategy="gso" if use_gso else "sendmmsg") as e:
            stream = open_stream(e, rx.sender(), str(d / "m"), hints,
                                 ssrc=5, seq0=seq0, ts0=ts0)
            stream.play(unpaced=True)
            assert rx.collect(len(want)) == want
    finally:
        rx.close()


def test_gso_refused_falls_back_to_sendmmsg(ts_title, receivers):
    """A socket that may not send without checksums cannot use GSO: the
    kernel says EINVAL and the stream goes on with sendmmsg, losing
    nothing."""
    media, hints = ts_title
    rx = receivers()
    sock = rx.sender()
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    kw = dict(ssrc=9, seq0=1, ts0=1)
    want = expected(hints, media, **kw)
    with Engine(strategy="gso") as e:
        stream = open_stream(e, sock, media, hints, **kw)
        stream.play(unpaced=True)
        got = rx.collect(len(want))
        st_ = wait_state(stream, "ended")
    assert got == want
    assert st_.gso_fallback and st_.strategy == "sendmmsg"
    assert st_.send_errors >= 1 and st_.last_errno == errno.EINVAL
    assert st_.packets_dropped == 0


# --- pacing ----------------------------------------------------------------------

def test_paced_play_takes_the_title_duration(short_title, receivers):
    media, hints = short_title
    rx = receivers()
    kw = dict(ssrc=11, seq0=100, ts0=5)
    want = expected(hints, media, **kw)
    with HintFile(hints) as hf:
        send_ns = [r.send_ns for r in hf]
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        start = now_ns() + 50 * MS
        stream.play(at_ns=start)
        got = rx.collect(len(want), timeout=6)
        st_ = wait_state(stream, "ended")
    assert got == want
    elapsed = rx.times[-1] - start
    # paced, not blasted; the upper bound leaves room for a loaded machine
    assert 2.9 * SEC <= elapsed <= 6.0 * SEC, elapsed
    # each packet leaves at its own time: never before its due time less
    # the lookahead, and the schedule does not drift (the median); how
    # timely the tail is, is measured by `kvod bench streams`, not here
    lateness = [t - (start + s) for t, s in zip(rx.times, send_ns)]
    assert min(lateness) >= -1 * MS
    assert sorted(lateness)[len(lateness) // 2] < 20 * MS
    assert st_.last_due_ns == start + send_ns[-1]
    assert st_.syscalls >= len(want) // 10  # paced: no big bursts


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg", "read_writev", "rtp_sendfile",
                                      "gso_zerocopy"])
def test_play_sends_the_first_packets_before_it_returns(paced_title, receivers, strategy):
    """The first packets leave from the caller's thread, not after the
    pacer thread wakes: a viewer's first packet is not a wake-up late. The
    thread sends the rest on schedule."""
    media, hints = paced_title
    rx = receivers()
    kw = dict(ssrc=12, seq0=100, ts0=0)
    want = expected(hints, media, **kw)
    with Engine(strategy=strategy) as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play()
        # loopback queues a datagram before the send returns
        first = rx.sock.recv(2048)
        assert first == want[0]
        got = rx.collect(199, timeout=3)
        assert wait_state(stream, "ended").packets_sent == 200
    assert [first] + got == want


def test_unsettled_names_the_streams_that_ended_not_those_that_play_or_wait_to(
        engine, short_title, paced_title, receivers):
    """One call names the streams a once-a-second look must tick."""
    rx = receivers()
    idle = open_stream(engine, rx.sender(), *paced_title, ssrc=1, seq0=0, ts0=0)
    playing = open_stream(engine, rx.sender(), *paced_title, ssrc=2, seq0=0, ts0=0)
    paused = open_stream(engine, rx.sender(), *paced_title, ssrc=3, seq0=0, ts0=0)
    ended = open_stream(engine, rx.sender(), *short_title, ssrc=4, seq0=0, ts0=0)
    playing.play()
    paused.play()
    paused.pause()
    ended.play(unpaced=True)
    wait_state(ended, "ended")
    assert engine.unsettled() == {ended.id}
    for stream in (idle, playing, paused):
        assert stream.stats().state in ("idle", "playing", "paused")
    ended.close()
    assert engine.unsettled() == set()
    # more than the first call's room: every one is named
    many = [open_stream(engine, rx.sender(), *short_title, ssrc=10 + i, seq0=0, ts0=0)
            for i in range(70)]
    for stream in many:
        stream.play(unpaced=True)
    for stream in many:
        wait_state(stream, "ended")
    assert engine.unsettled() == {stream.id for stream in many}
    for stream in many + [idle, playing, paused]:
        stream.close()


def test_unsettled_refuses_a_negative_room():
    with Engine() as e, e._use() as ptr:
        assert lib.kvod_engine_unsettled(ptr, ffi.NULL, -1) == -errno.EINVAL
        assert lib.kvod_engine_unsettled(ffi.NULL, ffi.NULL, 0) == -errno.EINVAL
        assert lib.kvod_engine_unsettled(ptr, ffi.NULL, 0) == 0


def test_pause_then_play_continues_without_gap(paced_title, receivers):
    media, hints = paced_title
    rx = receivers()
    kw = dict(ssrc=12, seq0=65500, ts0=0)
    want = expected(hints, media, **kw)
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play()
        time.sleep(0.3)
        stream.pause()
        paused = stream.stats()
        assert paused.state == "paused" and 0 < paused.packets_sent < 200
        time.sleep(0.2)
        assert stream.stats().packets_sent == paused.packets_sent
        assert len(rx.settle()) == paused.packets_sent
        resumed_at = now_ns()
        stream.play()
        got = rx.collect(200, timeout=3)
        st_ = wait_state(stream, "ended")
    assert got == want  # no gap, no duplicate, same bytes
    # the rest keeps its 5 ms spacing instead of bursting out
    rest = 200 - paused.packets_sent
    assert rx.times[-1] - resumed_at >= (rest - 1) * 5 * MS * 0.9
    # a schedule not shifted by the pause would make every resumed packet late
    assert st_.packets_sent == 200 and st_.late_5ms < rest // 4


def test_seek_continues_sequence_and_jumps_timestamps(paced_title, receivers):
    media, hints = paced_title
    rx = receivers()
    kw = dict(ssrc=13, seq0=40, ts0=1000)
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play()
        time.sleep(0.25)
        stream.play(start_record=150)  # seek while playing
        st_ = wait_state(stream, "ended")
        got = rx.settle()
    n1 = st_.packets_sent - 50
    assert 0 < n1 < 150
    assert got == (expected(hints, media, start=0, stop=n1, **kw)
                   + expected(hints, media, start=150, ssrc=13,
                              seq0=seq_add(40, n1), ts0=1000))
    assert seqs(got) == [seq_add(40, i) for i in range(len(got))]


def test_seek_backwards_after_end(paced_title, receivers):
    media, hints = paced_title
    rx = receivers()
    kw = dict(ssrc=14, seq0=0, ts0=0)
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play(start_record=190, unpaced=True)
        assert wait_state(stream, "ended").packets_sent == 10
        stream.play()  # continue at the end: nothing left
        assert stream.stats().state == "ended"
        stream.play(start_record=0, unpaced=True)
        assert wait_state(stream, "ended").packets_sent == 210
        with pytest.raises(EngineError) as exc:
            stream.play(start_record=201)
        assert exc.value.errno == errno.ERANGE
    got = rx.collect(210)
    assert got == (expected(hints, media, start=190, **kw)
                   + expected(hints, media, ssrc=14, seq0=10, ts0=0))


# --- fill limit ------------------------------------------------------------------

def test_fill_limit_waits_and_resumes(paced_title, receivers):
    media, hints = paced_title  # record i is bytes 500*i .. 500*i+500
    rx = receivers()
    kw = dict(ssrc=15, seq0=9, ts0=9)
    want = expected(hints, media, **kw)
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        assert stream.stats().fill_limit == 200 * 500
        stream.set_fill_limit(40 * 500 + 499)
        stream.play()
        st_ = wait_state(stream, "waiting")
        assert (st_.state, st_.next_record, st_.packets_sent) == ("waiting", 40, 40)
        time.sleep(0.3)  # much longer than the 5 ms spacing
        assert stream.stats().packets_sent == 40
        assert rx.settle() == want[:40]

        raised_at = now_ns()
        stream.set_fill_limit(100 * 500)
        st_ = wait_state(stream, "waiting")
        assert st_.next_record == 100
        assert rx.settle() == want[:100]
        # resumed on a schedule shifted by the wait: 60 packets take 0.3 s
        assert rx.times[40] - raised_at < 100 * MS  # at once, not at a poll; room for load
        assert rx.times[99] - rx.times[40] >= 59 * 5 * MS * 0.9

        stream.set_fill_limit(2**64 - 1)  # no limit beyond the media
        st_ = wait_state(stream, "ended")
    assert rx.collect(200) == want
    assert st_.packets_sent == 200
    # the wait is not counted as lateness: an unshifted schedule would make
    # the 160 packets after the wait late; a loaded machine makes a few late
    assert st_.late_5ms < 40, st_


def test_fill_limit_unpaced_and_pause_while_waiting(paced_title, receivers):
    media, hints = paced_title
    rx = receivers()
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
        stream.set_fill_limit(0)
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").packets_sent == 0
        stream.pause()
        stream.set_fill_limit(1000)  # raising it does not resume a pause
        assert stream.stats().state == "paused"
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").packets_sent == 2
    assert len(rx.settle()) == 2


# --- errors on the way -----------------------------------------------------------

def test_closed_client_port_counts_errors_others_unaffected(paced_title, receivers):
    media, hints = paced_title
    gone, alive = receivers(), receivers()
    with Engine(threads=1) as e:  # same thread: the error must not stall it
        s_gone = open_stream(e, gone.sender(), media, hints, ssrc=1, seq0=0, ts0=0)
        s_alive = open_stream(e, alive.sender(), media, hints, ssrc=2, seq0=0, ts0=0)
        s_gone.play()
        s_alive.play()
        time.sleep(0.2)
        gone.close()
        st_gone = wait_state(s_gone, "ended")
        st_alive = wait_state(s_alive, "ended")
    assert alive.collect(200) == expected(hints, media, ssrc=2, seq0=0, ts0=0)
    assert st_gone.state == "ended" and st_gone.next_record == 200
    assert st_gone.send_errors > 0 and st_gone.last_errno == errno.ECONNREFUSED
    assert st_gone.packets_sent + st_gone.packets_dropped == 200
    assert st_alive.send_errors == 0


# --- many streams -----------------------------------------------------------------

def test_fifty_streams_at_once(short_title, receivers):
    media, hints = short_title
    rxs = [receivers() for _ in range(50)]
    params = [dict(ssrc=1000 + i, seq0=(i * 1311) & 0xFFFF, ts0=(i * 0x9E3779B9) & 0xFFFFFFFF)
              for i in range(50)]
    with Engine() as e:
        streams = [open_stream(e, rx.sender(), media, hints, **kw)
                   for rx, kw in zip(rxs, params)]
        for s in streams:
            s.play(unpaced=True)
        for s in streams:
            assert wait_state(s, "ended").state == "ended"
        for rx, kw in zip(rxs, params):
            want = expected(hints, media, **kw)
            assert rx.collect(len(want)) == want


def test_one_thread_schedule_survives_streams_coming_and_going(paced_title, receivers):
    """Forty paced streams in one thread's schedule, started at staggered
    times; meanwhile some are closed, some paused and played on, some sent
    back to the start. Every stream still sends each packet once, in
    order, and the closed ones stop."""
    media, hints = paced_title
    rnd = random.Random(7)
    n = 40
    rxs = [receivers() for _ in range(n)]
    fate = {i: ("close" if i % 4 == 0 else "pause" if i % 4 == 1 else
                "seek" if i % 4 == 2 else "plain") for i in range(n)}
    with Engine(threads=1) as e:
        streams = [open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=i * 997, ts0=i)
                   for i, rx in enumerate(rxs)]
        base = now_ns() + 20 * MS
        for i, s in enumerate(streams):
            s.play(start_record=0, at_ns=base + rnd.randrange(300 * MS))
            e.check()  # the schedule's order and membership, checked in C
        time.sleep(0.4)
        for i in rnd.sample(range(n), n):
            if fate[i] == "close":
                streams[i].close()
            elif fate[i] == "pause":
                streams[i].pause()
            elif fate[i] == "seek":
                streams[i].play(start_record=0)
            e.check()
            time.sleep(0.002)
        time.sleep(0.05)
        for i in range(n):
            if fate[i] == "pause":
                streams[i].play()
                e.check()
        for i, s in enumerate(streams):
            if fate[i] != "close":
                assert wait_state(s, "ended", timeout=10).state == "ended", i
        e.check()
    want_all = expected(hints, media, ssrc=0, seq0=0, ts0=0)
    for i, rx in enumerate(rxs):
        got = rx.settle()
        seq = seqs(got)
        # one packet each, in order: the sequence runs on without a gap
        assert seq == [(i * 997 + k) & 0xFFFF for k in range(len(got))], i
        payloads = [p[12:] for p in got]
        if fate[i] == "close":
            assert len(got) < 200, i
            assert payloads == [p[12:] for p in want_all[:len(got)]], i
        elif fate[i] == "seek":
            # from the start again: the title's first records twice
            assert len(got) > 200, i
            assert payloads[-200:] == [p[12:] for p in want_all], i
        else:
            assert payloads == [p[12:] for p in want_all], i


# --- life cycle and bad input ---------------------------------------------------

def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_while_playing_and_twice(paced_title, receivers):
    media, hints = paced_title
    rx = receivers()
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=0, ts0=0)
        stream.play()
        time.sleep(0.1)
        stream.close()
        stream.close()  # closing twice is allowed, like a file
        assert stream.closed
        n = len(rx.settle())
        assert 0 < n < 200
        time.sleep(0.1)
        assert len(rx.settle()) == n  # nothing after the close
        for call in (stream.stats, stream.pause, lambda: stream.play(0),
                     lambda: stream.set_fill_limit(1)):
            with pytest.raises(EngineError) as exc:
                call()
            assert exc.value.errno == errno.EBADF and "closed" in str(exc.value)


def test_engine_close_with_open_streams(paced_title, receivers):
    media, hints = paced_title
    before = fd_count()
    rx = receivers()
    e = Engine()
    streams = [open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=0, ts0=0)
               for i in range(5)]
    for s in streams:
        s.play()
    time.sleep(0.05)
    e.close()
    e.close()
    assert e.closed and fd_count() == before + 1  # only the receiver is left
    for s in streams:
        assert s.closed
        with pytest.raises(EngineError) as exc:
            s.stats()
        assert exc.value.errno == errno.EBADF
        s.close()  # a no-op now
    with pytest.raises(EngineError) as exc:
        e.open_stream(0, 0, 0, ssrc=0, seq0=0, ts0=0)
    assert exc.value.errno == errno.EBADF


def mappings_of(path: str) -> int:
    """How many mappings of ``path`` this process has."""
    path = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip("\n").endswith(" " + path))


def test_streams_of_one_title_share_its_mappings(paced_title, receivers, tmp_path):
    """Viewers of one title share one mapping of its media and hint files
    (page tables once, not per viewer); the last one out unmaps them. A
    hint file that grew is a new mapping; the old one goes with its last
    user."""
    media, hints = paced_title
    rx = receivers()
    with Engine(threads=2) as e:
        streams = [open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=i, ts0=i)
                   for i in range(5)]
        assert (mappings_of(media), mappings_of(hints)) == (1, 1)
        grown = tmp_path / "grown.hint"
        recs = chunk_records(200 * 500, 0, chunk=500, gap_ns=5 * MS)
        write_hints(grown, recs[:100])
        with open(grown, "rb") as h:
            streams[0].set_hints(h, growing=True)
        write_hints(grown, recs)  # the same file, grown
        with open(grown, "rb") as h:
            streams[0].set_hints(h)
            streams[1].set_hints(h)
        assert (mappings_of(hints), mappings_of(grown)) == (1, 1)
        for s in streams:
            s.play(unpaced=True)
        for i, s in enumerate(streams):
            assert wait_state(s, "ended").state == "ended", i
        for s in streams[2:]:
            s.close()
        assert (mappings_of(media), mappings_of(hints), mappings_of(grown)) == (1, 0, 1)
        streams[0].close()
        streams[1].close()
        assert (mappings_of(media), mappings_of(grown)) == (0, 0)
    got = rx.collect(5 * 200)
    assert len(got) == 5 * 200


def test_engine_check_raw_call():
    assert lib.kvod_engine_check(ffi.NULL) == -errno.EINVAL
    with Engine(threads=2) as e:
        e.check()  # an engine without streams is sound


def test_raw_calls_on_stale_ids_and_null_engine(paced_title, receivers):
    """The C entry points themselves, below the Python guards."""
    media, hints = paced_title
    rx = receivers()
    e = Engine(threads=1)
    stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=0, ts0=0)
    ptr, sid = e._ptr, stream.id
    out = ffi.new("struct kvod_stream_stats *")
    assert lib.kvod_stream_close(ptr, sid) == 0
    assert lib.kvod_stream_close(ptr, sid) == -errno.ENOENT
    assert "no stream" in ffi.string(lib.kvod_last_error()).decode()
    # a new stream may reuse the slot; the old id must not reach it
    other = open_stream(e, rx.sender(), media, hints, ssrc=2, seq0=0, ts0=0)
    assert other.id != sid
    for bad in (sid, -1, 12345, 2**31 - 1):
        assert lib.kvod_stream_play(ptr, bad, 0, 0, 0, ffi.NULL) == -errno.ENOENT
        assert lib.kvod_stream_pause(ptr, bad) == -errno.ENOENT
        assert lib.kvod_stream_set_fill_limit(ptr, bad, 0) == -errno.ENOENT
        assert lib.kvod_stream_stats(ptr, bad, out) == -errno.ENOENT
    assert lib.kvod_stream_play(ptr, other.id, 0, 0, 0x80, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_stream_play(ptr, other.id, 0, -5, 0, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_stream_stats(ptr, other.id, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_stream_play(ffi.NULL, 0, 0, 0, 0, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_stream_stats(ffi.NULL, 0, out) == -errno.EINVAL
    assert lib.kvod_stream_close(ffi.NULL, 0) == -errno.EINVAL
    assert lib.kvod_stream_open(ffi.NULL, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_stream_open(ptr, ffi.NULL) == -errno.EINVAL
    assert lib.kvod_engine_strategy(ffi.NULL) == -errno.EINVAL
    assert lib.kvod_engine_threads(ffi.NULL) == -errno.EINVAL
    lib.kvod_engine_free(ffi.NULL)
    assert lib.kvod_now_ns() > 0
    stream._id = None
    e.close()


@pytest.fixture
def good_files(tmp_path):
    media = tmp_path / "good.bin"
    media.write_bytes(b"m" * 1000)
    hints = write_hints(tmp_path / "good.hint", [HintRecord(0, 1000, 0, 0, 0, b"")])
    return str(media), hints


def expect_open_error(engine: Engine, err: int, words: str, sock, media, hints):
    with pytest.raises(EngineError) as exc:
        engine.open_stream(sock, media, hints, ssrc=1, seq0=1, ts0=1)
    assert exc.value.errno == err, exc.value
    assert words in str(exc.value), exc.value


def test_bad_sockets(good_files, receivers, tmp_path):
    media_path, hint_path = good_files
    rx = receivers()
    before = fd_count()
    with Engine(threads=1) as e, open(media_path, "rb") as m, open(hint_path, "rb") as h:
        expect_open_error(e, errno.EBADF, "socket fd -1", -1, m, h)
        closed = rx.sender()
        closed_fd = closed.fileno()
        closed.close()
        expect_open_error(e, errno.EBADF, "socket fd", closed_fd, m, h)
        expect_open_error(e, errno.ENOTSOCK, "not a socket", m, m, h)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            expect_open_error(e, errno.EPROTOTYPE, "not a UDP/IP socket", tcp, m, h)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
            expect_open_error(e, errno.EPROTOTYPE, "not a UDP/IP socket", unix, m, h)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as loose:
            expect_open_error(e, errno.ENOTCONN, "not connected", loose, m, h)
        with rx.sender() as ok:
            expect_open_error(e, errno.EBADF, "media fd -1", ok, -1, h)
            expect_open_error(e, errno.EINVAL, "media fd", ok, ok, h)
            dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                expect_open_error(e, errno.EINVAL, "not a regular file", ok, m, dfd)
            finally:
                os.close(dfd)
            expect_open_error(e, errno.EBADF, "hint fd -1", ok, m, -1)
    assert fd_count() == before  # nothing leaked on the error paths


def raw_header(**over) -> bytes:
    f = dict(magic=b"KVODHINT", version=1, header_size=64, record_size=32, flags=0,
             clock_rate=90000, payload_type=33, record_count=1, duration_ns=0,
             blob_offset=0, blob_size=0)
    f.update(over)
    return struct.pack("<8sHHHHIB3xQQQQ8x", f["magic"], f["version"], f["header_size"],
                       f["record_size"], f["flags"], f["clock_rate"], f["payload_type"],
                       f["record_count"], f["duration_ns"], f["blob_offset"],
                       f["blob_size"])


ONE_RECORD = HintRecord(0, 1000, 0, 0, 0, b"").pack()


@pytest.mark.parametrize("content, err, words", [
    (b"", errno.EBADMSG, "truncated"),
    (b"KVODHINT" + bytes(10), errno.EBADMSG, "truncated"),
    (raw_header(magic=b"NOTAHINT") + ONE_RECORD, errno.EBADMSG, "bad magic"),
    (raw_header(version=2) + ONE_RECORD, errno.EBADMSG, "version 2"),
    (raw_header(record_size=48) + ONE_RECORD, errno.EBADMSG, "layout"),
    (raw_header(record_count=2) + ONE_RECORD, errno.EBADMSG, "promises 2 records"),
    (raw_header(record_count=2**63) + ONE_RECORD, errno.EBADMSG, "promises"),
    (raw_header(record_count=2**64 - 1) + ONE_RECORD, errno.EBADMSG, "promises"),
    (raw_header(blob_offset=96, blob_size=1) + ONE_RECORD, errno.EBADMSG, "blob area"),
    (raw_header(blob_offset=2**64 - 1, blob_size=2) + ONE_RECORD, errno.EBADMSG, "blob area"),
    (raw_header(payload_type=200) + ONE_RECORD, errno.EINVAL, "payload type 200"),
    (raw_header() + HintRecord(1, 1000, 0, 0, 0, b"").pack(), errno.ERANGE, "beyond the media"),
    (raw_header() + HintRecord(2**64 - 10, 100, 0, 0, 0, b"").pack(), errno.ERANGE,
     "beyond the media"),
    (raw_header(blob_offset=96, blob_size=0) + HintRecord(0, 1, 0, 0, REC_BLOB, b"").pack(),
     errno.ERANGE, "beyond the hint blob area"),
    (raw_header() + struct.pack("<QIIQHB5s", 0, 10, 0, 0, 0, 6, b""), errno.EBADMSG,
     "prefix_len 6"),
    (raw_header(record_count=1) + HintRecord(0, 70000, 0, 0, 0, b"").pack(),
     errno.EBADMSG, "do not fit a UDP datagram"),
])
def test_bad_hint_files(content, err, words, tmp_path, receivers):
    media = tmp_path / "media.bin"
    media.write_bytes(b"m" * 1000)
    bad = tmp_path / "bad.hint"
    bad.write_bytes(content)
    rx = receivers()
    with Engine(threads=1) as e, open(media, "rb") as m, open(bad, "rb") as h, \
            rx.sender() as sock:
        expect_open_error(e, err, words, sock, m, h)


def test_record_ends_exactly_at_media_end_is_fine(tmp_path, receivers):
    media = tmp_path / "media.bin"
    media.write_bytes(b"m" * 1000)
    hints = tmp_path / "h.hint"
    hints.write_bytes(raw_header(record_count=2) + HintRecord(999, 1, 0, 0, 0, b"").pack()
                      + HintRecord(1000, 0, 0, 0, 0, b"").pack())
    rx = receivers()
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), str(media), str(hints), ssrc=1, seq0=1, ts0=1)
        stream.play(unpaced=True)
        assert [len(p) for p in rx.collect(2)] == [13, 12]


def test_python_argument_checks(good_files, receivers):
    media, hints = good_files
    rx = receivers()
    with Engine(threads=1) as e, rx.sender() as sock:
        for kw in (dict(ssrc=-1, seq0=0, ts0=0), dict(ssrc=0, seq0=65536, ts0=0),
                   dict(ssrc=0, seq0=0, ts0=2**32), dict(ssrc=0, seq0=0, ts0=0, payload_type=128)):
            with pytest.raises(ValueError):
                e.open_stream(sock, 0, 0, **kw)
        stream = open_stream(e, sock, media, hints, ssrc=0, seq0=0, ts0=0)
        with pytest.raises(ValueError):
            stream.play(start_record=-1)
        with pytest.raises(ValueError):
            stream.set_fill_limit(2**64)
        assert stream.stats().state == "idle"


def test_now_ns_is_the_monotonic_clock():
    a, b, c = time.monotonic_ns(), now_ns(), time.monotonic_ns()
    assert a <= b <= c


def test_dropped_stream_is_closed(good_files, receivers):
    media, hints = good_files
    rx = receivers()
    with Engine(threads=1) as e:
        before = fd_count()
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
        assert fd_count() == before + 1  # the engine's copy of the socket
        del stream
        gc.collect()
        assert fd_count() == before


def test_concurrent_calls_and_engine_close(paced_title, receivers):
    """Python threads race commands, closes and the engine's close: every
    call either works or raises EngineError; nothing crashes or hangs."""
    media, hints = paced_title
    rx = receivers()
    e = Engine()
    streams = [open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=0, ts0=0)
               for i in range(8)]
    stop = threading.Event()
    unexpected: list[BaseException] = []

    def hammer(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            s = rnd.choice(streams)
            op = rnd.choice(["play", "seek", "pause", "fill", "stats", "stats", "close"])
            try:
                if op == "play":
                    s.play(unpaced=rnd.random() < 0.3)
                elif op == "seek":
                    s.play(start_record=rnd.randrange(200))
                elif op == "pause":
                    s.pause()
                elif op == "fill":
                    s.set_fill_limit(rnd.randrange(100_000))
                elif op == "stats":
                    s.stats()
                elif rnd.random() < 0.05:
                    s.close()
            except EngineError as exc:
                if exc.errno != errno.EBADF:
                    unexpected.append(exc)
            except BaseException as exc:  # noqa: BLE001 - report anything
                unexpected.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    e.close()  # while the threads still call in
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive()
    assert not unexpected, unexpected[:3]
    assert all(s.closed for s in streams)
    rx.settle()


def test_play_says_where_it_starts(paced_title, receivers):
    # what RTP-Info announces: the sequence number, RTP time and npt of the
    # first packet sent, read in C under the lock that orders play and sends
    media, hints = paced_title
    rx = receivers()
    kw = dict(ssrc=21, seq0=65530, ts0=0xFFFFFF00)
    with HintFile(hints) as h:
        recs = list(h)
    with Engine() as e:
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        start = stream.play()
        first = parse_rtp(rx.collect(1)[0])[0]
        assert (start.record, start.seq, start.rtp_ts, start.send_ns) == (
            0, first.seq, first.timestamp, 0)
        time.sleep(0.2)
        start = stream.play(start_record=150)   # a seek while playing
        st_ = wait_state(stream, "ended")
        got = rx.settle()
        sent_before = st_.packets_sent - 50
        seek_first = parse_rtp(got[sent_before])[0]
        assert start.record == 150 and start.send_ns == recs[150].send_ns
        assert (start.seq, start.rtp_ts) == (seek_first.seq, seek_first.timestamp)
        assert start.seq == seq_add(65530, sent_before)
        # from the end: nothing more to send; the last record's time
        start = stream.play()
        assert start.record == len(recs) and start.send_ns == recs[-1].send_ns
        assert start.seq == seq_add(65530, len(got))
        assert start.rtp_ts == (0xFFFFFF00 + recs[-1].rtp_ts) & 0xFFFFFFFF


def resident_pages(path: str) -> int:
    """Pages of ``path`` in the page cache now (mincore over a mapping of
    our own, which reads nothing in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    size = os.path.getsize(path)
    vec = ctypes.create_string_buffer((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        if libc.mincore(addr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
    finally:
        libc.munmap(addr, size)
    return sum(b & 1 for b in vec.raw)


def test_a_hint_file_is_checked_once_not_per_open(tmp_path, receivers):
    # SETUP used to read every record of the title (a two-hour film: 87 MB
    # of records) on every open; now the engine remembers what it checked
    # by file identity, and reads only what it sends
    media = tmp_path / "m.bin"
    media.write_bytes(bytes(range(256)) * 64)
    count = 2_000_000                       # 64 MB of records, a long film's
    hints = write_hints(tmp_path / "long.hint", [HintRecord(0, 100, i, i * MS, 0, b"")
                                                 for i in range(count)])
    rx = receivers()
    total = os.path.getsize(hints) // mmap.PAGESIZE

    def open_then_resident(engine) -> int:
        # out of the page cache, then opened: what the open read
        with open(hints, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        stream = open_stream(engine, rx.sender(), str(media), hints, ssrc=1, seq0=0, ts0=0)
        stream.close()
        return resident_pages(hints)

    os.sync()
    with Engine() as e:
        first = open_then_resident(e)
        again = [open_then_resident(e) for _ in range(3)]
        assert first > total * 0.9, (first, total)     # every record read once
        # then the header and what readahead brings around it
        assert max(again) < total / 4, (again, total)
        # rewritten in place, same size: checked again, and refused
        with open(hints, "r+b") as f:
            f.seek(64 + 32 * (count - 1))
            f.write(HintRecord(1 << 40, 100, 0, 0, 0, b"").pack())
        with pytest.raises(EngineError) as exc:
            open_stream(e, rx.sender(), str(media), hints, ssrc=1, seq0=0, ts0=0)
        assert exc.value.errno == errno.ERANGE and f"record {count - 1}" in str(exc.value)
