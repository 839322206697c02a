"""RTSPS: RTSP over TLS with RTP interleaved on the TLS connection, against
real players (ffmpeg and GStreamer speak rtsps://, and only over TCP)."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from tests.helpers.daemon import KvodDaemon, free_tcp_port, tracebacks, wait_listening
from tests.helpers.players import framemd5, gst_finished, gst_receive, sha256
from appliance.bench.rtsps import self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file):
    folder = str(tmp_path_factory.mktemp("rtsps"))
    key, cert = self_signed(folder)
    port = free_tcp_port()
    d = KvodDaemon(folder, rtsp=f'tls_listen = "ssl:{port}:interface=127.0.0.1:'
                                f'privateKey={key}:certKey={cert}"\n')
    d.tls_port = port
    d.add(ts_file, "movie")
    d.start()
    wait_listening(port, 15)
    yield d
    assert d.stop() == 0, d.log()
    assert not tracebacks(d.log())


def rtsps_url(daemon: KvodDaemon, name: str) -> str:
    return f"rtsps://127.0.0.1:{daemon.tls_port}/{name}"


def test_ffmpeg_over_rtsps_receives_every_frame(daemon, ts_file):
    # ffmpeg does not verify certificates unless asked to
    received = framemd5(rtsps_url(daemon, "movie"), timeout=40)
    assert received == framemd5(ts_file)


def test_gstreamer_over_rtsps_receives_the_title_byte_for_byte(daemon, ts_file, tmp_path):
    out = str(tmp_path / "gst.ts")
    started = time.monotonic()
    proc = gst_receive(rtsps_url(daemon, "movie"), out, protocols="tcp")
    output, _ = proc.communicate(timeout=40)
    assert gst_finished(proc, output), output.decode(errors="replace")
    assert sha256(out) == sha256(ts_file)
    assert time.monotonic() - started > 8      # paced: a 10 s title


def test_the_tls_port_speaks_only_tls_and_plain_rtsp_stays_as_it_was(daemon):
    with socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5) as plain:
        plain.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        try:
            answer = plain.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"RTSP/1.0")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", daemon.tls_port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert tls.recv(100).startswith(b"RTSP/1.0 200 OK")


def _tls_request(port: int, data: bytes) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(data)
        return tls.recv(4096)


def test_basic_authentication_is_taken_over_rtsps_only(tmp_path, ts_file):
    """Basic sends the password itself: kvod takes it on a TLS connection
    and answers it 401 on a plain one (Digest works on both)."""
    if shutil.which("htdigest") is None:
        pytest.skip("htdigest (apache2-utils) is not installed: make deps")
    folder = str(tmp_path)
    subprocess.run(["htdigest", "-c", f"{folder}/users.htdigest", "kvod", "alice"],
                   input="wonder\nwonder\n", text=True, check=True, capture_output=True)
    key, cert = self_signed(folder)
    port = free_tcp_port()
    d = KvodDaemon(folder, rtsp=f'tls_listen = "ssl:{port}:interface=127.0.0.1:'
                               f'privateKey={key}:certKey={cert}"\n',
                   extra='\n[auth]\nhtdigest_file = "users.htdigest"\n')
    d.add(ts_file, "movie")
    d.start()
    try:
        wait_listening(port, 15)
        basic = "Basic " + base64.b64encode(b"alice:wonder").decode()
        request = (f"DESCRIBE {{url}} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: {basic}\r\n"
                   "Accept: application/sdp\r\n\r\n")
        answer = _tls_request(port, request.format(url=f"rtsps://127.0.0.1:{port}/movie")
                              .encode())
        assert answer.startswith(b"RTSP/1.0 200 OK"), answer
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as plain:
            plain.sendall(request.format(url=d.url("movie")).encode())
            assert plain.recv(4096).startswith(b"RTSP/1.0 401 ")
    finally:
        assert d.stop() == 0, d.log()
