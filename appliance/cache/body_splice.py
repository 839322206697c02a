"""A response body moved from the origin's socket into the cache's file by
the kernel (``splice(2)``), without Python touching its bytes.

Read the usual way, each MiB of a body is copied out of the socket into a
new ``bytes`` (``recv``), goes through Twisted's HTTP parser and the body
protocol, and is copied again into the page cache (``pwrite``): on a fill
from an origin on the same machine, most of the reactor's time. Spliced,
the socket's pages go into a pipe (no copy) and from the pipe into the file
(one copy), and Python sees only byte counts.

Only the body of an answer already checked (status, validator,
Content-Range) over plain TCP from a near origin is spliced (under TLS the
socket holds ciphertext; a far origin's connection is worth more than the
copies, see origin.SPLICE_MAX_RTT_US). :class:`BodySplice` stands in for
the TCP transport as the reactor's reader of the socket until the body's
last byte (or the end of the connection, an error or a cancel); Twisted's
transport is not read meanwhile. The connection is then dropped, not pooled: Twisted's HTTP
parser never saw the bytes and still waits for them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Callable, Optional, Protocol

# Bytes moved per splice(2) of the socket: a pipe holds this much (the
# largest an unprivileged process may make it, /proc/sys/fs/pipe-max-size).
PIPE_BYTES = 1 << 20


class FileSink(Protocol):
    """A sink (``sink(offset, data)``) that can also take bytes from a pipe
    and write them into its file itself."""

    def __call__(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``."""

    def from_pipe(self, pipe: int, offset: int, size: int) -> None:
        """Move exactly ``size`` bytes waiting in ``pipe`` (a file
        descriptor) to ``offset``; raises as ``__call__`` does."""


# struct tcp_info (linux/tcp.h): tcpi_rtt, the smoothed round trip in
# microseconds, is the u32 at byte 68; the kernel fills what it has
_TCP_INFO_BYTES = 104
_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_AT = 68


def round_trip_us(sock) -> Optional[int]:
    """The kernel's smoothed round-trip time of TCP socket ``sock`` in
    microseconds, or None (not a TCP socket, or no answer)."""
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_RTT_AT + _TCPI_RTT.size:
        return None
    return _TCPI_RTT.unpack_from(info, _TCPI_RTT_AT)[0]


def can_splice(sink) -> bool:
    """Whether ``sink`` takes bytes from a pipe, and this system splices."""
    return callable(getattr(sink, "from_pipe", None)) and hasattr(os, "splice")


class BodySplice:
    """The reactor's reader of one socket while a body is spliced from it.

    ``want()`` says how many body bytes are still to come; ``moved(pipe,
    n)`` is called with ``n`` bytes waiting in ``pipe`` (it must take them
    all, or raise); ``ended()`` once the socket says no more (end of the
    connection, or an error: whoever reads the socket next learns which).
    """

    def __init__(self, reactor, sock_fd: int, want: Callable[[], int],
                 moved: Callable[[int, int], None], ended: Callable[[], None]) -> None:
        self.reactor = reactor
        self._fd = sock_fd
        self._want = want
        self._moved = moved
        self._ended = ended
        read, write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._pipe: Optional[tuple[int, int]] = (read, write)
        try:
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe: more splices, the same bytes
        self.active = False

    def start(self) -> None:
        """Read the socket from now on (its transport must not)."""
        self.active = True
        self.reactor.addReader(self)

    def stop(self) -> None:
        """Stop reading and close the pipe; bytes still in it are dropped."""
        if self.active:
            self.active = False
            self.reactor.removeReader(self)
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    # -- IReadDescriptor -------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802 (Twisted API)
        return "BodySplice"

    def doRead(self):  # noqa: N802 (Twisted API)
        want = min(self._want(), PIPE_BYTES)
        if not self.active or want <= 0 or self._pipe is None:
            return None
        try:
            n = os.splice(self._fd, self._pipe[1], want,
                          flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return None
        except OSError:
            n = 0        # the transport reads the socket again and reports it
        if n == 0:
            self._ended()
            return None
        self._moved(self._pipe[0], n)
        return None

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        # the reactor is shutting down (removeAll): the transport says the rest
        self.active = False
        self.stop()


__all__ = ["BodySplice", "FileSink", "PIPE_BYTES", "can_splice", "round_trip_us"]
