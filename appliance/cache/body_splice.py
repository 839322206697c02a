"""A response body moved from the origin's socket into the cache's file by
the kernel (``splice(2)``), in a thread of its own, without Python touching
its bytes.

Read the usual way, each MiB of a body is copied out of the socket into a
new ``bytes`` (``recv``), goes through Twisted's HTTP parser and the body
protocol, and is copied again into the page cache (``pwrite``): on a fill
from an origin on the same machine, most of the reactor's time. Spliced,
the socket's pages go into a pipe (no copy) and from the pipe into the file
(one copy), and Python sees only byte counts.

That one copy into the page cache is still most of a fill's work (70 ms of
each 150 MB here), so it runs in a thread of the splice's own, not in the
reactor: the reactor goes on serving viewers, indexing and fsync'ing what
the thread wrote while the thread writes the next MiB (and a fill can use
a core of its own where one is free). A write the kernel throttles (a disk
behind, dirty pages at their limit) now stalls the thread, not every
viewer's requests. The thread only moves bytes; every decision (what counts as
held, when the request ends, timeouts, errors) stays in the reactor, which
learns of the thread's progress at most once per reactor turn.

Only the body of an answer already checked (status, validator,
Content-Range) over plain TCP from a near origin is spliced (under TLS the
socket holds ciphertext; a far origin's connection is worth more than the
copies, see origin.SPLICE_MAX_RTT_US). Twisted's transport does not read
the socket meanwhile. The connection is then dropped, not pooled: Twisted's
HTTP parser never saw the bytes and still waits for them.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import os
import select
import socket
import struct
from typing import Callable, Optional, Protocol

from twisted.internet import defer

# Bytes moved per splice(2) of the socket: a pipe holds this much (the
# largest an unprivileged process may make it, /proc/sys/fs/pipe-max-size).
PIPE_BYTES = 1 << 20


class SpliceFile(Protocol):
    """Where a splice thread writes one body. ``write`` runs in the thread;
    the others run in the reactor."""

    def write(self, pipe: int, offset: int, size: int) -> int:
        """(thread) Move up to ``size`` bytes waiting in ``pipe`` (a file
        descriptor) to ``offset``; how many moved (at least one), or raise
        OSError."""

    def wrote(self, offset: int, size: int) -> None:
        """(reactor) ``size`` bytes from ``offset`` are in the file: count
        them. Raises once no byte more is wanted (the request then ends with
        that error)."""

    def failed(self, exc: OSError) -> Exception:
        """(reactor) The error to end the request with, ``write`` having
        raised ``exc``."""

    def close(self) -> None:
        """(reactor) The thread has ended: it writes no byte more."""


class FileSink(Protocol):
    """A sink (``sink(offset, data)``) whose bytes a splice can also write
    into its file itself."""

    def __call__(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``."""

    def splice_file(self, offset: int) -> Optional[SpliceFile]:
        """The file for a splice to write this request's bytes into from
        ``offset`` on, or None (read them the usual way); raises as
        ``__call__`` does."""


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
    """Whether ``sink`` lets a splice write its file, and this system splices."""
    return callable(getattr(sink, "splice_file", None)) and hasattr(os, "splice") \
        and hasattr(os, "eventfd")


class BodySplice:
    """One body moved from a socket into a file by a thread of its own.

    Made in the reactor, where all its callbacks run: ``moved(n)`` when ``n``
    more bytes are in the file (and counted by the file's ``wrote``);
    ``ended()`` when the socket ended (or failed: whoever reads it next
    learns which) before every wanted byte came; ``failed(exc)`` when the
    file could not take bytes. None of them after ``stop()``.

    The thread has its own descriptor of the socket, its pipe and a wake-up
    descriptor, closed in the reactor once it ended (``finished`` fires
    then): a transport that closes the socket meanwhile, and a new socket
    that gets its number, are never read by it.
    """

    def __init__(self, reactor, sock_fd: int, moved: Callable[[int], None],
                 ended: Callable[[], None], failed: Callable[[Exception], None]) -> None:
        self.reactor = reactor
        self._moved = moved
        self._ended = ended
        self._failed = failed
        self.finished: defer.Deferred = defer.Deferred()
        self._fds: list[int] = []
        try:
            self._sock = self._keep(os.dup(sock_fd))
            self._read, self._write = (self._keep(fd) for fd in
                                       os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK))
            self._wake = self._keep(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        except OSError:
            self._close_fds()
            raise
        try:
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe: more splices, the same bytes
        self._file: Optional[SpliceFile] = None
        self._offset = 0
        self._want = 0
        self._started = False
        self.active = False       # started, and not stopped
        # written by the thread, read in the reactor (whole ints: the GIL
        # makes each read and write atomic)
        self._done = 0            # bytes in the file
        self._reported = 0        # ... of which the reactor counted
        self._report_due = False
        self._outcome: Optional[str] = None   # "ended" (the socket), or None
        self._error: Optional[OSError] = None  # the file's
        self._crash: Optional[Exception] = None

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def start(self, file: SpliceFile, offset: int, want: int) -> None:
        """Write the next ``want`` bytes of the socket at ``offset`` of
        ``file`` (the transport must not read the socket from now on).
        Raises OSError, with ``file`` closed and nothing read, if no thread
        can be started."""
        self._file, self._offset, self._want = file, offset, want
        self._started = self.active = True
        try:
            # not threading.Thread: its start() waits until the new thread
            # runs Python (most of a millisecond of the reactor's, per request)
            _thread.start_new_thread(self._run, ())
        except Exception as exc:     # no thread to be had (a task limit, memory)
            self.active = False
            self._close_fds()
            file.close()
            self.finished.callback(None)
            raise OSError(errno.EAGAIN, f"cannot start a splice thread: {exc}") from exc

    def stop(self) -> None:
        """No callback more; the thread ends after the write under way (if
        any), then the descriptors close and ``finished`` fires."""
        if self.active:
            self.active = False
            os.eventfd_write(self._wake, 1)
        elif not self._started and not self.finished.called:
            self._close_fds()     # never started
            self.finished.callback(None)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        try:
            while self._done < self._want:
                events = dict(poller.poll())
                if self._wake in events:
                    return
                try:
                    n = os.splice(self._sock, self._write, min(self._want - self._done, PIPE_BYTES),
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0    # the transport reads the socket again and reports it
                if n == 0:
                    self._outcome = "ended"
                    return
                while n > 0:
                    try:
                        wrote = self._file.write(self._read, self._offset + self._done, n)
                    except OSError as exc:
                        self._error = exc
                        return
                    n -= wrote
                    self._done += wrote
                if not self._report_due:
                    self._report_due = True
                    self.reactor.callFromThread(self._report)
        except Exception as exc:  # a defect: the request ends with it, not in silence
            self._crash = exc
        finally:
            self.reactor.callFromThread(self._thread_ended)

    # -- the reactor -----------------------------------------------------------

    def _report(self) -> None:
        # cleared before reading _done: the thread then either sees it
        # cleared and reports again, or wrote before this read
        self._report_due = False
        done = self._done
        size = done - self._reported
        if size <= 0 or not self.active:
            return
        offset = self._offset + self._reported
        self._reported = done
        try:
            self._file.wrote(offset, size)
        except Exception as exc:
            if self.active:     # counting them may have stopped the request
                self.stop()
                self._failed(exc)
            return
        if self.active:   # counting them may have stopped the request
            self._moved(size)

    def _thread_ended(self) -> None:
        try:
            self._report()
        finally:
            was_active, self.active = self.active, False
            try:
                self._close_fds()
                self._file.close()
            finally:
                # whatever a callback does, whoever waits for the thread learns it ended
                self.finished.callback(None)
        if was_active:
            if self._error is not None:
                self._failed(self._file.failed(self._error))
            elif self._crash is not None:
                self._failed(self._crash)
            elif self._outcome == "ended":
                self._ended()

    def _close_fds(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


__all__ = ["BodySplice", "FileSink", "PIPE_BYTES", "SpliceFile", "can_splice", "round_trip_us"]
