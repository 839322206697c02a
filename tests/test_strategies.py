"""Every send strategy, shared sockets and the fallbacks, over real UDP on
127.0.0.1: each packet is compared byte for byte with the reference
packetiser (rtpengine.packetizer)."""

from __future__ import annotations

import errno
import logging
import os
import socket

import pytest

from rtpengine._kvod_engine import ffi, lib
from rtpengine.engine import FEATURES, STRATEGIES, Engine, EngineError, probe_features
from rtpengine.hintfile import HintRecord
from tests.helpers.engine import (MS, check_stream, chunk_records, difference, expected,
                               odd_title, open_stream, seqs, ts_title_hints, wait_state,
                               write_hints)

ALL = [s for s in STRATEGIES if s != "auto"]
# the research's per-packet paths, and the system calls each makes a packet
PER_PACKET_CALLS = {"read_send_rtp": 2, "read_writev": 2, "mmap_writev": 1,
                    "rtp_sendfile": 4, "sendfile_more": 2}


@pytest.fixture
def ts_title(ts_file, tmp_path):
    return ts_file, ts_title_hints(ts_file, tmp_path / "ts.hint")


def test_every_strategy_has_a_name_in_c_and_python():
    assert ALL == ["gso", "sendmmsg", "read_send_rtp", "read_writev", "mmap_writev",
                   "rtp_sendfile", "sendfile_more", "gso_zerocopy", "uring_gso"]
    assert ffi.string(lib.kvod_strategy_name(99)) == b"unknown"
    assert ffi.string(lib.kvod_strategy_name(-1)) == b"unknown"


def test_this_kernel_offers_every_feature():
    # PLATFORM.md: UDP GSO, MSG_ZEROCOPY and io_uring are all present here;
    # SO_TXTIME is taken (and ignored: no fq, see tests/test_kernel_pacing.py)
    assert probe_features() == {"udp_segment": True, "zerocopy": True, "io_uring": True,
                                "txtime": True}
    with Engine(threads=1) as e:
        assert e.strategy == "gso" and e.fallback is None
        assert e.status()["features"] == probe_features()


@pytest.mark.parametrize("strategy", ALL)
def test_ts_title_matches_packetizer(strategy, ts_title, receivers):
    """The whole title unpaced: sequence and timestamp wrap, the short last
    packet; every strategy sends the same bytes."""
    media, hints = ts_title
    rx = receivers()
    kw = dict(ssrc=0xCAFEF00D, seq0=65533, ts0=2**32 - 77)
    want = expected(hints, media, **kw)
    with Engine(threads=1, strategy=strategy) as e:
        assert e.strategy == strategy and e.fallback is None
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play(unpaced=True)
        got = rx.collect(len(want), timeout=10)
        st_ = wait_state(stream, "ended")
        stream.close()  # zero-copy: waits for the kernel's completions
        est = e.stats()
    assert len(got) == len(want) and got == want
    assert seqs(got)[:4] == [65533, 65534, 65535, 0]
    assert len(want[-1]) < len(want[0])
    assert st_.strategy == strategy and st_.refused == ()
    assert (st_.packets_sent, st_.send_errors, st_.packets_dropped) == (len(want), 0, 0)
    assert est["packets"] == len(want)
    if strategy in PER_PACKET_CALLS:
        assert est["syscalls"] == PER_PACKET_CALLS[strategy] * len(want)
        assert st_.syscalls == est["syscalls"]
    elif strategy == "sendmmsg":
        assert est["syscalls"] <= len(want) // 100
    else:  # GSO: ~49 segments a message (zero-copy: ~6), many a call
        assert est["syscalls"] <= len(want) // 40 + est["zc_completions"] + 2
    if strategy == "gso_zerocopy":
        # loopback delivery copies deferred: completions say "copied"
        assert est["zc_completions"] >= 1


@pytest.mark.parametrize("strategy", ALL)
def test_odd_records_match_packetizer(strategy, tmp_path, receivers):
    """Prefixes, BLOB payloads from the hint file, empty payloads, runs
    longer than a GSO message, the largest datagram."""
    media, hints = odd_title(tmp_path)
    rx = receivers()
    kw = dict(ssrc=7, seq0=65000, ts0=0xFFFFFF00)
    want = expected(hints, str(media), **kw)
    with Engine(threads=1, strategy=strategy) as e:
        stream = open_stream(e, rx.sender(), str(media), hints, **kw)
        stream.play(unpaced=True)
        got = rx.collect(len(want))
        st_ = wait_state(stream, "ended")
    assert got == want
    assert st_.send_errors == 0


@pytest.mark.parametrize("strategy", ["rtp_sendfile", "uring_gso", "gso_zerocopy"])
def test_paced_strategies_keep_time(strategy, tmp_path, receivers):
    media = tmp_path / "p.bin"
    media.write_bytes(os.urandom(100 * 700))
    hints = write_hints(tmp_path / "p.hint",
                        chunk_records(100 * 700, 0, chunk=700, gap_ns=4 * MS))
    rx = receivers()
    kw = dict(ssrc=3, seq0=1, ts0=2)
    want = expected(hints, str(media), **kw)
    with Engine(threads=1, strategy=strategy) as e:
        stream = open_stream(e, rx.sender(), str(media), hints, **kw)
        from rtpengine.engine import now_ns
        start = now_ns() + 20 * MS
        stream.play(at_ns=start)
        got = rx.collect(len(want), timeout=3)
        st_ = wait_state(stream, "ended")
    assert got == want
    lateness = [t - (start + i * 4 * MS) for i, t in enumerate(rx.times)]
    assert min(lateness) >= -1 * MS          # never much before its time
    # paced, not blasted (timeliness itself is measured by the benchmark;
    # a loaded machine may make a few packets late)
    assert st_.late_5ms <= len(want) // 10 and rx.times[-1] - start >= 99 * 4 * MS * 0.95


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg"])
def test_a_burst_sends_a_slow_stream_in_fewer_fuller_messages(strategy, tmp_path, receivers):
    """A packet every 4 ms and a 40 ms burst: the stream is served about
    every 40 ms with ten packets a call, each at most the burst early and
    none held back; without a burst, a call a packet."""
    media = tmp_path / "b.bin"
    media.write_bytes(os.urandom(150 * 700))
    hints = write_hints(tmp_path / "b.hint",
                        chunk_records(150 * 700, 0, chunk=700, gap_ns=4 * MS))
    kw = dict(ssrc=4, seq0=65500, ts0=7)
    want = expected(hints, str(media), **kw)
    from rtpengine.engine import now_ns
    calls = {}
    for burst in (0, 40 * MS):
        rx = receivers()
        with Engine(threads=1, strategy=strategy, burst_ns=burst) as e:
            assert e.status()["burst_ms"] == (burst or e.lookahead_ns) / 1e6
            stream = open_stream(e, rx.sender(), str(media), hints, **kw)
            start = now_ns() + 20 * MS
            stream.play(at_ns=start)
            got = rx.collect(len(want), timeout=4)
            st_ = wait_state(stream, "ended", timeout=4)
            est = e.stats()
        assert got == want
        calls[burst] = st_.syscalls
        assert est["packets"] == len(want)
        if strategy == "sendmmsg":
            assert est["messages"] == len(want)   # a datagram a packet
        elif burst:
            assert est["messages"] <= len(want) // 5  # the burst's packets, one message
        early = [start + i * 4 * MS - t for i, t in enumerate(rx.times)]
        assert max(early) <= (burst or MS) + 2 * MS     # never more than the burst early
        if burst:
            # most packets leave ahead of time, in groups
            assert sum(1 for x in early if x > 8 * MS) >= len(want) // 2
    # ten packets a call with the burst; a loaded machine only makes the
    # burst-less stream batch more (late packets go out together)
    assert calls[40 * MS] <= len(want) // 5 < calls[0]


def test_burst_options_are_checked():
    o = ffi.new("struct kvod_engine_opts *")
    o.threads, o.burst_ns = 1, -1
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    assert ffi.errno == errno.EINVAL and b"burst" in ffi.string(lib.kvod_last_error())
    o.burst_ns = 1_000_000_001
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    with pytest.raises(ValueError, match="burst"):
        Engine(threads=1, burst_ns=-5)
    with Engine(threads=1, lookahead_ns=2 * MS, burst_ns=MS) as e:
        assert (e.lookahead_ns, e.burst_ns) == (2 * MS, 2 * MS)  # at least the lookahead


# --- shared socket: one server port, many clients -------------------------------

def shared_socket(family=socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    return s


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg", "uring_gso", "gso_zerocopy",
                                      "rtp_sendfile", "sendfile_more", "read_send_rtp"])
def test_shared_socket_streams_match_packetizer(strategy, tmp_path, receivers):
    """Twelve clients fed from one unconnected socket: each gets exactly its
    own stream, and the packets all come from the one server port."""
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(300 * 1316 + 500))
    hints = write_hints(tmp_path / "m.hint", chunk_records(300 * 1316 + 500, 10**9))
    rxs = [receivers() for _ in range(12)]
    server = shared_socket()
    params = [dict(ssrc=100 + i, seq0=(65500 + i * 7) & 0xFFFF, ts0=i * 1000)
              for i in range(12)]
    with Engine(threads=2, strategy=strategy) as e, open(media, "rb") as m, \
            open(hints, "rb") as h:
        streams = [e.open_stream(server, m, h, dest=rx.sock.getsockname(), **kw)
                   for rx, kw in zip(rxs, params)]
        for s in streams:
            s.play(unpaced=True)
        for s in streams:
            st_ = wait_state(s, "ended")
            assert st_.shared and st_.send_errors == 0, st_
    for rx, kw in zip(rxs, params):
        want = expected(hints, str(media), **kw)
        assert rx.collect(len(want)) == want
    port = server.getsockname()[1]
    server.close()
    # the packets come from the one server port
    probe = receivers()
    with Engine(threads=1, strategy=strategy) as e, open(media, "rb") as m, \
            open(hints, "rb") as h:
        srv = shared_socket()
        port = srv.getsockname()[1]
        s = e.open_stream(srv, m, h, dest=probe.sock.getsockname(), ssrc=1, seq0=0, ts0=0)
        srv.close()
        s.play(start_record=298, unpaced=True)
        wait_state(s, "ended")
        probe.sock.setblocking(True)
        probe.sock.settimeout(2)
        _, src = probe.sock.recvfrom(65536)
    assert src == ("127.0.0.1", port)


def test_shared_socket_batches_many_clients_per_call(tmp_path, receivers):
    """Paced streams on one socket: the system calls per pacing round do
    not grow with the number of clients."""
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(60 * 1316))
    # every stream has a packet due every 10 ms, all in step
    hints = write_hints(tmp_path / "m.hint",
                        chunk_records(60 * 1316, 0, gap_ns=10 * MS))
    rxs = [receivers() for _ in range(40)]
    server = shared_socket()
    from rtpengine.engine import now_ns
    with Engine(threads=1, strategy="gso") as e, open(media, "rb") as m, \
            open(hints, "rb") as h:
        streams = [e.open_stream(server, m, h, dest=rx.sock.getsockname(),
                                 ssrc=i, seq0=i, ts0=i)
                   for i, rx in enumerate(rxs)]
        start = now_ns() + 30 * MS
        for s in streams:
            s.play(at_ns=start)
        for s in streams:
            assert wait_state(s, "ended").state == "ended"
        est = e.stats()
    assert est["packets"] == 40 * 60
    # 60 ticks; a tick may split in two when the thread wakes mid-way
    assert est["syscalls"] <= 2 * 60, est
    for i, rx in enumerate(rxs):
        assert rx.collect(60) == expected(hints, str(media), ssrc=i, seq0=i, ts0=i)


def test_per_session_sockets_batch_through_io_uring(tmp_path, receivers):
    """uring_gso takes every socket of a thread in one submission."""
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(30 * 1316))
    hints = write_hints(tmp_path / "m.hint", chunk_records(30 * 1316, 0, gap_ns=10 * MS))
    rxs = [receivers() for _ in range(20)]
    from rtpengine.engine import now_ns
    with Engine(threads=1, strategy="uring_gso") as e:
        streams = [open_stream(e, rx.sender(), str(media), hints, ssrc=i, seq0=0, ts0=0)
                   for i, rx in enumerate(rxs)]
        start = now_ns() + 30 * MS
        for s in streams:
            s.play(at_ns=start)
        for s in streams:
            wait_state(s, "ended")
        est = e.stats()
    assert est["packets"] == 20 * 30 and est["syscalls"] <= 2 * 30, est
    for i, rx in enumerate(rxs):
        assert rx.collect(30) == expected(hints, str(media), ssrc=i, seq0=0, ts0=0)


def test_shared_socket_ipv6(tmp_path):
    media = tmp_path / "m.bin"
    media.write_bytes(os.urandom(5000))
    hints = write_hints(tmp_path / "m.hint", chunk_records(5000, 0))
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    rx.settimeout(2)
    server = shared_socket(socket.AF_INET6)
    try:
        with Engine(threads=1) as e, open(media, "rb") as m, open(hints, "rb") as h:
            s = e.open_stream(server, m, h, dest=rx.getsockname()[:2], ssrc=9, seq0=9, ts0=9)
            s.play(unpaced=True)
            got = [rx.recv(65536) for _ in range(4)]
        assert got == expected(hints, str(media), ssrc=9, seq0=9, ts0=9)
    finally:
        rx.close()
        server.close()


def test_shared_socket_bad_destinations(tmp_path, receivers):
    media = tmp_path / "m.bin"
    media.write_bytes(b"x" * 100)
    hints = write_hints(tmp_path / "m.hint", [HintRecord(0, 100, 0, 0, 0, b"")])
    rx = receivers()
    server = shared_socket()
    with Engine(threads=1) as e, open(media, "rb") as m, open(hints, "rb") as h:
        def fails(err, words, sock, dest):
            with pytest.raises(EngineError) as exc:
                e.open_stream(sock, m, h, ssrc=1, seq0=1, ts0=1, dest=dest)
            assert exc.value.errno == err and words in str(exc.value), exc.value

        fails(errno.EAFNOSUPPORT, "does not suit", server, ("::1", 5))
        fails(errno.EINVAL, "port 0", server, ("127.0.0.1", 0))
        with rx.sender() as connected:
            fails(errno.EISCONN, "is connected", connected, ("127.0.0.1", 5))
        with pytest.raises(ValueError, match="numeric"):
            e.open_stream(server, m, h, ssrc=1, seq0=1, ts0=1, dest=("localhost", 5))
        with pytest.raises(ValueError):
            e.open_stream(server, m, h, ssrc=1, seq0=1, ts0=1, dest=("127.0.0.1", 70000))
    server.close()


# --- fallbacks ---------------------------------------------------------------------

@pytest.mark.parametrize("asked, refuse, runs, words", [
    ("gso", ["udp_segment"], "sendmmsg", "gso refused UDP_SEGMENT (UDP GSO): using sendmmsg"),
    ("uring_gso", ["io_uring"], "gso", "uring_gso refused io_uring: using gso"),
    ("gso_zerocopy", ["zerocopy"], "gso", "gso_zerocopy refused SO_ZEROCOPY: using gso"),
    ("uring_gso", ["io_uring", "udp_segment"], "sendmmsg", "gso refused UDP_SEGMENT"),
    ("auto", ["udp_segment"], "sendmmsg", None),
    ("auto", [], "gso", None),
    ("rtp_sendfile", list(FEATURES), "rtp_sendfile", None),
])
def test_refused_features_fall_back_and_say_so(asked, refuse, runs, words, caplog,
                                               ts_title, receivers):
    media, hints = ts_title
    rx = receivers()
    caplog.set_level(logging.WARNING, logger="rtpengine.engine")
    with Engine(threads=1, strategy=asked, refuse=refuse) as e:
        assert e.strategy == runs
        assert e.requested_strategy == asked
        status = e.status()
        assert status["strategy"] == runs and status["requested_strategy"] == asked
        for name in refuse:
            assert status["features"][name] is False
        if words:
            assert words in e.fallback and words in caplog.text
            assert status["fallback"] == e.fallback
        else:
            assert e.fallback is None and "refused" not in caplog.text
        kw = dict(ssrc=1, seq0=2, ts0=3)
        stream = open_stream(e, rx.sender(), media, hints, **kw)
        stream.play(unpaced=True)
        want = expected(hints, media, **kw)
        got = rx.collect(len(want), timeout=10)
        st_ = wait_state(stream, "ended")
        check_stream(got, want, rx, st_)
        assert st_.strategy == runs


def test_gso_refused_at_run_time_is_logged_and_reported(ts_title, receivers, caplog):
    """A socket that may not send without checksums refuses GSO: the
    stream falls back to sendmmsg, loses nothing, and says so."""
    media, hints = ts_title
    rx = receivers()
    sock = rx.sender()
    sock.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
    caplog.set_level(logging.WARNING, logger="rtpengine.engine")
    kw = dict(ssrc=9, seq0=1, ts0=1)
    want = expected(hints, media, **kw)
    with Engine(strategy="uring_gso") as e:
        stream = open_stream(e, sock, media, hints, **kw)
        stream.play(unpaced=True)
        got = rx.collect(len(want), timeout=10)
        st_ = wait_state(stream, "ended")
        assert e.status()["runtime_refused"] == ["udp_segment"]
    # the engine's own counts and the kernel's say who lost a packet
    check_stream(got, want, rx, st_)
    assert st_.refused == ("udp_segment",) and st_.strategy == "sendmmsg"
    assert st_.gso_fallback and st_.packets_dropped == 0
    assert "refused udp_segment at run time" in caplog.text


def test_zerocopy_completions_release_every_header(ts_title, receivers):
    media, hints = ts_title
    rx = receivers()
    # the title's packet count: ffmpeg makes it 1152 or 1153 records long
    want = [p for i in range(3) for p in expected(hints, media, ssrc=i, seq0=i, ts0=i)]
    per_play = len(want) // 3
    with Engine(threads=1, strategy="gso_zerocopy") as e:
        for i in range(3):
            stream = open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=i, ts0=i)
            stream.play(unpaced=True)
            assert rx.collect(per_play * (i + 1), timeout=10)
            wait_state(stream, "ended")
            stream.close()  # waits for the last completions
        est = e.stats()
    assert est["zc_completions"] >= 3
    assert est["zc_copied"] <= est["zc_completions"]
    rx.settle()  # a late or repeated datagram shows in the count too
    check_stream(rx.packets, want, rx)


def test_raw_engine_option_calls():
    """The C entry points added for strategies, below the Python guards."""
    assert lib.kvod_engine_new_opts(ffi.NULL) == ffi.NULL
    assert ffi.errno == errno.EINVAL
    o = ffi.new("struct kvod_engine_opts *")
    o.threads, o.strategy = 1, lib.KVOD_STRATEGY_COUNT
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    assert b"unknown strategy" in ffi.string(lib.kvod_last_error())
    o.strategy, o.lookahead_ns = 0, -1
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    o.lookahead_ns, o.reserved = 0, 1
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    o.reserved, o.kernel_lookahead_ns = 0, -1
    assert lib.kvod_engine_new_opts(o) == ffi.NULL
    assert b"kernel lookahead" in ffi.string(lib.kvod_last_error())
    o.kernel_lookahead_ns, o.refuse = 0, lib.KVOD_FEAT_UDP_SEGMENT
    o.strategy = lib.KVOD_STRATEGY_GSO
    e = lib.kvod_engine_new_opts(o)
    assert e != ffi.NULL
    try:
        assert lib.kvod_engine_strategy(e) == lib.KVOD_STRATEGY_SENDMMSG
        assert not lib.kvod_engine_features(e) & lib.KVOD_FEAT_UDP_SEGMENT
        assert b"using sendmmsg" in ffi.string(lib.kvod_engine_fallback(e))
        st = ffi.new("struct kvod_engine_stats *")
        assert lib.kvod_engine_stats(e, st) == 0 and st.packets == 0
        assert lib.kvod_engine_stats(e, ffi.NULL) == -errno.EINVAL
    finally:
        lib.kvod_engine_free(e)
    assert lib.kvod_engine_features(ffi.NULL) == -errno.EINVAL
    assert lib.kvod_engine_stats(ffi.NULL, ffi.NULL) == -errno.EINVAL
    assert ffi.string(lib.kvod_engine_fallback(ffi.NULL)) == b""
    assert lib.kvod_probe_features() & lib.KVOD_FEAT_UDP_SEGMENT
    with pytest.raises(ValueError, match="unknown feature"):
        Engine(refuse=["telepathy"])


@pytest.mark.parametrize("strategy", ["rtp_sendfile", "sendfile_more"])
def test_a_failed_sendfile_leaves_no_half_datagram(strategy, tmp_path, receivers):
    """sendfile() finding nothing (the media shrank) fails after the header
    went into the socket's cork: that header must not go out alone
    (rtp_sendfile uncorks) or ahead of the next packet (sendfile_more's
    MSG_MORE). The stream fails there (its media is gone, issue 11), and
    plays on once the bytes are back."""
    media = tmp_path / "m.bin"
    data = os.urandom(8 * 1000)
    media.write_bytes(data)
    hints = write_hints(tmp_path / "m.hint", chunk_records(8 * 1000, 0, chunk=1000, gap_ns=0))
    rx = receivers()
    kw = dict(ssrc=4, seq0=0, ts0=0)
    want = expected(hints, str(media), **kw)
    with Engine(threads=1, strategy=strategy) as e:
        stream = open_stream(e, rx.sender(), str(media), hints, **kw)
        os.truncate(media, 4000)            # records 4..7 now lie past the end
        stream.play(unpaced=True)
        st_ = wait_state(stream, "failed")
        assert (st_.state, st_.packets_sent, st_.packets_dropped) == ("failed", 4, 0)
        assert st_.last_errno == errno.ENODATA
        media.write_bytes(data)             # the bytes are back
        stream.play(start_record=4, unpaced=True)
        wait_state(stream, "ended")
        got = rx.settle(0.2)
    # nothing half-sent: records 4..7 follow as 4..7 once the bytes are back
    assert got == want, difference(got, want)
