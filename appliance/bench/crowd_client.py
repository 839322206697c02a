"""The flash crowd's viewers: many RTSP sessions set up from one thread.

A measuring tool must cost less than what it measures. The first crowd
client ran a blocking ``RtspClient`` per thread (100 threads) and spent
about as much CPU as the daemon it measured, on a machine of two cores,
so the crowd timed the client as much as the server. This one is a
single-threaded state machine per session over one ``epoll``: requests
are pre-formatted bytes, a reply is read as far as its status, its
Session header and its length, and first RTP arrivals are the kernel's
receive timestamps (``SO_TIMESTAMPNS``), so a busy loop does not delay
them. It speaks only what a crowd needs: DESCRIBE, SETUP (UDP), PLAY.
"""

from __future__ import annotations

import errno
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from appliance.bench.rtsp_client import bind_pair

_STATUS_RE = re.compile(rb"RTSP/1\.0 (\d{3})")
_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_SESSION_RE = re.compile(rb"\r\nsession:[ \t]*([^;\r\n]+)", re.IGNORECASE)
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h; 64-bit time_t), which
# Python's socket module does not name; its messages are SCM_TIMESTAMPNS
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# struct timespec of an SCM_TIMESTAMPNS message
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


class ReplyError(Exception):
    """A reply the crowd cannot go on from (not 200, or no Session)."""


def parse_reply(buffer: bytes) -> Optional[tuple[int, Optional[str], int]]:
    """The first whole reply in ``buffer``: (status, session id or None,
    bytes it takes), or None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end + 2]
    status = _STATUS_RE.match(head)
    if status is None:
        raise ReplyError(f"not an RTSP reply: {bytes(head[:40])!r}")
    length = _LENGTH_RE.search(head)
    total = end + 4 + (int(length.group(1)) if length else 0)
    if len(buffer) < total:
        return None
    session = _SESSION_RE.search(head)
    return (int(status.group(1)), session.group(1).decode("ascii", "replace") if session else None,
            total)


@dataclass
class Viewer:
    """One session of the crowd, from connect to its first RTP packet."""

    rtp: socket.socket
    rtcp: socket.socket
    control: socket.socket
    step: str = "connect"        # connect, DESCRIBE, SETUP, PLAY, playing, failed
    inbox: bytes = b""
    session: Optional[str] = None
    cseq: int = 0
    play_ns: Optional[int] = None   # CLOCK_REALTIME when PLAY was sent
    first_ns: Optional[int] = None  # the kernel's stamp of the first RTP packet
    error: Optional[str] = None

    def request(self, method: str, target: str, extra: str = "") -> bytes:
        self.cseq += 1
        session = f"Session: {self.session}\r\n" if self.session else ""
        return (f"{method} {target} RTSP/1.0\r\nCSeq: {self.cseq}\r\n"
                f"User-Agent: kvod-bench-crowd\r\n{session}{extra}\r\n").encode()


@dataclass
class CrowdResult:
    """What a crowd came to."""

    viewers: list[Viewer] = field(default_factory=list)
    started_ns: int = 0          # CLOCK_REALTIME of the first connect

    @property
    def failures(self) -> list[str]:
        return [v.error or "no RTP packet" for v in self.viewers if v.first_ns is None]


class Crowd:
    """``sessions`` viewers of ``name`` on the RTSP server at ``port`` on
    loopback, at most ``concurrency`` being set up at once; each stays
    connected (and playing) until :meth:`close`."""

    def __init__(self, port: int, name: str, sessions: int, concurrency: int, *,
                 host: str = "127.0.0.1"):
        self.address = (host, port)
        self.url = f"rtsp://{host}:{port}/{name}"
        self.sessions = sessions
        self.concurrency = concurrency
        self.result = CrowdResult()
        self._epoll = select.epoll()
        self._by_fd: dict[int, tuple[Viewer, str]] = {}   # fd -> (viewer, "control" | "rtp")
        self._setting_up = 0
        self._waiting_rtp = 0
        self._started = 0
        self._playing = 0

    def run(self, timeout: float = 10.0,
            progress: Optional[Callable[[float], None]] = None) -> CrowdResult:
        """Set the crowd up and wait until every session has its first
        packet, has failed, or ``timeout`` seconds have passed."""
        self.result.started_ns = time.time_ns()
        deadline = time.monotonic() + timeout
        while self._started < self.sessions and self._setting_up < self.concurrency:
            self._start_one()
        while (self._setting_up or self._waiting_rtp or self._started < self.sessions) \
                and time.monotonic() < deadline:
            for fd, events in self._epoll.poll(0.05):
                viewer, role = self._by_fd[fd]
                if role == "rtp":
                    self._first_packet(viewer)
                else:
                    self._control(viewer, events)
            while self._started < self.sessions and self._setting_up < self.concurrency:
                self._start_one()
            if progress:
                progress(self._playing / self.sessions)
        for viewer in self.result.viewers:
            if viewer.first_ns is None and viewer.error is None:
                viewer.error = (f"no RTP packet within {timeout:g} s" if viewer.step == "playing"
                                else f"{viewer.step} not answered within {timeout:g} s")
        return self.result

    def _start_one(self) -> None:
        self._started += 1
        rtp, rtcp = bind_pair(self.address[0])
        rtp.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        rtp.setblocking(False)
        control = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        control.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        control.setblocking(False)
        viewer = Viewer(rtp, rtcp, control)
        self.result.viewers.append(viewer)
        self._setting_up += 1
        err = control.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            self._fail(viewer, f"connect: {errno.errorcode.get(err, err)}")
            return
        self._by_fd[control.fileno()] = (viewer, "control")
        self._epoll.register(control.fileno(), select.EPOLLOUT | select.EPOLLIN)

    def _control(self, viewer: Viewer, events: int) -> None:
        try:
            if viewer.step == "connect":
                err = viewer.control.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
                self._epoll.modify(viewer.control.fileno(), select.EPOLLIN)
                self._send(viewer, "DESCRIBE", self.url, "Accept: application/sdp\r\n")
                return
            data = viewer.control.recv(65536)
            if not data:
                raise OSError(errno.ECONNRESET, "the server closed the connection")
            viewer.inbox += data
            while viewer.step in ("DESCRIBE", "SETUP", "PLAY"):
                reply = parse_reply(viewer.inbox)
                if reply is None:
                    return
                status, session, used = reply
                viewer.inbox = viewer.inbox[used:]
                if status != 200:
                    raise ReplyError(f"{viewer.step} answered {status}")
                self._answered(viewer, session)
        except ReplyError as exc:
            self._fail(viewer, str(exc))
        except OSError as exc:
            self._fail(viewer, exc.strerror or str(exc))

    def _answered(self, viewer: Viewer, session: Optional[str]) -> None:
        if viewer.step == "DESCRIBE":
            port = viewer.rtp.getsockname()[1]
            self._send(viewer, "SETUP", self.url + "/trackID=0",
                       f"Transport: RTP/AVP;unicast;client_port={port}-{port + 1}\r\n")
        elif viewer.step == "SETUP":
            if not session:
                raise ReplyError("SETUP answered without a Session")
            viewer.session = session
            self._by_fd[viewer.rtp.fileno()] = (viewer, "rtp")
            self._epoll.register(viewer.rtp.fileno(), select.EPOLLIN)
            self._waiting_rtp += 1
            viewer.play_ns = time.time_ns()
            self._send(viewer, "PLAY", self.url + "/", "Range: npt=0-\r\n")
        elif viewer.step == "PLAY":
            viewer.step = "playing"
            self._setting_up -= 1
            self._playing += 1
            # the control connection stays open (closing it ends nothing
            # over UDP, but a viewer keeps it) and is read no more
            self._epoll.unregister(viewer.control.fileno())
            del self._by_fd[viewer.control.fileno()]

    def _send(self, viewer: Viewer, method: str, target: str, extra: str) -> None:
        data = viewer.request(method, target, extra)
        if viewer.control.send(data) != len(data):  # a few hundred bytes on an idle socket
            raise OSError(errno.EAGAIN, f"{method}: the request did not fit the socket")
        viewer.step = method

    def _first_packet(self, viewer: Viewer) -> None:
        try:
            _, ancillary, _, _ = viewer.rtp.recvmsg(2048, _ANCILLARY)
        except BlockingIOError:
            return
        stamp = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(data[:_TIMESPEC.size])
                stamp = sec * 1_000_000_000 + nsec
        viewer.first_ns = stamp if stamp is not None else time.time_ns()
        self._stop_rtp(viewer)

    def _stop_rtp(self, viewer: Viewer) -> None:
        fd = viewer.rtp.fileno()
        if self._by_fd.pop(fd, None) is not None:
            self._epoll.unregister(fd)
            self._waiting_rtp -= 1

    def _fail(self, viewer: Viewer, why: str) -> None:
        if viewer.step not in ("playing", "failed"):
            self._setting_up -= 1
        viewer.error = why
        viewer.step = "failed"
        self._stop_rtp(viewer)
        fd = viewer.control.fileno()
        if self._by_fd.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def close(self) -> None:
        """Close every viewer's sockets (the server sees its clients leave)."""
        for viewer in self.result.viewers:
            for sock in (viewer.control, viewer.rtp, viewer.rtcp):
                sock.close()
        self._epoll.close()
