"""The origin client's checks that need no network: Content-Range parsing,
validators and If-Range, the file:// origin's reads and change detection
(the HTTP paths run against nginx and the fault server in the integration
tests)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.cache.origin import (FileOrigin, OriginChanged, OriginNotFound, OriginProtocolError,
                              Validator, parse_content_range)


@pytest.mark.parametrize("value, want", [
    ("bytes 0-99/1000", (0, 100, 1000)),
    ("bytes 900-999/1000", (900, 1000, 1000)),
    ("bytes 5-5/*", (5, 6, None)),
    (" bytes 0-0/1 ", (0, 1, 1)),
])
def test_content_range(value, want):
    assert parse_content_range(value) == want


@pytest.mark.parametrize("value", [
    None, "", "bytes 10-5/100", "bytes 0-100/100", "bytes */100", "items 0-1/2",
    "bytes 0-1/2, 4-5/6", "bytes -1-5/10", "bytes 0-99/abc",
])
def test_bad_content_range(value):
    with pytest.raises(OriginProtocolError, match="Content-Range"):
        parse_content_range(value)


@given(st.text(max_size=40))
def test_content_range_parses_or_refuses(text):
    try:
        start, end, size = parse_content_range(text)
    except OriginProtocolError:
        return
    assert 0 <= start < end and (size is None or end <= size)


def test_validators_and_if_range():
    strong = Validator('"abc"', "Mon, 01 Jan 2024 00:00:00 GMT")
    assert strong.if_range() == '"abc"'
    weak = Validator('W/"abc"', "Mon, 01 Jan 2024 00:00:00 GMT")
    assert weak.if_range() == "Mon, 01 Jan 2024 00:00:00 GMT"  # RFC 7233: never weak
    assert Validator().if_range() is None
    assert strong.matches(Validator('"abc"'))
    assert strong.matches(Validator(None, "Mon, 01 Jan 2024 00:00:00 GMT"))
    assert not strong.matches(Validator('"abd"'))
    assert not strong.matches(Validator(None, "Tue, 02 Jan 2024 00:00:00 GMT"))
    assert Validator().matches(Validator('"x"'))


def test_file_origin_reads_and_notices_a_change(tmp_path):
    path = tmp_path / "t.ts"
    path.write_bytes(bytes(range(256)) * 4)
    origin = FileOrigin(reactor=None)
    url = f"file://{path}"
    data, size, validator = origin._read(url, 0, 100, None)
    assert (data, size) == (bytes(range(100)), 1024)
    assert origin._read(url, 1000, 1024, validator)[0] == bytes(range(232, 256))
    os.utime(path, ns=(1, 1))
    with pytest.raises(OriginChanged):
        origin._read(url, 0, 10, validator)
    with pytest.raises(OriginNotFound):
        origin._read(f"file://{tmp_path}/none.ts", 0, 10, None)
    with pytest.raises(OriginNotFound):
        FileOrigin.path_of("file://elsewhere/x.ts")
    fresh = origin._read(url, 0, 1, None)[2]
    with pytest.raises(OriginChanged, match="shorter"):
        origin._read(url, 1000, 2000, fresh)


class _Tcp:
    """What the body sees of a TCP transport: its read size."""

    bufferSize = 1 << 16

    def loseConnection(self) -> None:
        pass


class _Proxy:
    """Agent's proxy of the connection's transport, as a body protocol gets it."""

    def __init__(self, under) -> None:
        self._producer = under

    def loseConnection(self) -> None:
        pass


class _Tls:
    """TLS over TCP: the TCP transport is one level further down."""

    def __init__(self, tcp) -> None:
        self.transport = tcp


@pytest.mark.parametrize("tls", [False, True])
def test_a_body_is_read_wide_and_the_next_headers_narrow(tls):
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseDone

    from appliance.cache.origin import READ_BYTES, _Body

    tcp, got = _Tcp(), []
    body = _Body(100, 10, lambda off, data: got.append((off, data)), Clock(), 10.0)
    body.makeConnection(_Proxy(_Tls(tcp) if tls else tcp))
    assert tcp.bufferSize == READ_BYTES
    body.dataReceived(b"0123456789")
    body.connectionLost(Failure(ResponseDone()))
    assert tcp.bufferSize == 1 << 16          # the pooled connection reads headers narrow
    assert got == [(100, b"0123456789")] and body.done.result == 10


def test_a_body_without_a_tcp_transport_under_it_reads_as_before():
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseDone

    from appliance.cache.origin import _Body

    body = _Body(0, 3, lambda off, data: None, Clock(), 10.0)
    body.makeConnection(_Proxy(None))
    body.dataReceived(b"abc")
    body.connectionLost(Failure(ResponseDone()))
    assert body.done.result == 3
