"""The krtp backend: the in-kernel RTP engine behind /dev/krtp.

Same Python interface as :mod:`rtpengine.engine` (``Engine.open_stream``,
``Stream.play/pause/set_fill_limit/stats/close``), so the daemon can use
either. The kernel module builds the RTP headers and paces the packets in
its own threads; Python only issues ioctls, with the structures of
``kernel/uapi/krtp.h`` packed by :mod:`struct` (``tests/test_krtp_abi.py``
checks them against the header compiled by the C compiler).

Two strategies, the two calls of the research:

- ``krtpsendfile``: payload pages come from the page cache of the media
  file and are attached to the socket buffers without a copy;
- ``krtpmsend``: payload comes from a mapping of the media file in this
  process (the application may touch it); its pages are attached where the
  kernel allows, else copied once. ``stats()`` tells which.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Optional

from cffi import FFI

from .engine import Closing, EngineError, StartPoint, StreamStats, _fd, _in_range
from .hintfile import HEADER_SIZE, RECORD_SIZE, HintRecord

__all__ = ["DEVICE", "KrtpEngine", "KrtpError", "KrtpStream", "KrtpStreamStats",
           "ModuleInfo", "STRATEGIES", "available", "now_ns"]

DEVICE = "/dev/krtp"
ABI_VERSION = 1

STATES = {0: "idle", 1: "playing", 2: "paused", 3: "waiting", 4: "ended"}
STRATEGIES = ("krtpsendfile", "krtpmsend")
MODES = {1: "krtpsendfile", 2: "krtpmsend"}
FEAT_SENDFILE = 0x0001
FEAT_MSEND = 0x0002
OPEN_MSEND = 0x0001
PT_FROM_HINT = -1
PLAY_UNPACED = 0x0001
RECORD_CONTINUE = 0xFFFF_FFFF_FFFF_FFFF
STATS_NO_GSO = 0x0001

# The uapi structures, little-endian with their padding spelled out; each
# layout is checked against the C compiler's in tests/test_krtp_abi.py.
HELLO = struct.Struct("<IIHHHHHHHHII")
OPEN = struct.Struct("<iiiiIIHHIQQQ")
PLAY = struct.Struct("<IIQq")
CMD = struct.Struct("<IIQ")
STATS = struct.Struct("<IiiIHHI9Q2q3Q")
INFO = struct.Struct("<8QII")

_ffi = FFI()

_IOC_WRITE, _IOC_READ = 1, 2
IOC_MAGIC = 0xB9


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (IOC_MAGIC << 8) | nr


IOC_HELLO = _ioc(_IOC_READ | _IOC_WRITE, 0, HELLO.size)
IOC_OPEN = _ioc(_IOC_READ | _IOC_WRITE, 1, OPEN.size)
IOC_PLAY = _ioc(_IOC_WRITE, 2, PLAY.size)
IOC_PAUSE = _ioc(_IOC_WRITE, 3, CMD.size)
IOC_SEEK = _ioc(_IOC_WRITE, 4, CMD.size)
IOC_FILL = _ioc(_IOC_WRITE, 5, CMD.size)
IOC_STATS = _ioc(_IOC_READ | _IOC_WRITE, 6, STATS.size)
IOC_CLOSE = _ioc(_IOC_WRITE, 7, CMD.size)
IOC_INFO = _ioc(_IOC_READ, 8, INFO.size)


class KrtpError(EngineError):
    """A /dev/krtp call failed; ``errno`` says why, the message says where.

    An :class:`~rtpengine.engine.EngineError`, so callers of either engine
    catch one exception."""


def now_ns() -> int:
    """CLOCK_MONOTONIC now, in ns: the clock ``play(at_ns=)`` uses."""
    return time.monotonic_ns()


def _ioctl(fd: int, request: int, buf: bytearray, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError as exc:
        raise KrtpError(exc.errno, f"{what}: {os.strerror(exc.errno)}") from None


def _hello_request() -> bytearray:
    return bytearray(HELLO.pack(ABI_VERSION, 0, HELLO.size, OPEN.size, PLAY.size, CMD.size,
                                STATS.size, INFO.size, HEADER_SIZE, RECORD_SIZE, 0, 0))


@dataclass(frozen=True)
class Hello:
    """What the module said in the ABI handshake."""

    abi_version: int
    features: int
    sizes: tuple[int, ...]
    workers: int
    max_streams: int


def _handshake(fd: int) -> Hello:
    buf = _hello_request()
    try:
        fcntl.ioctl(fd, IOC_HELLO, buf, True)
        err = 0
    except OSError as exc:
        err = exc.errno
    (abi, features, *sizes, workers, max_streams) = HELLO.unpack(buf)
    hello = Hello(abi, features, tuple(sizes), workers, max_streams)
    if err == errno.EPROTO:
        ours = HELLO.unpack(_hello_request())[2:10]
        raise KrtpError(errno.EPROTO,
                        f"{DEVICE}: ABI mismatch: module speaks version {abi} with "
                        f"structure sizes {hello.sizes}, we speak {ABI_VERSION} with {ours}")
    if err:
        raise KrtpError(err, f"{DEVICE} handshake: {os.strerror(err)}")
    return hello


def available(path: str = DEVICE) -> tuple[bool, str]:
    """Can this process use the kernel engine? (yes or no, and why)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{path}: {os.strerror(exc.errno)}"
    try:
        hello = _handshake(fd)
    except KrtpError as exc:
        return False, str(exc)
    finally:
        os.close(fd)
    return True, (f"krtp ABI {hello.abi_version}, {hello.workers} pacing threads")


@dataclass(frozen=True)
class KrtpStreamStats(StreamStats):
    """A snapshot of one stream: the user-space engine's fields and more.

    ``syscalls`` counts the kernel's socket send calls for the stream (one
    per UDP GSO batch of packets on 6.5+ kernels); ``gso_fallback`` says
    the path refused GSO batches and the module sends one packet a call.
    ``spliced_octets`` are payload bytes attached to socket buffers by page
    reference, ``copied_octets`` those that had to be copied.
    """

    spliced_octets: int = 0
    copied_octets: int = 0
    pacing: str = "krtp"    # the module's own timer paces


@dataclass(frozen=True)
class ModuleInfo:
    """The module's own counters, over every open /dev/krtp."""

    streams: int
    streams_opened: int
    files: int
    pages_held: int
    packets_sent: int
    packets_dropped: int
    spliced_octets: int
    copied_octets: int
    workers: int
    max_streams: int


class KrtpEngine(Closing):
    """One open /dev/krtp: the kernel's pacing threads and our streams.

    ``strategy`` is ``"krtpsendfile"`` (or ``"auto"``, the same) or
    ``"krtpmsend"``. ``threads`` is accepted for interface parity and
    ignored: the module runs one pacing thread per CPU for everyone.
    Closing it (or this process exiting) closes its streams.
    """

    def __init__(self, threads: int = 0, strategy: str = "auto",
                 path: str = DEVICE, *, userspace_strategy: Optional[str] = None,
                 refuse: tuple[str, ...] = (), lookahead_ns: int = 0,
                 burst_ns: int = 0) -> None:
        if strategy == "auto":
            strategy = "krtpsendfile"
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known: auto, "
                             f"{', '.join(STRATEGIES)}")
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KrtpError(exc.errno, f"{path}: {os.strerror(exc.errno)}") from None
        try:
            self.hello = _handshake(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.strategy = strategy
        self.requested_strategy = strategy
        self.threads = self.hello.workers
        # parity with the user-space engine: the kernel engine never falls back
        self.fallback: Optional[str] = None
        self.features = {"krtp": True,
                         "krtpsendfile": bool(self.hello.features & FEAT_SENDFILE),
                         "krtpmsend": bool(self.hello.features & FEAT_MSEND)}
        self._streams: dict[int, "KrtpStream"] = {}
        # what the module does not stream goes through a user-space engine,
        # made when first needed (see open_stream)
        self._userspace_args = dict(threads=threads, strategy=userspace_strategy or "auto",
                                    refuse=refuse, lookahead_ns=lookahead_ns,
                                    burst_ns=burst_ns)
        self._userspace = None
        self._hint_files: dict[tuple[int, int], _HintFile] = {}

    def _hint_file(self, fd: int) -> "_HintFile":
        """The engine's shared handle on the hint file open at ``fd``: one
        descriptor per file however many streams play it."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            shared = self._hint_files.get(key)
            if shared is None:
                shared = self._hint_files[key] = _HintFile(os.dup(fd), key)
            shared.users += 1
            return shared

    def _release_hint_file(self, shared: "_HintFile") -> None:
        with self._lock:
            shared.users -= 1
            if shared.users == 0:
                self._hint_files.pop(shared.key, None)
                os.close(shared.fd)

    def _userspace_engine(self):
        from .engine import Engine

        with self._lock:
            if self._fd is None:
                raise KrtpError(errno.EBADF, "engine is closed")
            if self._userspace is None:
                self._userspace = Engine(**self._userspace_args)
            return self._userspace

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _require(self) -> int:
        fd = self._fd
        if fd is None:
            raise KrtpError(errno.EBADF, "engine is closed")
        return fd

    def close(self) -> None:
        """Close /dev/krtp: the module stops and frees every stream."""
        with self._lock:
            fd, self._fd = self._fd, None
            streams, self._streams = list(self._streams.values()), {}
            userspace, self._userspace = self._userspace, None
        if fd is not None:
            os.close(fd)
        for s in streams:
            s._forget()
        if userspace is not None:
            userspace.close()

    def info(self) -> ModuleInfo:
        """The module's own counters (streams, page references held, ...)."""
        buf = bytearray(INFO.size)
        _ioctl(self._require(), IOC_INFO, buf, "module counters")
        return ModuleInfo(*INFO.unpack(buf))

    def stats(self) -> dict[str, int]:
        """Module-wide counters, named as the user-space engine's where they
        mean the same (``packets``)."""
        info = self.info()
        return {"packets": info.packets_sent, "packets_dropped": info.packets_dropped,
                "streams": info.streams, "pages_held": info.pages_held,
                "spliced_octets": info.spliced_octets, "copied_octets": info.copied_octets}

    def status(self) -> dict:
        """What ``kvod status`` shows of the engine (the user-space engine's
        keys, with backend "krtp" and the module's counters)."""
        out = {"backend": "krtp", "strategy": self.strategy,
               "requested_strategy": self.requested_strategy, "fallback": None,
               "features": dict(self.features), "threads": self.threads,
               "runtime_refused": [], "pacing": "krtp"}
        if not self.closed:
            out.update(self.stats())
        userspace = self._userspace
        if userspace is not None:
            out["userspace"] = userspace.status()
        return out

    def open_stream(self, sock, media, hints, *, ssrc: int, seq0: int, ts0: int,
                    payload_type: Optional[int] = None,
                    dest: Optional[tuple] = None, growing: bool = False,
                    pacing: Optional[str] = None,
                    peer: Optional[str] = None) -> "KrtpStream":
        """Open a stream of the track ``hints`` over ``media``.

        ``sock`` is a UDP socket connected to the client; the module keeps
        its own reference, so the caller may close its copy, and so it may
        ``media`` and ``hints``. The stream starts idle: call ``play``.
        The module streams complete titles on connected sockets. A stream
        it cannot take, over an unconnected socket shared by many clients
        (``dest``) or from hints a fill is still growing (``growing``), is
        opened in a user-space engine this engine keeps for them (made on
        first use, closed with it): that stream is the user-space engine's
        :class:`~rtpengine.engine.Stream`, its stats say its strategy.
        ``pacing`` and ``peer`` are for such streams (see
        ``Engine.open_stream``); the module paces its own streams.
        """
        if dest is not None or growing:
            return self._userspace_engine().open_stream(
                sock, media, hints, ssrc=ssrc, seq0=seq0, ts0=ts0,
                payload_type=payload_type, dest=dest, growing=growing, pacing=pacing,
                peer=peer)
        ssrc = _in_range(ssrc, 32, "ssrc")
        seq0 = _in_range(seq0, 16, "seq0")
        ts0 = _in_range(ts0, 32, "ts0")
        pt = PT_FROM_HINT if payload_type is None else _in_range(payload_type, 7,
                                                                  "payload type")
        sock_fd, media_fd, hint_fd = _fd(sock, "socket"), _fd(media, "media"), _fd(hints, "hints")
        mapping = None
        flags, addr, length, media_arg = 0, 0, 0, media_fd
        if self.strategy == "krtpmsend":
            size = os.fstat(media_fd).st_size
            if size:
                mapping = _Mapping(media_fd, size)
                addr, length = mapping.address, size
            flags, media_arg = OPEN_MSEND, -1
        buf = bytearray(OPEN.pack(sock_fd, media_arg, hint_fd, pt, ssrc, ts0, seq0, flags,
                                  0, addr, length, 0))
        try:
            _ioctl(self._require(), IOC_OPEN, buf, "open stream")
        except BaseException:
            if mapping:
                mapping.close()
            raise
        sid = OPEN.unpack(buf)[8]
        stream = KrtpStream(self, sid, mapping, seq0=seq0, ts0=ts0,
                            hints=self._hint_file(hint_fd))
        with self._lock:
            self._streams[sid] = stream
        return stream

    def _closed_stream(self, sid: int) -> None:
        with self._lock:
            self._streams.pop(sid, None)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.threads} threads"
        return f"<KrtpEngine {self.strategy} {state}>"


class _Mapping:
    """A read-only shared mapping of the media file, for krtpmsend."""

    def __init__(self, fd: int, size: int) -> None:
        self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED)
        # ctypes wants a writable buffer for an address; cffi takes any
        self._ptr = _ffi.from_buffer(self._map)
        self.address = int(_ffi.cast("uintptr_t", self._ptr))

    def close(self) -> None:
        if self._map is not None:
            _ffi.release(self._ptr)
            self._map.close()
            self._map = None


class _HintFile:
    """A descriptor of a hint file that an engine's streams share."""

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self.fd = fd
        self.key = key
        self.users = 0


class KrtpStream(Closing):
    """One stream of a :class:`KrtpEngine`."""

    def __init__(self, engine: KrtpEngine, sid: int, mapping: Optional[_Mapping], *,
                 seq0: int, ts0: int, hints: _HintFile) -> None:
        self._engine = engine
        self._id: Optional[int] = sid
        self._mapping = mapping
        # what play() needs to say where it starts: the module's ABI only
        # takes a record, so the record's time is read from the hint file
        self._seq0, self._ts0 = seq0, ts0
        self._hints: Optional[_HintFile] = hints

    @property
    def id(self) -> Optional[int]:
        return self._id

    @property
    def closed(self) -> bool:
        return self._id is None or self._engine.closed

    def _cmd(self, request: int, arg: int, what: str) -> None:
        sid = self._id
        if sid is None:
            raise KrtpError(errno.EBADF, "stream is closed")
        buf = bytearray(CMD.pack(sid, 0, arg))
        _ioctl(self._engine._require(), request, buf, f"{what} stream {sid}")

    def play(self, start_record: Optional[int] = None, at_ns: Optional[int] = None,
             unpaced: bool = False) -> StartPoint:
        """Send from ``start_record`` (None: where it stopped), record k at
        ``at_ns + send_ns[k] - send_ns[start_record]`` (``at_ns`` None: now);
        returns where it starts, as the user-space engine's ``play`` does."""
        sid = self._id
        if sid is None:
            raise KrtpError(errno.EBADF, "stream is closed")
        rec = RECORD_CONTINUE if start_record is None else _in_range(
            start_record, 63, "start record")
        at = 0 if at_ns is None else _in_range(at_ns, 63, "start time")
        st = self.stats()
        if st.state == "playing" and (start_record is None or start_record <= st.record_count):
            # a seek: stop it first, so that no packet leaves between
            # reading where it stands and starting it again
            self.pause()
            st = self.stats()
        buf = bytearray(PLAY.pack(sid, PLAY_UNPACED if unpaced else 0, rec, at))
        _ioctl(self._engine._require(), IOC_PLAY, buf, f"play stream {sid}")
        return self._start_point(st.next_record if start_record is None else start_record, st)

    def _start_point(self, record: int, st: KrtpStreamStats) -> StartPoint:
        seq = (self._seq0 + st.packets_sent + st.packets_dropped) & 0xFFFF
        last = min(record, st.record_count - 1)
        if last < 0:
            return StartPoint(record=record, seq=seq, rtp_ts=self._ts0, send_ns=0)
        # pinned while read: a close() from another thread must not close
        # (and so free for reuse) the descriptor under the pread
        with self._engine._lock:
            hints = self._hints
            if hints is None:
                raise KrtpError(errno.EBADF, "stream is closed")
            hints.users += 1
        try:
            raw = os.pread(hints.fd, RECORD_SIZE, HEADER_SIZE + last * RECORD_SIZE)
        finally:
            self._engine._release_hint_file(hints)
        if len(raw) < RECORD_SIZE:  # the file shrank under the stream
            return StartPoint(record=record, seq=seq, rtp_ts=self._ts0, send_ns=0)
        r = HintRecord.unpack_from(raw, 0)
        return StartPoint(record=record, seq=seq, rtp_ts=(self._ts0 + r.rtp_ts) & 0xFFFFFFFF,
                          send_ns=r.send_ns)

    def pause(self) -> None:
        """Stop sending; a later ``play()`` continues at the next record."""
        self._cmd(IOC_PAUSE, 0, "pause")

    def seek(self, record: int) -> None:
        """Make ``record`` the next one; a playing stream goes on from it now."""
        self._cmd(IOC_SEEK, _in_range(record, 64, "record"), "seek")

    def set_fill_limit(self, limit: int) -> None:
        """Never send media bytes at or beyond ``limit``; a waiting stream
        resumes, its schedule shifted by the wait."""
        self._cmd(IOC_FILL, _in_range(limit, 64, "fill limit"), "fill limit of")

    def set_hints(self, hints, record_count: Optional[int] = None, *,
                  growing: bool = False, remap: bool = False, restart: bool = False) -> None:
        """The user-space engine's hint switch, for a complete title only:
        the same records (a count equal to the stream's) change nothing;
        anything else (a growing or different hint file) the module does not
        do (EOPNOTSUPP)."""
        if not (growing or remap or restart) and (
                record_count is None or record_count == self.stats().record_count):
            return
        raise KrtpError(errno.EOPNOTSUPP, "krtp streams keep the hint records they were "
                                          "opened with")

    def stats(self) -> KrtpStreamStats:
        sid = self._id
        if sid is None:
            raise KrtpError(errno.EBADF, "stream is closed")
        buf = bytearray(STATS.pack(sid, *([0] * (len(STATS.unpack(bytes(STATS.size))) - 1))))
        _ioctl(self._engine._require(), IOC_STATS, buf, f"stats of stream {sid}")
        (_, state, last_errno, last_rtp_ts, last_seq, mode, flags, record_count, next_record,
         fill_limit, packets_sent, payload_octets, packets_dropped, send_errors, late_1ms,
         late_5ms, max_late_ns, last_due_ns, send_calls, spliced, copied) = STATS.unpack(buf)
        return KrtpStreamStats(
            state=STATES.get(state, str(state)), record_count=record_count,
            next_record=next_record, fill_limit=fill_limit, packets_sent=packets_sent,
            payload_octets=payload_octets, packets_dropped=packets_dropped,
            send_errors=send_errors, last_errno=last_errno, late_1ms=late_1ms,
            late_5ms=late_5ms, max_late_ns=max_late_ns, last_due_ns=last_due_ns,
            syscalls=send_calls, last_seq=last_seq, last_rtp_ts=last_rtp_ts,
            gso_fallback=bool(flags & STATS_NO_GSO), strategy=MODES.get(mode, str(mode)),
            spliced_octets=spliced, copied_octets=copied)

    def _release(self) -> None:
        if self._mapping:
            self._mapping.close()
            self._mapping = None
        hints, self._hints = self._hints, None
        if hints is not None:
            self._engine._release_hint_file(hints)

    def _forget(self) -> None:
        # the engine closed /dev/krtp, which took the stream with it
        self._id = None
        self._release()

    def close(self) -> None:
        """Stop and free the stream; a no-op once it or its engine is closed."""
        sid, self._id = self._id, None
        if sid is None:
            return
        try:
            if not self._engine.closed:
                buf = bytearray(CMD.pack(sid, 0, 0))
                _ioctl(self._engine._require(), IOC_CLOSE, buf, f"close stream {sid}")
        except KrtpError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOENT):
                raise
        finally:
            self._engine._closed_stream(sid)
            self._release()

    def __repr__(self) -> str:
        return f"<KrtpStream {self._id if self._id is not None else 'closed'}>"
