"""A response body spliced from the origin's socket into the fill's file
(``appliance.cache.body_splice``): the bytes land where they belong, a body
cut off halfway goes back to the transport, which ends the response with
what it says, TLS and short bodies are read the usual way, and a fill
that stopped takes no byte more.

A socket pair stands in for the origin's connection, a fake reactor for
the reactor's readers: no network, no running reactor.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed

from appliance.cache.body_splice import PIPE_BYTES, BodySplice
from appliance.cache.fill import CacheWriteError, FillSettings, TitleFill
from appliance.cache.origin import SPLICE_BYTES, FileOrigin, OriginProtocolError, Probe, _Body
from catalog import open_catalog


class _Reactor(Clock):
    """A clock with the reactor's readers."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list = []
        self.writers: list = []

    def addReader(self, reader) -> None:  # noqa: N802 (Twisted API)
        self.readers.append(reader)

    def removeReader(self, reader) -> None:  # noqa: N802 (Twisted API)
        self.readers.remove(reader)

    def getWriters(self) -> list:  # noqa: N802 (Twisted API)
        return self.writers


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


class _FileSink:
    """A sink into a file that also takes bytes from a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.calls: list[tuple[str, int, int]] = []
        self.refuse = False

    def __call__(self, offset: int, data: bytes) -> None:
        self.calls.append(("data", offset, len(data)))
        os.pwrite(self.fd, data, offset)

    def from_pipe(self, pipe: int, offset: int, size: int) -> None:
        if self.refuse:
            raise CacheWriteError("the disk is full")
        self.calls.append(("pipe", offset, size))
        at = offset
        while at < offset + size:
            at += os.splice(pipe, self.fd, offset + size - at, offset_dst=at)


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
        sock.sendall(data)
        if close:
            sock.shutdown(socket.SHUT_WR)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _pump(reactor: _Reactor, body: _Body, rounds: int = 100000) -> None:
    """Run the reactor's readers until the body is done or no reader is left."""
    import select
    for _ in range(rounds):
        if body.done.called or not reactor.readers:
            return
        for reader in list(reactor.readers):
            select.select([reader.fileno()], [], [], 1.0)
            reader.doRead()


def test_a_long_body_is_spliced_into_the_file_at_its_offset(tmp_path, pair):
    ours, theirs = pair
    data = os.urandom(SPLICE_BYTES + 12345)
    start = 1000
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(ours)
    body = _Body(start, len(data), sink, reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    assert not tcp.reading and len(reactor.readers) == 1   # the splice reads the socket
    body.dataReceived(data[:5000])      # what Twisted read with the headers
    sender = _send_in_thread(theirs, data[5000:] + b"NEXT", close=False)
    _pump(reactor, body)
    sender.join()
    assert tcp.aborted and not reactor.readers   # dropped: its parser never saw the body
    assert os.pread(fd, len(data), start) == data
    assert sink.calls[0] == ("data", start, 5000)
    assert all(kind == "pipe" and size <= PIPE_BYTES for kind, _, size in sink.calls[1:])
    assert ours.recv(16) == b"NEXT"     # not a byte past the body was taken
    # the parser, short of the body's bytes, ends the response as failed: not so
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    assert body.done.result == len(data)
    os.close(fd)


def test_a_spliced_body_cut_off_goes_back_to_the_transport(tmp_path, pair):
    ours, theirs = pair
    data = os.urandom(SPLICE_BYTES)
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    body = _Body(0, len(data) * 2, _FileSink(fd), reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    sender = _send_in_thread(theirs, data, close=True)
    _pump(reactor, body)
    sender.join()
    assert tcp.reading and not reactor.readers    # the transport reads the end itself
    assert not body.done.called
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    error = body.done.result.value
    body.done.addErrback(lambda _f: None)
    assert isinstance(error, OriginProtocolError) and error.received == len(data)
    assert os.pread(fd, len(data), 0) == data
    os.close(fd)


def test_a_sink_that_refuses_spliced_bytes_ends_the_request(tmp_path, pair):
    ours, theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    sink, reactor, tcp = _FileSink(fd), _Reactor(), _Tcp(ours)
    sink.refuse = True
    body = _Body(0, SPLICE_BYTES, sink, reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    sender = _send_in_thread(theirs, b"x" * 65536, close=False)
    _pump(reactor, body, rounds=1)
    sender.join()
    assert tcp.disconnected and not reactor.readers
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    error = body.done.result.value
    body.done.addErrback(lambda _f: None)
    assert isinstance(error, CacheWriteError) and error.received == 0
    os.close(fd)


def test_a_cancel_stops_the_splice(tmp_path, pair):
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    body = _Body(0, SPLICE_BYTES, _FileSink(fd), reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    body.done.addErrback(lambda _f: None)
    body.done.cancel()
    assert tcp.disconnected and not reactor.readers
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    os.close(fd)


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
    body = _Body(0, SPLICE_BYTES, _FileSink(fd), reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    assert (not tcp.reading and len(reactor.readers) == 1) is spliced
    body.done.addErrback(lambda _f: None)
    body.done.cancel()
    body.connectionLost(Failure(ResponseFailed([Failure(ConnectionError())])))
    os.close(fd)


@pytest.mark.parametrize("case", ["tls", "short", "plain sink", "writing"])
def test_tls_short_bodies_and_plain_sinks_are_read_the_usual_way(tmp_path, pair, case):
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    sink = (lambda off, data: None) if case == "plain sink" else _FileSink(fd)
    if case == "writing":
        reactor.writers.append(tcp)
    length = SPLICE_BYTES - 1 if case == "short" else SPLICE_BYTES
    body = _Body(0, length, sink, reactor, 10.0)
    body.makeConnection(_Proxy(_Tls(tcp) if case == "tls" else tcp))
    assert tcp.reading and not reactor.readers
    body.dataReceived(b"x" * length)
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == length
    os.close(fd)


def test_a_spliced_body_that_came_whole_with_the_headers_leaves_the_connection_reading(
        tmp_path, pair):
    ours, _theirs = pair
    fd = os.open(tmp_path / "media", os.O_RDWR | os.O_CREAT)
    reactor, tcp = _Reactor(), _Tcp(ours)
    body = _Body(0, SPLICE_BYTES, _FileSink(fd), reactor, 10.0)
    body.makeConnection(_Proxy(tcp))
    body.dataReceived(b"x" * SPLICE_BYTES)
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == SPLICE_BYTES
    assert tcp.reading and not reactor.readers      # back to the pool, reading
    os.close(fd)


def test_a_splice_stops_reading_at_the_end_of_the_socket(pair):
    ours, theirs = pair
    ended, moved = [], []
    reactor = _Reactor()
    splice = BodySplice(reactor, ours.fileno(), lambda: 10, lambda pipe, n: moved.append(
        os.read(pipe, n)), lambda: ended.append(True))
    splice.start()
    theirs.sendall(b"0123456789abc")
    splice.doRead()
    assert moved == [b"0123456789"]      # no more than wanted
    theirs.close()
    splice.doRead()
    assert moved == [b"0123456789", b"abc"] and not ended
    splice.doRead()
    assert ended == [True]
    splice.stop()
    assert not reactor.readers


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


def test_the_fill_takes_bytes_from_a_pipe_and_refuses_them_once_stopped(tmp_path, ts_file):
    data, head, size, fill, cat = _new_fill(tmp_path, ts_file)
    try:
        sink = fill._sink(fill._generation)
        piece = data[len(head):len(head) + 188 * 300]     # fits a pipe
        read, write = os.pipe()
        os.write(write, piece)
        sink.from_pipe(read, len(head), len(piece))
        assert fill.contiguous() == len(head) + len(piece)
        assert os.pread(fill._fd, len(piece), len(head)) == piece
        fill._generation += 1             # the title changed: this request's bytes are not wanted
        os.write(write, b"x" * 10)
        with pytest.raises(CacheWriteError):
            sink.from_pipe(read, len(head) + len(piece), 10)
        assert fill.contiguous() == len(head) + len(piece)
        os.close(read)
        os.close(write)
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


def test_a_request_s_bytes_start_their_writeback_every_few_mib(tmp_path, ts_file, monkeypatch):
    import appliance.cache.fill as fill_module
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(fill_module, "start_writeback",
                        lambda fd, offset, size: started.append((offset, size)) or True)
    monkeypatch.setattr(fill_module, "WRITEBACK_BYTES", 3 * 188 * 100)
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
