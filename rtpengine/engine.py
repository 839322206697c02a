"""The user-space RTP engine: Python control over the C pacing threads.

Three layers, as cryptography and PyNaCl build theirs:

1. ``rtpengine._kvod_engine`` -- the raw cffi module (``ffi``, ``lib``),
   built from ``csrc/engine.c``, ``pacer.c`` and ``filemap.c``;
2. the checked wrapper below (``_engine_new`` ... ``_stream_close``): one
   function per C entry point, turning a negative errno into
   :class:`EngineError` with the C side's own description;
3. :class:`Engine` and :class:`Stream`, which own the C objects and make
   their lifetime safe: a closed engine or stream raises
   :class:`EngineError`, it never reaches C with a dangling pointer.

Python never touches a packet: it opens streams, starts, pauses, seeks,
raises fill limits, reads counters. Every cffi call releases the GIL.

Send strategies (see ``csrc/send.c``) are chosen per engine by name; a
strategy whose kernel feature is refused falls back to the next one
(``uring_gso``/``gso_zerocopy`` -> ``gso`` -> ``sendmmsg``), at start or,
per stream, at run time. Either way the engine logs a warning naming the
refused feature, and :meth:`Engine.status` and :meth:`Stream.stats` say
so: what ``kvod status`` shows.

Pacing is per stream (``open_stream(pacing=)``): the engine's threads
send each packet at its time ("engine"), or, where the fq qdisc is on the
destination's interface, hand packets to the kernel ahead of time with
their departure times (SO_TXTIME) and let fq release them ("kernel").
"auto" asks :mod:`rtpengine.qdisc` which applies. A stream that asked for
kernel pacing and did not get it says why (:attr:`Stream.pacing_reason`).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Protocol, TypeVar, Union

from ._kvod_engine import ffi, lib
from .qdisc import FqAnswer, detect_fq

__all__ = ["Engine", "EngineError", "Stream", "StreamStats", "now_ns",
           "probe_features", "RECORD_CONTINUE", "STRATEGIES", "STATES",
           "FEATURES", "PACINGS"]

log = logging.getLogger(__name__)

STRATEGIES = {ffi.string(lib.kvod_strategy_name(i)).decode(): i
              for i in range(lib.KVOD_STRATEGY_COUNT)}
_STRATEGY_NAMES = {v: k for k, v in STRATEGIES.items()}
# kernel features the strategies need, by the names tests and logs use
FEATURES = {"udp_segment": lib.KVOD_FEAT_UDP_SEGMENT,
            "zerocopy": lib.KVOD_FEAT_ZEROCOPY,
            "io_uring": lib.KVOD_FEAT_IO_URING,
            "txtime": lib.KVOD_FEAT_TXTIME}
PACINGS = ("auto", "engine", "kernel")
# the strategies that can hand their batches to the kernel ahead of time
KERNEL_PACED_STRATEGIES = ("gso", "sendmmsg", "gso_zerocopy", "uring_gso")
STATES = {lib.KVOD_STATE_IDLE: "idle", lib.KVOD_STATE_PLAYING: "playing",
          lib.KVOD_STATE_PAUSED: "paused", lib.KVOD_STATE_WAITING: "waiting",
          lib.KVOD_STATE_ENDED: "ended",
          # its media or hint file shrank or changed under it (last_errno says
          # how); it sends no more until played again
          lib.KVOD_STATE_FAILED: "failed"}
RECORD_CONTINUE = lib.KVOD_RECORD_CONTINUE


class EngineError(OSError):
    """An engine call failed; ``errno`` says why, the message says where."""


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = Union[int, _HasFileno]


# --- layer 2: the checked wrapper -------------------------------------------

def _error(err: int, what: str) -> EngineError:
    detail = ffi.string(lib.kvod_last_error()).decode("utf-8", "replace")
    return EngineError(err, f"{what}: {detail or os.strerror(err)}")


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise _error(-rc, what)
    return rc


def now_ns() -> int:
    """CLOCK_MONOTONIC now, in ns: the clock ``Stream.play(at_ns=)`` uses."""
    return lib.kvod_now_ns()


def start_writeback(fd: int, offset: int, size: int) -> bool:
    """Start writing ``[offset, offset + size)`` of file ``fd`` to disk and
    return at once (``sync_file_range(2)``, SYNC_FILE_RANGE_WRITE); False
    if it could not be started. Nothing becomes durable by it: a later
    ``fsync`` still makes it so, and finds the bytes mostly written."""
    if size <= 0:
        return False
    return lib.kvod_file_writeback(fd, offset, size) == 0


def probe_features() -> dict[str, bool]:
    """Which of :data:`FEATURES` this kernel offers (asked, not guessed)."""
    have = lib.kvod_probe_features()
    return {name: bool(have & bit) for name, bit in FEATURES.items()}


def _feature_names(mask: int) -> list[str]:
    return [name for name, bit in FEATURES.items() if mask & bit]


#: the C engine's lookahead when none is asked for (KVOD_LOOKAHEAD_NS)
DEFAULT_LOOKAHEAD_NS = 500_000


def batching(lookahead_ns: int = 0, burst_ns: int = 0) -> tuple[int, int]:
    """The (lookahead, burst) in ns an engine asked for these runs with:
    the C engine's default lookahead, and a burst of at least it."""
    lookahead = lookahead_ns or DEFAULT_LOOKAHEAD_NS
    return lookahead, max(burst_ns, lookahead)


def _engine_new(threads: int, strategy: int, refuse: int = 0,
                lookahead_ns: int = 0, burst_ns: int = 0, kernel_lookahead_ns: int = 0):
    opts = ffi.new("struct kvod_engine_opts *")
    opts.threads, opts.strategy = threads, strategy
    opts.refuse, opts.lookahead_ns, opts.burst_ns = refuse, lookahead_ns, burst_ns
    opts.kernel_lookahead_ns = kernel_lookahead_ns
    ptr = lib.kvod_engine_new_opts(opts)
    if ptr == ffi.NULL:
        raise _error(ffi.errno or errno.ENOMEM, "engine")
    return ptr


def _engine_free(ptr) -> None:
    lib.kvod_engine_free(ptr)


def _engine_strategy(ptr) -> int:
    return _check(lib.kvod_engine_strategy(ptr), "engine strategy")


def _engine_threads(ptr) -> int:
    return _check(lib.kvod_engine_threads(ptr), "engine threads")


def _engine_features(ptr) -> int:
    return _check(lib.kvod_engine_features(ptr), "engine features")


def _engine_fallback(ptr) -> str:
    return ffi.string(lib.kvod_engine_fallback(ptr)).decode("utf-8", "replace")


def _engine_stats(ptr) -> dict[str, int]:
    out = ffi.new("struct kvod_engine_stats *")
    _check(lib.kvod_engine_stats(ptr, out), "engine stats")
    return {name: getattr(out, name) for name in
            ("rounds", "syscalls", "packets", "messages", "zc_completions", "zc_copied")}


def _stream_open(ptr, sock_fd: int, media_fd: int, hint_fd: int, *,
                 ssrc: int, seq0: int, ts0: int, payload_type: int,
                 dest: Optional[tuple] = None, flags: int = 0,
                 channel: int = 0, max_lag_ms: int = 0, stall_ms: int = 0) -> int:
    p = ffi.new("struct kvod_stream_params *")
    p.sock_fd, p.media_fd, p.hint_fd = sock_fd, media_fd, hint_fd
    p.ssrc, p.seq0, p.ts0 = ssrc, seq0, ts0
    p.payload_type = payload_type
    if dest is not None:
        family, port, addr, scope = dest
        p.dest_family, p.dest_port, p.dest_scope = family, port, scope
        ffi.memmove(p.dest_addr, addr, len(addr))
    p.flags = flags
    p.channel, p.tcp_max_lag_ms, p.tcp_stall_ms = channel, max_lag_ms, stall_ms
    return _check(lib.kvod_stream_open(ptr, p), "open stream")


def _stream_play(ptr, sid: int, start_record: int, start_ns: int, flags: int) -> StartPoint:
    out = ffi.new("struct kvod_play_start *")
    _check(lib.kvod_stream_play(ptr, sid, start_record, start_ns, flags, out),
           f"play stream {sid}")
    return StartPoint(record=out.record, seq=out.seq, rtp_ts=out.rtp_ts, send_ns=out.send_ns)


def _stream_pause(ptr, sid: int) -> None:
    _check(lib.kvod_stream_pause(ptr, sid), f"pause stream {sid}")


def _stream_set_fill_limit(ptr, sid: int, limit: int) -> None:
    _check(lib.kvod_stream_set_fill_limit(ptr, sid, limit),
           f"fill limit of stream {sid}")


def _stream_set_hints(ptr, sid: int, hint_fd: int, record_count: int, flags: int) -> None:
    _check(lib.kvod_stream_set_hints(ptr, sid, hint_fd, record_count, flags),
           f"hints of stream {sid}")


def _stream_stats(ptr, sid: int):
    out = ffi.new("struct kvod_stream_stats *")
    _check(lib.kvod_stream_stats(ptr, sid, out), f"stats of stream {sid}")
    return out


def _sock_write(ptr, sid: int, data: bytes) -> None:
    _check(lib.kvod_sock_write(ptr, sid, data, len(data)),
           f"write on the connection of stream {sid}")


def _stream_close(ptr, sid: int) -> None:
    _check(lib.kvod_stream_close(ptr, sid), f"close stream {sid}")


# --- layer 3: the classes ----------------------------------------------------

def _fd(obj: FileLike, what: str) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if not isinstance(fd, int):
        raise TypeError(f"{what}: want a file descriptor, got {obj!r}")
    return fd


def _in_range(value: int, bits: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{what} {value!r} is not a {bits}-bit unsigned integer")
    return value


def _check_pacing(pacing: str) -> str:
    if pacing not in PACINGS:
        raise ValueError(f"unknown pacing {pacing!r}; known: {', '.join(PACINGS)}")
    return pacing


def _peer_host(fd: int) -> Optional[str]:
    """The numeric address a connected socket sends to, or None (a bad
    descriptor is left to the C side to refuse, with its own message)."""
    try:
        copy = os.dup(fd)
    except OSError:
        return None
    try:
        s = socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None
    try:
        peer = s.getpeername()
    except OSError:
        return None
    finally:
        s.close()
    return peer[0] if isinstance(peer, tuple) else None


def _dest(dest: tuple) -> tuple[int, int, bytes, int]:
    """(host, port[, flowinfo, scope]) of a numeric address, for C."""
    host, port = dest[0], _in_range(dest[1], 16, "destination port")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            addr = socket.inet_pton(family, host)
        except (OSError, TypeError):
            continue
        scope = dest[3] if family == socket.AF_INET6 and len(dest) > 3 else 0
        return family, port, addr, scope
    raise ValueError(f"destination {host!r} is not a numeric IP address")


@dataclass(frozen=True)
class StartPoint:
    """Where ``play()`` started a stream: the record it sends first (at the
    end of the title, the last record's time), that packet's sequence
    number and RTP timestamp (what RTP-Info announces), and its send time
    from the track start (the npt it starts at)."""

    record: int
    seq: int
    rtp_ts: int
    send_ns: int


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of one stream's state and counters.

    ``packets_sent`` and ``payload_octets`` are the RTCP sender report's
    counts (payload excludes the 12-byte RTP header). ``last_due_ns`` is
    the CLOCK_MONOTONIC instant the last packet sent was scheduled for;
    with ``last_rtp_ts`` it anchors an SR's NTP/RTP timestamp pair.
    """

    state: str
    record_count: int
    next_record: int
    fill_limit: int
    packets_sent: int
    payload_octets: int
    packets_dropped: int
    send_errors: int
    last_errno: int
    late_1ms: int
    late_5ms: int
    max_late_ns: int
    last_due_ns: int
    syscalls: int
    last_seq: int
    last_rtp_ts: int
    gso_fallback: bool
    strategy: str
    refused: tuple[str, ...] = ()
    shared: bool = False
    #: "kernel": fq releases the packets at their time; "engine": the
    #: engine's threads send them at their time
    pacing: str = "engine"
    #: interleaved on a TCP connection (the rest are its counters): times
    #: it fell more than its max lag behind and skipped to a keyframe, the
    #: packets skipped, whether its connection stalled (and was shut),
    #: rounds the connection took less than was due, the bytes queued for
    #: the connection now and at most
    interleaved: bool = False
    skips: int = 0
    packets_skipped: int = 0
    stalled: bool = False
    blocked: int = 0
    out_queued: int = 0
    out_queued_max: int = 0


_Self = TypeVar("_Self", bound="Closing")


class Closing:
    """What an engine or a stream is besides its close(): a context manager
    that closes it, and a finaliser that closes it if its owner forgot
    (errors then are swallowed: the interpreter may be going down)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Engine(Closing):
    """The C engine: its pacing threads and the streams they send.

    ``threads=0`` runs one pacing thread per online CPU. ``strategy`` is
    one of :data:`STRATEGIES`: ``"auto"`` takes the cheapest this kernel
    supports (``gso`` where it takes UDP_SEGMENT). A strategy whose kernel
    feature is refused falls back (logged; see :attr:`fallback`).
    ``refuse`` names :data:`FEATURES` to treat as refused, to exercise
    the fallbacks. ``lookahead_ns`` (default 0.5 ms) is how far ahead of
    its due time a packet may leave so that it shares a batch. A stream
    that is served also sends what it has due within ``burst_ns`` (at
    least the lookahead), in one GSO message: a 4 Mb/s stream sends every
    few milliseconds instead of every packet, and its packets leave at
    most ``burst_ns`` early, never later.
    ``pacing`` is the streams' default (see :meth:`open_stream`);
    ``kernel_lookahead_ns`` (default 20 ms) is how far ahead kernel-paced
    streams are handed to the kernel (again when half of it is left).
    Close the engine (or use it as a context manager) to stop the
    threads; that also closes its streams.
    """

    def __init__(self, threads: int = 0, strategy: str = "auto", *,
                 refuse: Iterable[str] = (), lookahead_ns: int = 0,
                 burst_ns: int = 0, pacing: str = "auto", kernel_lookahead_ns: int = 0,
                 fq_detector: Optional[Callable[[str], FqAnswer]] = None) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; "
                             f"known: {', '.join(STRATEGIES)}")
        _check_pacing(pacing)
        mask = 0
        for name in refuse:
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
            mask |= FEATURES[name]
        self._cv = threading.Condition()
        self._busy = 0
        self._ptr = None
        ptr = _engine_new(threads, STRATEGIES[strategy], mask,
                          _in_range(lookahead_ns, 63, "lookahead"),
                          _in_range(burst_ns, 63, "burst"),
                          _in_range(kernel_lookahead_ns, 63, "kernel lookahead"))
        #: how early a packet may leave to share a batch, and to join its
        #: stream's burst (the C engine's defaults and rule)
        self.lookahead_ns, self.burst_ns = batching(lookahead_ns, burst_ns)
        try:
            self.requested_strategy: str = strategy
            self.strategy: str = _STRATEGY_NAMES[_engine_strategy(ptr)]
            self.threads: int = _engine_threads(ptr)
            have = _engine_features(ptr)
            self.features: dict[str, bool] = {
                name: bool(have & bit) for name, bit in FEATURES.items()}
            #: why the engine does not run the strategy asked for, or None
            self.fallback: Optional[str] = _engine_fallback(ptr) or None
        except BaseException:
            _engine_free(ptr)
            raise
        self._ptr = ptr
        self._runtime_refused: set[str] = set()
        self.pacing: str = pacing
        self.kernel_lookahead_ns: int = kernel_lookahead_ns or 20_000_000
        self._detect = fq_detector or detect_fq
        #: open streams by id -> "kernel" or "engine", and why not kernel
        self._pacing_of: dict[int, str] = {}
        self._pacing_notes: set[str] = set()
        if self.fallback:
            log.warning("engine: %s", self.fallback)

    @contextmanager
    def _use(self) -> Iterator[object]:
        # counts calls in flight, so close() cannot free the engine under one
        with self._cv:
            if self._ptr is None:
                raise EngineError(errno.EBADF, "engine is closed")
            self._busy += 1
            ptr = self._ptr
        try:
            yield ptr
        finally:
            with self._cv:
                self._busy -= 1
                if not self._busy:
                    self._cv.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._ptr is None

    def close(self) -> None:
        """Stop the threads and free every stream; closing twice is a no-op."""
        with self._cv:
            ptr, self._ptr = self._ptr, None
            while self._busy:
                self._cv.wait()
        if ptr is not None:
            _engine_free(ptr)

    def stats(self) -> dict[str, int]:
        """Engine-wide counters: pacing rounds that sent, system calls on
        the data path (sends, reads, cork toggles, completion reads),
        packets sent, messages sent (a GSO message of many packets counts
        one), zero-copy completions and how many of them the kernel copied
        after all."""
        with self._use() as ptr:
            return _engine_stats(ptr)

    def check(self) -> None:
        """Verify the pacing threads' schedules (every playing stream is
        on one, in order); raises EngineError (EUCLEAN) saying what is
        wrong. For tests and diagnostics: it takes each thread's lock."""
        with self._use() as ptr:
            _check(lib.kvod_engine_check(ptr), "engine check")

    def unsettled(self) -> set[int]:
        """The ids of the streams that are waiting, ended or failed: those
        a once-a-second look must tick; the rest play, pause or sit idle
        as they were told. One call for every stream of the engine."""
        room = 64
        with self._use() as ptr:
            while True:
                ids = ffi.new("int32_t[]", room)
                n = _check(lib.kvod_engine_unsettled(ptr, ids, room), "unsettled streams")
                if n <= room:
                    return set(ids[0:n])
                room = n + 64  # more came meanwhile: room for them and some

    def status(self) -> dict:
        """What ``kvod status`` shows of the engine: the strategy asked
        for and the one running, why they differ, the kernel features
        found, the threads, the counters, and which features streams had
        refused at run time (each also logged once when seen)."""
        with self._cv:
            paced = list(self._pacing_of.values())
        info = {"strategy": self.strategy,
                "requested_strategy": self.requested_strategy,
                "fallback": self.fallback, "features": dict(self.features),
                "threads": self.threads,
                "lookahead_ms": self.lookahead_ns / 1e6, "burst_ms": self.burst_ns / 1e6,
                "runtime_refused": sorted(self._runtime_refused),
                "pacing": self.pacing,
                "kernel_lookahead_ms": self.kernel_lookahead_ns / 1e6,
                "paced_streams": {"kernel": paced.count("kernel"),
                                  "engine": paced.count("engine")},
                "pacing_notes": sorted(self._pacing_notes)}
        if not self.closed:
            info.update(self.stats())
        return info

    def _note_refused(self, sid: int, names: tuple[str, ...], now_using: str) -> None:
        new = set(names) - self._runtime_refused
        if new:
            self._runtime_refused |= new
            log.warning("engine: stream %d: the kernel refused %s at run time; "
                        "it now uses %s", sid, ", ".join(sorted(new)), now_using)

    def _choose_pacing(self, pacing: str, sock_fd: int, dest: Optional[tuple],
                       peer: Optional[str] = None) -> tuple[bool, str]:
        """Whether to ask C for kernel pacing, and why (not)."""
        if pacing == "engine":
            return False, "engine pacing asked for"
        if self.strategy not in KERNEL_PACED_STRATEGIES:
            return False, f"strategy {self.strategy} paces in the engine"
        if dest is not None:
            return False, ("shared socket: fq holds all its clients in one flow "
                           "(flow_limit); paced by the engine")
        if pacing == "kernel":
            return True, "kernel pacing asked for"
        if peer is None:
            peer = _peer_host(sock_fd)
        if peer is None:
            return False, "socket has no peer address; paced by the engine"
        answer = self._detect(peer)
        # the interface's reason, not the peer's: status keeps a few notes
        if answer.fq:
            return True, f"auto: fq on the way ({answer.reason})"
        return False, f"auto: no fq on the way, paced by the engine ({answer.reason})"

    def open_stream(self, sock: FileLike, media: FileLike, hints: FileLike, *,
                    ssrc: int, seq0: int, ts0: int,
                    payload_type: Optional[int] = None,
                    dest: Optional[tuple] = None,
                    growing: bool = False,
                    pacing: Optional[str] = None,
                    interleaved: Optional[int] = None,
                    max_lag_ms: int = 0, stall_ms: int = 0,
                    peer: Optional[str] = None) -> "Stream":
        """Open a stream of the track ``hints`` (hint file) over ``media``.

        ``sock`` is a UDP socket connected to the client; the engine keeps
        its own duplicate, so the caller may close its copy. Or, with
        ``dest=(host, port)`` (numeric), an unconnected socket that many
        streams share, one server port for all clients: the streams of a
        shared socket go out together, many clients per system call.
        ``media`` and ``hints`` are mapped read-only and may be closed
        after the call. ``payload_type`` defaults to the hint header's.
        ``growing`` says a fill is still adding records: at the last one the
        stream waits for :meth:`Stream.set_hints` instead of ending. The
        stream starts idle: call :meth:`Stream.play`.

        ``pacing`` (None: the engine's default): "engine", "kernel" (fq
        releases the packets; asked for even where no fq is seen), or
        "auto" (kernel where :mod:`rtpengine.qdisc` finds fq on the way to
        the socket's peer). Kernel pacing needs a batched strategy, a
        connected socket and SO_TXTIME; without them the engine paces the
        stream and :attr:`Stream.pacing_reason` says why (also logged when
        kernel pacing was asked for by name).

        ``interleaved=channel``: ``sock`` is the client's RTSP connection
        (TCP) and the packets go on it as ``$`` frames on ``channel`` (RTCP
        is channel + 1), paced by the engine; use :meth:`Stream.write` for
        anything else written on that connection from then on. A stream
        more than ``max_lag_ms`` (0: 2 s) behind skips to the next keyframe
        due; a connection that takes nothing for ``stall_ms`` (0: 20 s) is
        shut down and its streams fail.

        ``peer``: the numeric address ``sock`` is connected to, where the
        caller knows it (else asked of the socket: six system calls), for
        the "auto" pacing's look at the route.
        """
        pacing = _check_pacing(self.pacing if pacing is None else pacing)
        if interleaved is not None:
            pacing = "engine"  # a byte stream carries no departure times
        args = dict(ssrc=_in_range(ssrc, 32, "ssrc"),
                    seq0=_in_range(seq0, 16, "seq0"),
                    ts0=_in_range(ts0, 32, "ts0"),
                    payload_type=(lib.KVOD_PT_FROM_HINT if payload_type is None
                                  else _in_range(payload_type, 7, "payload type")),
                    dest=None if dest is None else _dest(dest),
                    flags=lib.KVOD_HINTS_GROWING if growing else 0)
        if interleaved is not None:
            args.update(flags=args["flags"] | lib.KVOD_INTERLEAVED,
                        channel=_in_range(interleaved, 8, "channel"),
                        max_lag_ms=_in_range(max_lag_ms, 32, "max lag"),
                        stall_ms=_in_range(stall_ms, 32, "stall time"))
        fds = (_fd(sock, "socket"), _fd(media, "media"), _fd(hints, "hints"))
        kernel, why = self._choose_pacing(pacing, fds[0], dest, peer)
        if kernel:
            args["flags"] |= lib.KVOD_PACE_KERNEL
        with self._use() as ptr:
            sid = _stream_open(ptr, *fds, **args)
            # asked only when asked for: a stats call waits for the pacer's lock
            granted = kernel and bool(_stream_stats(ptr, sid).kernel_paced)
        if kernel and not granted:
            why = "the socket refused SO_TXTIME; paced by the engine"
        if pacing == "kernel" and not granted:
            log.warning("engine: stream %d: kernel pacing asked for, not used: %s", sid, why)
        with self._cv:
            self._pacing_of[sid] = "kernel" if granted else "engine"
            if pacing != "engine" and not granted and len(self._pacing_notes) < 16:
                self._pacing_notes.add(why)
        return Stream(self, sid, pacing_reason=why)

    def _forget(self, sid: int) -> None:
        with self._cv:
            self._pacing_of.pop(sid, None)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.threads} threads"
        return f"<Engine {self.strategy} {state}>"


class Stream(Closing):
    """One RTP stream of an :class:`Engine`. Made by :meth:`Engine.open_stream`."""

    def __init__(self, engine: Engine, sid: int, pacing_reason: str = "") -> None:
        self._engine = engine
        self._id: Optional[int] = sid
        #: why the stream is kernel- or engine-paced (see :attr:`StreamStats.pacing`)
        self.pacing_reason = pacing_reason

    @property
    def id(self) -> Optional[int]:
        """The C engine's stream id (None once closed)."""
        return self._id

    @contextmanager
    def _use(self) -> Iterator[tuple[object, int]]:
        sid = self._id
        if sid is None:
            raise EngineError(errno.EBADF, "stream is closed")
        with self._engine._use() as ptr:
            try:
                yield ptr, sid
            except EngineError as exc:
                # another thread closed the stream while this call ran
                if exc.errno == errno.ENOENT and self._id is None:
                    raise EngineError(errno.EBADF, "stream is closed") from exc
                raise

    def play(self, start_record: Optional[int] = None, at_ns: Optional[int] = None,
             unpaced: bool = False, after_write: bool = False) -> StartPoint:
        """Send from ``start_record`` (None: where the stream stopped), and
        say where it starts.

        Record k leaves at ``at_ns + send_ns[k] - send_ns[start_record]``
        on the :func:`now_ns` clock (``at_ns`` None: now). Sequence numbers
        continue across pause, play and seek. ``unpaced`` sends as fast as
        the socket takes them (benchmarks, tests). ``after_write``, for an
        interleaved stream: no frame goes on the connection before the next
        :meth:`write` (the PLAY reply, which clients read first) or 1 s.
        """
        rec = RECORD_CONTINUE if start_record is None else _in_range(
            start_record, 63, "start record")
        at = 0 if at_ns is None else _in_range(at_ns, 63, "start time")
        flags = (lib.KVOD_PLAY_UNPACED if unpaced else 0) | \
            (lib.KVOD_PLAY_AFTER_WRITE if after_write else 0)
        with self._use() as (ptr, sid):
            return _stream_play(ptr, sid, rec, at, flags)

    def pause(self) -> None:
        """Stop sending; a later ``play()`` continues at the next record."""
        with self._use() as (ptr, sid):
            _stream_pause(ptr, sid)

    def set_fill_limit(self, limit: int) -> None:
        """Never send media bytes at or beyond ``limit``; a stream waiting
        for the fill resumes, its schedule shifted by the wait."""
        limit = _in_range(limit, 64, "fill limit")
        with self._use() as (ptr, sid):
            _stream_set_fill_limit(ptr, sid, limit)

    def set_hints(self, hints: FileLike, record_count: Optional[int] = None, *,
                  growing: bool = False, remap: bool = False, restart: bool = False) -> None:
        """Send from other hint records: ``record_count`` of those in
        ``hints`` (None: the header's count).

        Without ``remap`` they must start with the records the stream had
        (its hint file grew) and the stream keeps its place; with it, the
        stream moves to the first record at or after the media offset it
        was about to send (refused if the new records end before it); with
        ``restart``, it goes back to the first record, for a :meth:`play` that
        positions it (a seek). ``growing`` says more records will come. A
        stream waiting at its last record resumes (the next record leaves
        at once), or ends if no more will come. ``hints`` may be closed
        after the call.
        """
        count = (lib.KVOD_RECORDS_FROM_HINT if record_count is None
                 else _in_range(record_count, 63, "record count"))
        flags = ((lib.KVOD_HINTS_GROWING if growing else 0)
                 | (lib.KVOD_HINTS_REMAP if remap else 0)
                 | (lib.KVOD_HINTS_RESTART if restart else 0))
        fd = _fd(hints, "hints")
        with self._use() as (ptr, sid):
            _stream_set_hints(ptr, sid, fd, count, flags)

    def write(self, data: bytes) -> None:
        """Write ``data`` on an interleaved stream's connection after the
        frames and bytes already queued there, never inside a frame
        (RTSP replies, RTCP frames). Raises EngineError: ENOBUFS when the
        connection's bounded queue cannot take it, EPIPE once the
        connection failed, EPROTOTYPE on a UDP stream."""
        with self._use() as (ptr, sid):
            _sock_write(ptr, sid, bytes(data))

    def stats(self) -> StreamStats:
        """A snapshot of the stream's state and counters."""
        with self._use() as (ptr, sid):
            s = _stream_stats(ptr, sid)
        refused = tuple(_feature_names(s.refused))
        strategy = _STRATEGY_NAMES.get(s.strategy, str(s.strategy))
        if refused:
            self._engine._note_refused(sid, refused, strategy)
        return StreamStats(
            state=STATES[s.state], record_count=s.record_count,
            next_record=s.next_record, fill_limit=s.fill_limit,
            packets_sent=s.packets_sent, payload_octets=s.payload_octets,
            packets_dropped=s.packets_dropped, send_errors=s.send_errors,
            last_errno=s.last_errno, late_1ms=s.late_1ms, late_5ms=s.late_5ms,
            max_late_ns=s.max_late_ns, last_due_ns=s.last_due_ns,
            syscalls=s.syscalls, last_seq=s.last_seq, last_rtp_ts=s.last_rtp_ts,
            gso_fallback=bool(s.gso_fallback), strategy=strategy,
            refused=refused, shared=bool(s.shared),
            pacing="kernel" if s.kernel_paced else "engine",
            interleaved=bool(s.interleaved), skips=s.skips,
            packets_skipped=s.packets_skipped, stalled=bool(s.stalled),
            blocked=s.blocked, out_queued=s.out_queued,
            out_queued_max=s.out_queued_max)

    @property
    def closed(self) -> bool:
        """True once the stream or its engine is closed."""
        return self._id is None or self._engine.closed

    def close(self) -> None:
        """Stop and free the stream (safe while it plays); a no-op if the
        stream or its engine is already closed."""
        sid, self._id = self._id, None
        if sid is None:
            return
        self._engine._forget(sid)
        try:
            with self._engine._use() as ptr:
                _stream_close(ptr, sid)
        except EngineError as exc:
            # the engine went first and took its streams with it, or a
            # racing close() in another thread won
            if exc.errno not in (errno.EBADF, errno.ENOENT):
                raise

    def __repr__(self) -> str:
        return f"<Stream {self._id if self._id is not None else 'closed'}>"
