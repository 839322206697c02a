"""A response body spliced from the origin's socket into the fill's file
(``appliance.cache.body_splice``) by a thread of its own: the bytes land
where they belong, a body cut off halfway goes back to the transport, which
ends the response with what it says, TLS and short bodies are read the
usual way, a file that cannot take bytes ends the request with its error,
and a request that stopped (a cancel, a fill that stopped) takes no byte
more: its thread ends and its descriptors close.

A socket pair stands in for the origin's connection, a fake reactor for
the reactor: the test runs what the thread hands to it.
"""

from __future__ import annotations

import errno
import os
import queue
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed

from appliance.cache.body_splice import BodySplice
from appliance.cache.fill import CacheWriteError, FillSettings, TitleFill
from appliance.cache.origin import SPLICE_BYTES, FileOrigin, OriginProtocolError, Probe, _Body
from catalog import open_catalog


class _Reactor(Clock):
    """A clock that also takes calls from threads; ``run()`` runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: list = []
        self.from_threads: queue.Queue = queue.Queue()

    def getWriters(self) -> list:  # noqa: N802 (Twisted API)
        return self.writers

    def callFromThread(self, f, *args) -> None:  # noqa: N802 (Twisted API)
        self.from_threads.put((f, args))

    def run(self, until, timeout: float = 20.0) -> None:
        """Run due calls and the threads' calls until ``until()``."""
        deadline = time.monotonic() + timeout
        self.advance(0)
        while not until():
            assert time.monotonic() < deadline, "nothing came from the thread"
            try:
                f, args = self.from_threads.get(timeout=0.05)
            except queue.Empty:
                continue
            f(*args)
            self.advance(0)


class _Tcp:
    """A TCP transport over one end of a socket pair."""

    bufferSize = 1 << 16

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.socket = sock      # as Twisted's, for the round trip (TCP_INFO)
        self.reading = True
        self.disconnected = False
        self.aborted = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def stopReading(self) -> None:  # noqa: N802 (Twisted API)
        self.reading = False

    def startReading(self) -> None:  # noqa: N802 (Twisted API)
        self.reading = True

    def abortConnection(self) -> None:  # noqa: N802 (Twisted API)
        self.aborted = True

    def loseConnection(self) -> None:  # noqa: N802 (Twisted API)
        self.disconnected = True


class _Proxy:
    """Agent's proxy of the connection's transport."""

    def __init__(self, under) -> None:
        self._producer = under

    def loseConnection(self) -> None:  # noqa: N802 (Twisted API)
        self._producer.loseConnection()


class _Tls:
    def __init__(self, tcp) -> None:
        self.transport = tcp

    def loseConnection(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.loseConnection()


class _SpliceFile:
    """A file a splice writes (body_splice.SpliceFile), saying what it was told."""

    def __init__(self, sink: "_FileSink") -> None:
        self.sink = sink
        self.closed = False

    def write(self, pipe: int, offset: int, size: int) -> int:
        if self.sink.fail_writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.splice(pipe, self.sink.fd, size, offset_dst=offset)

    def wrote(self, offset: int, size: int) -> None:
        if self.sink.refuse:
            raise CacheWriteError("the fill stopped")
        self.sink.calls.append(("spliced", offset, size))

    def failed(self, exc: OSError) -> Exception:
        error = CacheWriteError(f"cannot write: {os.strerror(exc.errno)}")
        error.__cause__ = exc
        return error

    def close(self) -> None:
        assert not self.closed
        self.closed = True


class _FileSink:
    """A sink into a file whose file a splice may write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.calls: list[tuple[str, int, int]] = []
        self.refuse = False        # wrote() raises: the fill stopped
        self.fail_writes = False   # write() raises: the disk is full
        self.files: list[_SpliceFile] = []

    def __call__(self, offset: int, data: bytes) -> None:
        self.calls.append(("data", offset, len(data)))
        os.pwrite(self.fd, data, offset)

    def splice_file(self, offset: int) -> _SpliceFile:
        self.files.append(_SpliceFile(self))
        return self.files[-1]


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    yield ours, theirs
    ours.close()
    theirs.close()


def _send_in_thread(sock: socket.socket, data: bytes, close: bool):
    import threading

    def send() -> None:
        try:
            sock.sendall(data)
            if close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass        # the reader went away (a test that stops early)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _connect(body: _Body, tcp: _Tcp, buffered: bytes = b"") -> None:
    """As Response.deliverBody does: connect, hand over what Twisted read
    with the headers, resume the transport."""
    body.makeConnection(_Proxy(tcp))
    if buffered:
        body.dataReceived(buffered)
    tcp.startReading()


def _connected_body(tmp_path, sock: socket.socket, length: int = SPLICE_BYTES):
    """A body of ``length`` bytes from offset 0 of a new file, connected
    over ``sock``: (the file, its sink, the reactor, the transport, the body)."""
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(sock)
    body = _Body(0, length, sink, reactor, 10.0, framed=True)
    _connect(body, tcp)
    return fd, sink, reactor, tcp, body


def test_a_long_body_is_spliced_into_the_file_at_its_offset(tmp_path, pair):
    ours, theirs = pair
    data = os.urandom(SPLICE_BYTES + 12345)
    start = 1000
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    fds = _open_fds()
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(ours)
    body = _Body(start, len(data), sink, reactor, 10.0, framed=True)
    _connect(body, tcp, data[:5000])           # what Twisted read with the headers
    reactor.advance(0)
    assert not tcp.reading and body._splice.active    # the splice's thread reads the socket
    sender = _send_in_thread(theirs, data[5000:] + b"NEXT", close=False)
    reactor.run(lambda: sink.files[0].closed)
    sender.join()
    assert tcp.aborted                  # dropped: its parser never saw the body
    assert os.pread(fd, len(data), start) == data
    assert sink.calls[0] == ("data", start, 5000)
    at = start + 5000
    for kind, offset, size in sink.calls[1:]:   # in order, each counted once
        assert kind == "spliced" and offset == at and size > 0
        at += size
    assert at == start + len(data)
    assert ours.recv(16) == b"NEXT"     # not a byte past the body was taken
    # the parser, short of the body's bytes, ends the response as failed: not so
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    assert body.done.result == len(data)
    assert _open_fds() == fds           # the thread's socket, pipe and wake-up: closed
    os.close(fd)


def test_a_spliced_body_cut_off_goes_back_to_the_transport(tmp_path, pair):
    ours, theirs = pair
    data = os.urandom(SPLICE_BYTES)
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(ours)
    body = _Body(0, len(data) * 2, sink, reactor, 10.0, framed=True)
    _connect(body, tcp)
    sender = _send_in_thread(theirs, data, close=True)
    reactor.run(lambda: tcp.reading and body._splice is None)
    sender.join()
    assert sink.files[0].closed         # the transport reads the end itself
    assert not body.done.called
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    error = body.done.result.value
    body.done.addErrback(lambda _f: None)
    assert isinstance(error, OriginProtocolError) and error.received == len(data)
    assert os.pread(fd, len(data), 0) == data
    os.close(fd)


def test_a_sink_that_takes_no_byte_more_before_the_splice_starts(tmp_path, pair):
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)

    class Stopped(_FileSink):
        def splice_file(self, offset):
            raise CacheWriteError("the fill stopped or started over")
    fds = _open_fds()
    body = _Body(0, SPLICE_BYTES, Stopped(fd), reactor, 10.0, framed=True)
    _connect(body, tcp)
    reactor.advance(0)
    assert tcp.disconnected and body._splice is None
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    assert isinstance(body.done.result.value, CacheWriteError)
    body.done.addErrback(lambda _f: None)
    assert _open_fds() == fds
    os.close(fd)


@pytest.mark.parametrize("case", ["the fill refuses them", "the disk is full"])
def test_a_file_that_takes_no_spliced_bytes_ends_the_request_with_its_error(tmp_path, pair,
                                                                             case):
    ours, theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(ours)
    if case == "the disk is full":
        sink.fail_writes = True     # write() raises, in the thread
    else:
        sink.refuse = True          # wrote() raises, in the reactor
    body = _Body(0, SPLICE_BYTES, sink, reactor, 10.0, framed=True)
    _connect(body, tcp)
    sender = _send_in_thread(theirs, b"x" * 65536, close=False)
    reactor.run(lambda: tcp.disconnected and sink.files[0].closed)
    sender.join()
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    error = body.done.result.value
    body.done.addErrback(lambda _f: None)
    assert isinstance(error, CacheWriteError) and error.received == 0
    if case == "the disk is full":
        assert "No space left" in str(error) and error.__cause__.errno == errno.ENOSPC
    os.close(fd)


def test_a_body_is_read_the_usual_way_when_no_thread_can_start(tmp_path, pair, monkeypatch):
    import appliance.cache.body_splice as body_splice

    def refuse(*_args):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(body_splice._thread, "start_new_thread", refuse)
    fds = _open_fds()
    fd, sink, reactor, tcp, body = _connected_body(tmp_path, pair[0])
    reactor.advance(0)
    assert tcp.reading and body._splice is None and not body._spliced
    assert sink.files[0].closed and _open_fds() == fds + 1   # the media file
    body.dataReceived(b"x" * SPLICE_BYTES)
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == SPLICE_BYTES
    os.close(fd)


@pytest.mark.parametrize("started", [False, True])
def test_a_cancel_stops_the_splice(tmp_path, pair, started):
    fds = _open_fds()
    fd, sink, reactor, tcp, body = _connected_body(tmp_path, pair[0])
    splice = body._splice
    if started:
        reactor.advance(0)          # the thread waits for the socket
        assert splice.active
    body.done.addErrback(lambda _f: None)
    body.done.cancel()
    assert tcp.disconnected and body._splice is None
    reactor.run(lambda: splice.finished.called)   # the thread woke and ended
    assert all(f.closed for f in sink.files) and len(sink.files) == started
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    reactor.advance(0)
    assert not sink.files or sink.files[0].closed
    os.close(fd)
    assert _open_fds() == fds


@pytest.fixture
def tcp_pair():
    """Both ends of a TCP connection on loopback (a round trip the kernel measured)."""
    listener = socket.create_server(("127.0.0.1", 0))
    theirs = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    theirs.sendall(b"x")
    ours.recv(1)
    ours.sendall(b"y")
    theirs.recv(1)
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.mark.parametrize("max_rtt_us, spliced", [(None, True), (0, False)])
def test_only_a_near_origin_s_body_is_spliced(tmp_path, tcp_pair, monkeypatch, max_rtt_us,
                                              spliced):
    """Over loopback (a round trip of some microseconds) the body is spliced;
    from an origin farther than SPLICE_MAX_RTT_US its connection is kept
    and the body read the usual way."""
    import appliance.cache.origin as origin_module
    from appliance.cache.body_splice import round_trip_us
    ours, _theirs = tcp_pair
    assert 0 <= round_trip_us(ours) < origin_module.SPLICE_MAX_RTT_US
    if max_rtt_us is not None:
        monkeypatch.setattr(origin_module, "SPLICE_MAX_RTT_US", max_rtt_us)
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    body = _Body(0, SPLICE_BYTES, _FileSink(fd), reactor, 10.0, framed=True)
    _connect(body, tcp)
    reactor.advance(0)
    assert (not tcp.reading and body._splice is not None) is spliced
    splice = body._splice
    body.done.addErrback(lambda _f: None)
    body.done.cancel()
    if splice is not None:
        reactor.run(lambda: splice.finished.called)
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    os.close(fd)


@pytest.mark.parametrize("case", ["tls", "short", "plain sink", "writing", "chunked"])
def test_tls_short_chunked_bodies_and_plain_sinks_are_read_the_usual_way(tmp_path, pair, case):
    """Under TLS the socket holds ciphertext, in a chunked body chunk sizes
    sit between the bytes: neither may go to the file as it is."""
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    sink = (lambda off, data: None) if case == "plain sink" else _FileSink(fd)
    if case == "writing":
        reactor.writers.append(tcp)
    length = SPLICE_BYTES - 1 if case == "short" else SPLICE_BYTES
    body = _Body(0, length, sink, reactor, 10.0, framed=case != "chunked")
    body.makeConnection(_Proxy(_Tls(tcp) if case == "tls" else tcp))
    reactor.advance(0)
    assert tcp.reading and body._splice is None
    body.dataReceived(b"x" * length)
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == length
    os.close(fd)


def test_a_spliced_body_that_came_whole_with_the_headers_leaves_the_connection_reading(
        tmp_path, pair):
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    fds = _open_fds()
    sink = _FileSink(fd)
    body = _Body(0, SPLICE_BYTES, sink, reactor, 10.0, framed=True)
    _connect(body, tcp, b"x" * SPLICE_BYTES)
    reactor.advance(0)                  # nothing is left to splice: no thread
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == SPLICE_BYTES
    assert tcp.reading and not sink.files           # back to the pool, reading
    assert _open_fds() == fds
    os.close(fd)


def test_a_sink_that_wants_bytes_read_the_usual_way_gets_them_so(tmp_path, pair):
    """A sequential read's sink drops the bytes it holds already: it
    refuses a splice (splice_file answers None) and the transport reads."""
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)

    class Skipping(_FileSink):
        def splice_file(self, offset):
            return None
    body = _Body(0, SPLICE_BYTES, Skipping(fd), reactor, 10.0, framed=True)
    _connect(body, tcp)
    reactor.advance(0)
    assert tcp.reading and body._splice is None and not body._spliced
    body.dataReceived(b"x" * SPLICE_BYTES)
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == SPLICE_BYTES
    os.close(fd)


def _splice(reactor, sock, tmp_path):
    """A BodySplice of ``sock`` into a new file: (it, its sink, what it said)."""
    said: list = []
    sink = _FileSink(os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT))
    splice = BodySplice(reactor, sock.fileno(), lambda n: said.append(("moved", n)),
                        lambda: said.append(("ended",)), lambda e: said.append(("failed", e)))
    return splice, sink, said


def test_a_splice_takes_no_more_than_wanted(tmp_path, pair):
    ours, theirs = pair
    reactor = _Reactor()
    splice, sink, said = _splice(reactor, ours, tmp_path)
    theirs.sendall(b"0123456789abc")
    splice.start(sink.splice_file(100), 100, 10)
    reactor.run(lambda: splice.finished.called)
    assert said == [("moved", 10)] and sink.calls == [("spliced", 100, 10)]
    assert os.pread(sink.fd, 10, 100) == b"0123456789"
    assert ours.recv(16) == b"abc"      # still the socket's
    os.close(sink.fd)


def test_a_splice_says_when_the_socket_ended_first(tmp_path, pair):
    ours, theirs = pair
    reactor = _Reactor()
    splice, sink, said = _splice(reactor, ours, tmp_path)
    splice.start(sink.splice_file(0), 0, 100)
    theirs.sendall(b"0123456789abc")
    theirs.close()
    reactor.run(lambda: splice.finished.called)
    assert sum(n for kind, n in said[:-1]) == 13 and said[-1] == ("ended",)
    os.close(sink.fd)


def test_a_stopped_splice_says_nothing_more_and_closes_what_it_opened(tmp_path, pair):
    ours, theirs = pair
    reactor = _Reactor()
    fds = _open_fds()
    splice, sink, said = _splice(reactor, ours, tmp_path)
    splice.start(sink.splice_file(0), 0, 100)
    splice.stop()
    theirs.sendall(b"0123456789")
    theirs.shutdown(socket.SHUT_WR)
    reactor.run(lambda: splice.finished.called)
    assert said == [] and sink.files[0].closed
    os.close(sink.fd)
    assert _open_fds() == fds
    splice.stop()                       # twice: nothing
    never = BodySplice(reactor, ours.fileno(), None, None, None)
    never.stop()                        # never started: closed at once
    assert never.finished.called and _open_fds() == fds


def test_a_splice_s_end_is_known_even_if_its_caller_fails(tmp_path, pair):
    """A callback that raises (a defect of the caller) does not keep the
    file open or the fill waiting for a thread that ended."""
    ours, theirs = pair
    reactor = _Reactor()
    sink = _FileSink(os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT))

    def ended() -> None:
        raise ValueError("a defect in the caller")
    splice = BodySplice(reactor, ours.fileno(), lambda n: None, ended, lambda e: None)
    splice.start(sink.splice_file(0), 0, 100)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ValueError):
        reactor.run(lambda: splice.finished.called)
    assert splice.finished.called and sink.files[0].closed
    os.close(sink.fd)


def test_a_splice_thread_s_defect_ends_the_request_with_it(tmp_path, pair):
    ours, theirs = pair
    reactor = _Reactor()
    splice, sink, said = _splice(reactor, ours, tmp_path)

    class Broken(_SpliceFile):
        def write(self, pipe, offset, size):
            raise ValueError("a defect")
    theirs.sendall(b"x" * 10)
    splice.start(Broken(sink), 0, 10)
    reactor.run(lambda: splice.finished.called)
    assert len(said) == 1 and said[0][0] == "failed" and isinstance(said[0][1], ValueError)
    os.close(sink.fd)


def _new_fill(tmp_path, ts_file):
    """A fill of ``ts_file`` (a file:// origin) just created, its probe's
    bytes stored: (the file's bytes, the probe's head, its size, the fill,
    its catalog)."""
    data = open(ts_file, "rb").read()
    url = f"file://{ts_file}"
    head, size, validator = FileOrigin(None)._read(url, 0, 64 * 1024, None)
    cat = open_catalog(str(tmp_path / "catalog.db"))
    fill = TitleFill.create(Probe(url, size, validator, head), title=None, now=0.0,
                            reactor=None, catalog=cat, origin=None, name="t.ts",
                            folder=str(tmp_path / "t"), settings=FillSettings())
    return data, head, size, fill, cat


def test_the_fill_s_file_takes_spliced_bytes_and_refuses_them_once_stopped(tmp_path, ts_file):
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    try:
        sink = fill._sink(fill._generation)
        file = sink.splice_file(len(head))
        assert fill._splices == [file.closed]        # the fill waits for it to close
        piece = data[len(head):len(head) + 188 * 300]     # fits a pipe
        read, write = os.pipe()
        os.write(write, piece)
        at = len(head)
        while at < len(head) + len(piece):          # in the splice's thread
            at += file.write(read, at, len(head) + len(piece) - at)
        assert fill.contiguous() == len(head)       # written, not counted yet
        file.wrote(len(head), len(piece))           # in the reactor
        assert fill.contiguous() == len(head) + len(piece)
        assert os.pread(fill._fd, len(piece), len(head)) == piece
        fill._generation += 1             # the title changed: this request's bytes are not wanted
        with pytest.raises(CacheWriteError):
            file.wrote(len(head) + len(piece), 10)
        with pytest.raises(CacheWriteError):
            sink.splice_file(len(head) + len(piece))
        assert fill.contiguous() == len(head) + len(piece)
        error = file.failed(OSError(errno.ENOSPC, "No space left on device"))
        assert isinstance(error, CacheWriteError) and "No space left" in str(error)
        fill._close_files()               # the fill closes its own descriptor...
        os.write(write, b"y" * 10)
        assert file.write(read, 0, 10) == 10   # ... the thread's is its own
        file.close()
        file.close()
        assert not fill._splices and file.closed.called
        os.close(read)
        os.close(write)
    finally:
        fill._close_files()
        cat.close()


@pytest.mark.parametrize("settle", ["_settle_quietly", "_settle"])
def test_a_fill_that_stops_or_completes_waits_for_its_splice_threads(tmp_path, ts_file,
                                                                     settle):
    """Before it closes its files (a stop, a start over) and before it
    records the title complete (its file's mtime), a fill waits for every
    splice thread to have written its last byte."""
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    try:
        file = fill._sink(fill._generation).splice_file(len(head))
        settled = defer.Deferred.fromCoroutine(getattr(fill, settle)())
        assert not settled.called
        file.close()
        assert settled.called
    finally:
        fill._close_files()
        cat.close()


def test_start_writeback_hands_written_bytes_to_the_disk(tmp_path):
    from rtpengine._kvod_engine import lib
    from rtpengine.engine import start_writeback
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, b"x" * 100_000, 0)
        assert start_writeback(fd, 0, 100_000)
        assert not start_writeback(fd, 0, 0)
        # the C entry point refuses what names no bytes, and a bad descriptor
        assert lib.kvod_file_writeback(fd, -1, 10) == -errno.EINVAL
        assert lib.kvod_file_writeback(fd, 2**63 - 5, 10) == -errno.EINVAL
        assert lib.kvod_file_writeback(-1, 0, 10) == -errno.EINVAL
    finally:
        os.close(fd)
    assert lib.kvod_file_writeback(fd, 0, 10) == -errno.EBADF


@pytest.fixture
def writeback_starts(monkeypatch) -> list[tuple[int, int]]:
    """The (offset, size) of each write-back a fill starts, one every three
    pieces of 188 * 100 bytes."""
    import appliance.cache.fill as fill_module
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(fill_module, "start_writeback",
                        lambda fd, offset, size: started.append((offset, size)) or True)
    monkeypatch.setattr(fill_module, "WRITEBACK_BYTES", 3 * 188 * 100)
    return started


def test_a_spliced_request_starts_its_write_back_every_few_mib(tmp_path, ts_file,
                                                               writeback_starts):
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    try:
        file = fill._sink(fill._generation).splice_file(len(head))
        read, write = os.pipe()
        at, piece = len(head), 188 * 100
        for _ in range(7):
            os.write(write, data[at:at + piece])
            assert file.write(read, at, piece) == piece
            at += piece
        assert writeback_starts == [(len(head), 3 * piece), (len(head) + 3 * piece, 3 * piece)]
        file.close()
        os.close(read)
        os.close(write)
    finally:
        fill._close_files()
        cat.close()


def test_a_request_s_bytes_start_their_writeback_every_few_mib(tmp_path, ts_file,
                                                               writeback_starts):
    started = writeback_starts
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    try:
        sink = fill._sink(fill._generation)
        at, piece = len(head), 188 * 100
        for _ in range(7):
            sink(at, data[at:at + piece])
            at += piece
        # in order: one start every three pieces, each over the three
        assert started == [(len(head), 3 * piece), (len(head) + 3 * piece, 3 * piece)]
        far = size - 3 * piece               # a new request elsewhere: counted anew
        sink(far, data[far:far + 2 * piece])
        assert len(started) == 2
        assert fill.contiguous() == at
    finally:
        fill._close_files()
        cat.close()


_STEPS = st.lists(st.one_of(st.tuples(st.just("send"), st.integers(1, 300_000)),
                            st.tuples(st.sampled_from(["close", "stop", "refuse", "turn"]))),
                  max_size=8)


@settings(max_examples=25, deadline=None)
@given(want=st.integers(1, 600_000), steps=_STEPS)
def test_a_splice_under_any_order_of_events_counts_only_what_it_wrote(tmp_path_factory, want,
                                                                      steps):
    """Bytes sent, the socket's end, a stop and a file that refuses, in any
    order against the thread: what was counted is in the file, in order,
    never more than wanted; nothing is said after a stop or after the one
    ending; the thread ends and closes everything it opened."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    reactor = _Reactor()
    fds = _open_fds()
    splice, sink, said = _splice(reactor, ours, tmp_path_factory.mktemp("splice"))
    offset, sent, stopped_at = 777, bytearray(), None
    splice.start(sink.splice_file(offset), offset, want)
    for step in steps:
        if step[0] == "send" and theirs.fileno() >= 0 and len(sent) < 1 << 20:
            data = os.urandom(step[1])
            theirs.sendall(data)
            sent += data
        elif step[0] == "close" and theirs.fileno() >= 0:
            theirs.close()
        elif step[0] == "stop":
            splice.stop()
            if stopped_at is None:
                stopped_at = len(said)
        elif step[0] == "refuse":
            sink.refuse = True
        else:
            reactor.advance(0)
            while not reactor.from_threads.empty():
                f, args = reactor.from_threads.get()
                f(*args)
    if stopped_at is None and theirs.fileno() >= 0 and len(sent) < want:
        theirs.close()          # else the splice would wait for bytes that never come
    reactor.run(lambda: splice.finished.called)
    counted = sum(n for kind, *rest in said if kind == "moved" for n in rest)
    assert counted <= min(want, len(sent))
    assert os.pread(sink.fd, counted, offset) == bytes(sent[:counted])
    endings = [s for s in said if s[0] in ("ended", "failed")]
    assert len(endings) <= 1
    if endings:
        assert said[-1] is endings[0]          # nothing after the ending
    if stopped_at is not None:
        assert len(said) == stopped_at         # nothing said after the stop
    if stopped_at is None and not sink.refuse and counted < want:
        assert endings == [("ended",)]         # the socket ended first: said so
    assert sink.files[0].closed
    os.close(sink.fd)
    ours.close()
    if theirs.fileno() >= 0:
        theirs.close()
    assert _open_fds() == fds - 2


@pytest.mark.parametrize("how", ["spliced", "read"])
def test_a_request_begun_for_a_file_since_replaced_counts_no_byte(tmp_path, ts_file, how):
    """The title changed at the origin and the fill starts over in a new
    file, in the same generation (after its back-off and probe), while an
    extra request (a viewer's seek) begun before that is still answered:
    its bytes, maybe the old version's, count as held in neither file (a
    splice thread's went to the old file: the new one holds zeros there)."""
    from appliance.cache.origin import FileOrigin, Probe
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    url = f"file://{ts_file}"
    _h, _s, validator = FileOrigin(None)._read(url, 0, 64 * 1024, None)
    read, write = os.pipe()
    try:
        sink = fill._sink(fill._generation)
        file = sink.splice_file(len(head)) if how == "spliced" else None
        fill._close_files()                  # _restart_copy: a new file, same generation
        fill.held, fill.durable = [], []
        fill._start_copy(Probe(url, size, validator, head))
        held = list(fill.held)               # the new probe's head
        piece = data[len(head):len(head) + 188 * 300]
        if how == "spliced":
            os.write(write, piece)
            at = len(head)
            while at < len(head) + len(piece):   # the thread writes the old file
                at += file.write(read, at, len(head) + len(piece) - at)
            with pytest.raises(CacheWriteError):
                file.wrote(len(head), len(piece))
            file.close()
        else:
            with pytest.raises(CacheWriteError):
                sink(len(head), piece)
        assert fill.held == held == [(0, len(head))]
    finally:
        os.close(read)
        os.close(write)
        fill._close_files()
        cat.close()
