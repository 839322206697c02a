"""Kernel pacing on this machine (no fq: SO_TXTIME is taken and ignored,
so kernel-paced packets arrive up to the kernel lookahead early). What can
be checked here: the bytes (against the reference packetiser), the
system-call counts, the choice "auto" makes and why, the fallbacks. That
fq releases the packets on time is checked in the QEMU guests
(tests/kernel/guest/test_fq_pacing.py)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time

import pytest

from rtpengine._kvod_engine import ffi, lib
from rtpengine.engine import Engine, now_ns
from rtpengine.qdisc import FqAnswer
from tests.helpers.engine import (MS, chunk_records, expected, odd_title, open_stream,
                               wait_state, write_hints)

BATCHED = ["gso", "sendmmsg", "gso_zerocopy", "uring_gso"]
SO_TXTIME = 61


@pytest.fixture
def paced(tmp_path):
    """300 packets of 1316 bytes, 2 ms apart (0.6 s)."""
    media = tmp_path / "p.bin"
    media.write_bytes(os.urandom(300 * 1316))
    return str(media), write_hints(tmp_path / "p.hint",
                                   chunk_records(300 * 1316, 0, gap_ns=2 * MS))


def play_paced(engine, rx, title, pacing, **kw):
    media, hints = title
    stream = open_stream(engine, rx.sender(), media, hints, pacing=pacing, **kw)
    start = now_ns() + 20 * MS
    stream.play(at_ns=start)
    return stream, start


@pytest.mark.parametrize("strategy", BATCHED)
def test_kernel_paced_packets_match_packetizer(strategy, paced, receivers):
    media, hints = paced
    rx = receivers()
    kw = dict(ssrc=0xCAFE, seq0=65500, ts0=2**32 - 5)
    with Engine(threads=1, strategy=strategy) as e:
        stream, _ = play_paced(e, rx, paced, "kernel", **kw)
        assert stream.pacing_reason == "kernel pacing asked for"
        got = rx.collect(300, timeout=10)
        st_ = wait_state(stream, "ended")
        assert e.status()["paced_streams"] == {"kernel": 1, "engine": 0}
        stream.close()
        assert e.status()["paced_streams"] == {"kernel": 0, "engine": 0}
    assert got == expected(hints, media, **kw)
    assert st_.pacing == "kernel" and st_.refused == () and st_.strategy == strategy
    assert (st_.packets_sent, st_.send_errors, st_.packets_dropped) == (300, 0, 0)
    # handed over ahead of time: not late (a loaded machine may make a few)
    assert st_.late_5ms <= 30


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg"])
def test_kernel_paced_odd_records_match_packetizer(strategy, tmp_path, receivers):
    """Prefixes, blob payloads, empty payloads, the largest datagram, runs
    longer than a GSO message, paced 1 us apart (within the user
    lookahead, so GSO messages group them) with the departure time on
    every message, lone datagrams included."""
    media, hints = odd_title(tmp_path)
    rx = receivers()
    kw = dict(ssrc=7, seq0=65000, ts0=0xFFFFFF00)
    with Engine(threads=1, strategy=strategy) as e:
        stream = open_stream(e, rx.sender(), str(media), hints, pacing="kernel", **kw)
        stream.play(at_ns=now_ns() + 10 * MS)
        want = expected(hints, str(media), **kw)
        got = rx.collect(len(want))
        st_ = wait_state(stream, "ended")
    assert got == want
    assert st_.pacing == "kernel" and st_.send_errors == 0


def test_kernel_pacing_needs_far_fewer_calls(paced, receivers):
    """The same paced stream: the engine sends each packet at its time (one
    call per packet 2 ms apart); kernel-paced, it is handed over about
    every kernel lookahead / 2 (10 ms): counts, not timing."""
    calls = {}
    for pacing in ("engine", "kernel"):
        rx = receivers()
        with Engine(threads=1, strategy="gso") as e:
            stream, _ = play_paced(e, rx, paced, pacing, ssrc=1, seq0=1, ts0=1)
            assert len(rx.collect(300, timeout=10)) == 300
            st_ = wait_state(stream, "ended")
            calls[pacing] = (st_.syscalls, e.stats()["syscalls"])
        assert st_.pacing == pacing
    engine_calls, kernel_calls = calls["engine"][0], calls["kernel"][0]
    # 0.6 s: ~300 calls paced by the engine (fewer when a busy machine
    # wakes the thread late and two packets share a call), ~60 by the kernel
    assert engine_calls >= 200, calls
    assert kernel_calls <= 100 and kernel_calls * 3 <= engine_calls, calls
    # a larger kernel lookahead: fewer still
    rx = receivers()
    with Engine(threads=1, strategy="gso", kernel_lookahead_ns=100 * MS) as e:
        stream, _ = play_paced(e, rx, paced, "kernel", ssrc=1, seq0=1, ts0=1)
        assert len(rx.collect(300, timeout=10)) == 300
        assert wait_state(stream, "ended").syscalls <= 25
        assert e.status()["kernel_lookahead_ms"] == 100.0


def test_kernel_paced_messages_group_packets_within_the_burst(paced, receivers):
    """fq releases a GSO message at its first packet's time: packets join
    it only within the burst, so none leaves earlier than the engine would
    send it. 2 ms apart: one a message with no burst, four with 7 ms."""
    messages = {}
    for burst in (0, 7 * MS):
        rx = receivers()
        with Engine(threads=1, strategy="gso", burst_ns=burst) as e:
            stream, _ = play_paced(e, rx, paced, "kernel", ssrc=1, seq0=1, ts0=1)
            assert len(rx.collect(300, timeout=10)) == 300
            assert wait_state(stream, "ended").pacing == "kernel"
            messages[burst] = e.stats()["messages"]
    assert messages[0] == 300
    assert 300 // 4 <= messages[7 * MS] <= 300 // 4 + 30, messages


def test_auto_chooses_engine_pacing_here_and_says_why(paced, receivers, caplog):
    media, hints = paced
    caplog.set_level(logging.WARNING, logger="rtpengine.engine")
    rx = receivers()
    with Engine(threads=1) as e:
        assert e.pacing == "auto"
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
        assert stream.stats().pacing == "engine"
        assert stream.pacing_reason == ("auto: no fq on the way, paced by the engine "
                                        "(lo: root qdisc is noqueue, not fq)")
        status = e.status()
        assert status["pacing"] == "auto" and status["features"]["txtime"] is True
        assert status["pacing_notes"] == [stream.pacing_reason]
        assert status["paced_streams"] == {"kernel": 0, "engine": 1}
    assert "kernel pacing" not in caplog.text  # auto falling back is no warning


def test_auto_follows_the_detector(paced, receivers):
    """Where detection says fq (here faked), auto asks for kernel pacing."""
    media, hints = paced
    asked = []

    def fake(addr):
        asked.append(addr)
        return FqAnswer(True, "lo: root qdisc is fq", 1, "lo")

    rx = receivers()
    with Engine(threads=1, fq_detector=fake) as e:
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1)
        assert stream.stats().pacing == "kernel"
        assert stream.pacing_reason == "auto: fq on the way (lo: root qdisc is fq)"
        # an engine-wide default, and the per-stream word over it
        s2 = open_stream(e, rx.sender(), media, hints, ssrc=2, seq0=1, ts0=1, pacing="engine")
        assert s2.stats().pacing == "engine"
    assert asked == ["127.0.0.1"]
    with Engine(threads=1, pacing="engine", fq_detector=fake) as e:
        assert open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1,
                           ts0=1).stats().pacing == "engine"
    assert asked == ["127.0.0.1"]


def test_a_peer_the_caller_names_is_asked_about_without_asking_the_socket(
        paced, receivers, monkeypatch):
    """SETUP knows the client's address: the route is looked up for it and
    the socket is not asked (six system calls on every SETUP)."""
    import rtpengine.engine as engine_module
    media, hints = paced
    asked = []

    def fake(addr):
        asked.append(addr)
        return FqAnswer(False, "lo: root qdisc is noqueue, not fq", 1, "lo")

    def no_asking(fd):
        raise AssertionError("the socket was asked for its peer")
    monkeypatch.setattr(engine_module, "_peer_host", no_asking)
    rx = receivers()
    with Engine(threads=1, fq_detector=fake) as e:
        stream = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1,
                             peer="127.0.0.1")
        assert stream.pacing_reason.startswith("auto: no fq on the way")
    assert asked == ["127.0.0.1"]


def test_refused_txtime_falls_back_to_engine_pacing_and_says_so(paced, receivers, caplog):
    media, hints = paced
    caplog.set_level(logging.WARNING, logger="rtpengine.engine")
    rx = receivers()
    kw = dict(ssrc=3, seq0=4, ts0=5)
    with Engine(threads=1, strategy="gso", refuse=["txtime"]) as e:
        assert e.features["txtime"] is False and e.fallback is None
        stream, _ = play_paced(e, rx, paced, "kernel", **kw)
        assert stream.pacing_reason == "the socket refused SO_TXTIME; paced by the engine"
        got = rx.collect(300, timeout=10)
        st_ = wait_state(stream, "ended")
        status = e.status()
    assert got == expected(hints, media, **kw)
    assert st_.pacing == "engine" and st_.refused == ("txtime",)
    assert "kernel pacing asked for, not used: the socket refused SO_TXTIME" in caplog.text
    assert status["runtime_refused"] == ["txtime"]
    assert status["pacing_notes"] == [stream.pacing_reason]
    assert st_.syscalls >= 200  # paced by the engine: a call a packet


def test_shared_sockets_and_per_packet_strategies_stay_engine_paced(paced, receivers, caplog):
    media, hints = paced
    caplog.set_level(logging.WARNING, logger="rtpengine.engine")
    rx = receivers()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    with Engine(threads=1, strategy="gso") as e, open(media, "rb") as m, open(hints, "rb") as h:
        s = e.open_stream(server, m, h, dest=rx.sock.getsockname(), ssrc=1, seq0=1, ts0=1,
                          pacing="kernel")
        assert s.stats().pacing == "engine" and s.stats().refused == ()
        assert "shared socket" in s.pacing_reason and "flow_limit" in s.pacing_reason
    server.close()
    with Engine(threads=1, strategy="mmap_writev") as e:
        s = open_stream(e, rx.sender(), media, hints, ssrc=1, seq0=1, ts0=1, pacing="kernel")
        assert s.stats().pacing == "engine"
        assert s.pacing_reason == "strategy mmap_writev paces in the engine"
    assert caplog.text.count("kernel pacing asked for, not used") == 2


def test_pacing_arguments_are_checked(paced):
    media, hints = paced
    with pytest.raises(ValueError, match="unknown pacing"):
        Engine(pacing="fast")
    with pytest.raises(ValueError, match="kernel lookahead"):
        Engine(kernel_lookahead_ns=-1)
    with Engine(threads=1) as e, open(media, "rb") as m, open(hints, "rb") as h:
        with pytest.raises(ValueError, match="unknown pacing"):
            e.open_stream(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), m, h,
                          ssrc=1, seq0=1, ts0=1, pacing="hardware")


def test_raw_kernel_pacing_calls(paced, receivers):
    """The C entry points below the Python guards: the option's range, the
    flag on open, the stats field."""
    media, hints = paced
    o = ffi.new("struct kvod_engine_opts *")
    o.threads, o.strategy = 1, lib.KVOD_STRATEGY_GSO
    for bad in (-1, 1_000_000_001):
        o.kernel_lookahead_ns = bad
        assert lib.kvod_engine_new_opts(o) == ffi.NULL and ffi.errno == errno.EINVAL
        assert b"kernel lookahead" in ffi.string(lib.kvod_last_error())
    o.kernel_lookahead_ns = 1_000_000_000
    e = lib.kvod_engine_new_opts(o)
    assert e != ffi.NULL
    rx = receivers()
    sock = rx.sender()
    assert struct.unpack("=iI", sock.getsockopt(socket.SOL_SOCKET, SO_TXTIME, 8))[0] != \
        time.CLOCK_MONOTONIC
    try:
        with open(media, "rb") as m, open(hints, "rb") as h:
            p = ffi.new("struct kvod_stream_params *")
            p.sock_fd, p.media_fd, p.hint_fd = sock.fileno(), m.fileno(), h.fileno()
            p.payload_type = lib.KVOD_PT_FROM_HINT
            p.flags = lib.KVOD_PACE_KERNEL | 0x8000  # no such flag
            assert lib.kvod_stream_open(e, p) == -errno.EINVAL
            assert b"unknown flags 0x8008" in ffi.string(lib.kvod_last_error())
            p.flags = lib.KVOD_PACE_KERNEL | lib.KVOD_HINTS_GROWING
            sid = lib.kvod_stream_open(e, p)
            assert sid >= 0
            st = ffi.new("struct kvod_stream_stats *")
            assert lib.kvod_stream_stats(e, sid, st) == 0
            assert st.kernel_paced == 1 and st.refused == 0
            # SO_TXTIME on CLOCK_MONOTONIC is now on the socket itself (the
            # engine's copy is the same socket); it was not before
            assert struct.unpack("=iI", sock.getsockopt(socket.SOL_SOCKET, SO_TXTIME, 8)) == (
                time.CLOCK_MONOTONIC, 0)
            p.flags = 0
            sid2 = lib.kvod_stream_open(e, p)
            assert lib.kvod_stream_stats(e, sid2, st) == 0 and st.kernel_paced == 0
    finally:
        lib.kvod_engine_free(e)
        sock.close()
    assert lib.kvod_probe_features() & lib.KVOD_FEAT_TXTIME
