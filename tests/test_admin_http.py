"""The admin listener against hostile requests: the real daemon, urllib with
forged Host, Origin and Sec-Fetch-Site headers, on loopback; and off
loopback in a network namespace of its own (an address on its private lo)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers.daemon import ROOT, KvodDaemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, short_ts_file):
    folder = tmp_path_factory.mktemp("admin")
    daemon = KvodDaemon(str(folder))
    for name in ("a", "b", "c"):
        daemon.add(short_ts_file, name)
    daemon.start()
    yield daemon
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def call(daemon, method: str, path: str, data: bytes | None = None,
         **headers) -> tuple[int, dict | bytes]:
    """(status, JSON or bytes) of a request to the admin listener."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    req = urllib.request.Request(f"http://127.0.0.1:{daemon.admin_port}{path}",
                                 method=method, headers=headers,
                                 data=data if data is not None else
                                 (b"" if method == "POST" else None))
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def state_of(daemon, name: str) -> str:
    titles = {t["name"]: t for t in call(daemon, "GET", "/cache")[1]["titles"]}
    return titles[name]["state"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/status"), ("GET", "/metrics"), ("GET", "/cache"), ("HEAD", "/status"),
    ("POST", "/cache/evict?name=a"), ("POST", "/cache/prefetch?name=a"),
])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.2:{port}",
                                  "localhost.evil.example:{port}"])
def test_a_host_the_listener_does_not_answer_for_is_421(daemon, method, path, host):
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its
    own name as Host; nothing is served to it, nothing is done for it."""
    status, body = call(daemon, method, path, Host=host.format(port=daemon.admin_port))
    assert status == 421, body
    if method != "HEAD":
        assert "Host" in body["error"] and "session" not in json.dumps(body)
    assert state_of(daemon, "a") == "complete"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.1"])
def test_the_listeners_own_names_are_served(daemon, host):
    status, body = call(daemon, "GET", "/status", Host=host.format(port=daemon.admin_port))
    assert status == 200 and "sessions" in body


def test_the_server_header_names_no_version(daemon):
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/status",
                                timeout=10) as reply:
        assert reply.headers["Server"] == "kvod"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:{port}"},
])
@pytest.mark.parametrize("path", ["/cache/evict?name=b", "/cache/prefetch?name=b"])
def test_cross_origin_writes_are_403_and_change_nothing(daemon, headers, path):
    """A page in the operator's browser may send a POST it cannot read the
    answer to: the write is refused, and the title stays cached."""
    headers = {k: v.format(port=daemon.admin_port) for k, v in headers.items()}
    status, body = call(daemon, "POST", path, **headers)
    assert status == 403, body
    assert "cross-origin" in body["error"]
    assert state_of(daemon, "b") == "complete"


def test_a_same_origin_write_and_the_cli_still_work(daemon):
    port = daemon.admin_port
    status, body = call(daemon, "POST", "/cache/evict?name=c",
                        Origin=f"http://127.0.0.1:{port}", Sec_Fetch_Site="same-origin")
    assert status == 200 and body["name"] == "c", body
    assert state_of(daemon, "c") != "complete"
    result = daemon.kvod("cache", "evict", "a", check=False)
    assert result.returncode == 0 and "evicted a" in result.stdout, result.stderr


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_methods_other_than_get_head_post_are_405(daemon, method):
    for path in ("/status", "/cache/evict?name=b", "/cache"):
        status, _ = call(daemon, method, path)
        assert status == 405, (method, path)
    assert state_of(daemon, "b") == "complete"


def test_writes_are_only_by_post(daemon):
    status, _ = call(daemon, "GET", "/cache/evict?name=b")
    assert status == 404
    assert state_of(daemon, "b") == "complete"


def test_a_large_body_is_refused_unread(daemon):
    """No endpoint takes a body: a large one is answered 413 and the
    connection closed, without buffering it."""
    port = daemon.admin_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /cache/evict?name=b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 10000000000\r\n\r\n" + b"x" * 65536)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /cache/evict?name=b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        deadline = time.monotonic() + 10
        reply = b""
        try:
            while not reply and time.monotonic() < deadline:
                s.sendall(b"4000\r\n" + b"y" * 0x4000 + b"\r\n")
                s.settimeout(0.05)
                try:
                    reply = s.recv(4096)
                except socket.timeout:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            reply = reply or s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    assert state_of(daemon, "b") == "complete"
    # a small body is fine
    assert call(daemon, "POST", "/cache/prefetch?name=nothing", data=b"{}")[0] == 404


def test_a_long_query_string_is_refused_without_harm(daemon):
    # Twisted caps the request line at 16 KiB and drops the connection
    with pytest.raises(http.client.RemoteDisconnected):
        call(daemon, "GET", "/status?" + "x" * 20000)
    status, _ = call(daemon, "POST", "/cache/evict?name=" + "n" * 300)
    assert status == 404
    assert call(daemon, "GET", "/status")[0] == 200


def test_the_token_file_is_made_0640_in_its_configured_place(daemon):
    path = os.path.join(daemon.folder, "admin.token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    with open(path) as f:
        assert len(f.read().strip()) >= 32


# -- off loopback: a network namespace whose lo also holds 10.77.0.1 ------------

NETNS_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys, urllib.error, urllib.request
    sys.path.insert(0, {root!r})
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"], check=True)
    from tests.helpers.daemon import KvodDaemon
    from appliance.bench.rtsp_client import RtspClient
    d = KvodDaemon({folder!r}, admin_listen="tcp:{{port}}:interface=10.77.0.1")
    d.add({ts!r}, "a")
    d.add({ts!r}, "b")  # "a" is busy with the session below
    if {broken!r}:  # a token file that cannot be made or read
        os.mkdir(os.path.join({folder!r}, "admin.token"))
    d.start()
    out = {{}}
    def call(method, path, **headers):
        req = urllib.request.Request(f"http://10.77.0.1:{{d.admin_port}}{{path}}", method=method,
                                     headers=headers, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    try:
        client = RtspClient("127.0.0.1", d.port)
        url = client.url("a")
        session, _, _ = client.setup_udp(url + "/trackID=0", (40000, 40001))
        out["session"] = session
        token = "" if {broken!r} else \\
            open(os.path.join({folder!r}, "admin.token")).read().strip()
        out["status"] = call("GET", "/status")
        out["metrics"] = call("GET", "/metrics")
        out["status_token"] = call("GET", "/status", Authorization="Bearer " + token)
        out["evict"] = call("POST", "/cache/evict?name=b")
        out["evict_wrong"] = call("POST", "/cache/evict?name=b", Authorization="Bearer nope")
        out["cli_status"] = d.kvod("status", "--json", check=False).stdout
        evict = d.kvod("cache", "evict", "b", check=False)
        out["cli_evict"], out["cli_evict_error"] = evict.returncode, evict.stderr
        client.close()
    finally:
        out["stop"] = d.stop()
        out["log"] = d.log()
    print(json.dumps(out))
""")


def run_off_loopback(folder, ts_file: str, broken_token: bool = False) -> dict:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a network namespace")
    script = NETNS_SCRIPT.format(root=ROOT, folder=str(folder), ts=ts_file,
                                 broken=broken_token)
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_off_loopback_writes_need_the_token_and_readers_see_no_session_id(tmp_path,
                                                                          short_ts_file):
    out = run_off_loopback(tmp_path, short_ts_file)
    session = out["session"]
    status, body = out["status"]
    assert status == 200 and session not in body and json.loads(body)["sessions"]
    status, body = out["metrics"]
    assert status == 200 and session not in body and "kvod_sent_packets_total" in body
    status, body = out["status_token"]
    assert status == 200 and json.loads(body)["sessions"][0]["id"] == session
    assert out["evict"][0] == 401 and out["evict_wrong"][0] == 401
    # the CLI reads the token from the config's token_file and sends it
    assert json.loads(out["cli_status"])["sessions"][0]["id"] == session
    assert out["cli_evict"] == 0, out["cli_evict_error"]
    assert out["stop"] == 0 and "Traceback" not in out["log"]
    assert not [line for line in out["log"].splitlines() if "WARNING" in line]


def test_off_loopback_without_a_token_warns_at_start_and_refuses_writes(tmp_path,
                                                                        short_ts_file):
    out = run_off_loopback(tmp_path, short_ts_file, broken_token=True)
    warnings = [line for line in out["log"].splitlines()
                if "WARNING" in line and "not on loopback" in line]
    assert len(warnings) == 1 and "writes (prefetch, evict) are refused" in warnings[0]
    assert out["evict"][0] == 403 and out["cli_evict"] == 1
    assert "the admin token could not be set up" in out["cli_evict_error"]
    assert out["session"] not in out["status"][1]
    assert out["stop"] == 0 and "Traceback" not in out["log"]


def test_a_refused_request_is_logged_with_its_bytes_escaped(daemon):
    with socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=10) as s:
        s.sendall(b"GET /status?\x1b[2J\x1b]0;owned\x07 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 421 ")
    deadline = time.monotonic() + 10
    while "owned" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = [l for l in daemon.log().splitlines() if "owned" in l]
    assert "\x1b" not in line and "\x07" not in line and "\\x1b[2J" in line
