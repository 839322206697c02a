"""The flash crowd's client (appliance.bench.crowd_client): its reply
reader, its handling of a server that refuses or vanishes, and the CPU
clock the control benchmarks read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.bench.crowd_client import Crowd, ReplyError, parse_reply
from appliance.bench.daemon import cpu_seconds

import pytest

SDP = b"v=0\r\ns=x\r\n"


def test_a_reply_is_whole_with_its_body_and_names_its_session():
    reply = (b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 0a1B;timeout=60\r\n"
             b"Content-Length: %d\r\n\r\n" % len(SDP)) + SDP
    assert parse_reply(reply + b"RTSP/1.0") == (200, "0a1B", len(reply))
    assert parse_reply(reply[:-1]) is None           # body not all there
    assert parse_reply(reply[:20]) is None           # head not all there


def test_header_names_are_read_in_any_case():
    reply = b"RTSP/1.0 454 Nope\r\nsession: abc\r\ncontent-length: 0\r\n\r\n"
    assert parse_reply(reply) == (454, "abc", len(reply))


def test_what_is_not_rtsp_is_an_error():
    with pytest.raises(ReplyError):
        parse_reply(b"HTTP/1.1 200 OK\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_reply_an_incomplete_one_or_a_reply_error(data):
    try:
        reply = parse_reply(data)
    except ReplyError:
        return
    if reply is not None:
        status, _, used = reply
        assert 0 <= status <= 999 and 0 < used <= len(data)


def _crowd_against(answer: bytes, sessions: int) -> list[str]:
    """The failures of ``sessions`` viewers against a loopback server that
    answers each connection's first request with ``answer`` and closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        for _ in range(sessions):
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(answer)
    threading.Thread(target=serve, daemon=True).start()
    crowd = Crowd(listener.getsockname()[1], "t", sessions=sessions, concurrency=2)
    try:
        return crowd.run(timeout=5).failures
    finally:
        crowd.close()
        listener.close()


def test_a_refusing_server_fails_each_viewer_with_its_status():
    assert _crowd_against(b"RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n", 3) == \
        ["DESCRIBE answered 404"] * 3


def test_a_server_that_hangs_up_fails_the_viewer_not_the_crowd():
    assert _crowd_against(b"", 2) == ["the server closed the connection"] * 2


def test_no_server_fails_every_viewer_within_the_timeout():
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()  # nothing listens there now
    crowd = Crowd(free, "t", sessions=4, concurrency=4)
    try:
        result = crowd.run(timeout=2)
    finally:
        crowd.close()
    assert len(result.failures) == 4
    assert all("ECONNREFUSED" in why for why in result.failures), result.failures


def test_cpu_seconds_counts_what_a_process_spends_below_a_tick():
    busy = subprocess.Popen([sys.executable, "-c",
                             "import sys, time\n"
                             "t = time.process_time() + 0.005\n"
                             "while time.process_time() < t: pass\n"
                             "sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert busy.stdout.read(1) == b"x"
        spent = cpu_seconds(busy.pid)
        assert 0.005 <= spent < 5, spent
    finally:
        busy.stdin.close()
        busy.wait(10)
    with pytest.raises(ProcessLookupError):
        cpu_seconds(busy.pid)


def test_cpu_seconds_of_this_process_grows():
    # a thread that runs is brought up to date at the scheduler's next
    # tick (4 ms at most here): spend several of them
    before = cpu_seconds(os.getpid())
    until = time.process_time() + 0.03
    while time.process_time() < until:
        pass
    assert cpu_seconds(os.getpid()) > before
