"""The admin listener's access policy, sans-IO: Host, origin, token, redaction;
and the token file the daemon makes and the CLI reads."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.admin_access import (AdminAccess, decide, host_allowed, redact_sessions,
                                    session_alias)
from appliance.admin_token import TokenError, load_or_create_token, read_token
from appliance.metrics import DaemonMetrics

TOKEN = "t" * 40
LOOPBACK = AdminAccess(names=frozenset({"kvod1.example.net"}), token=TOKEN)
PUBLIC = AdminAccess(names=frozenset({"kvod1.example.net"}), token=TOKEN, loopback_only=False)


def verdict(access, method="GET", peer="127.0.0.1", local="127.0.0.1", **headers):
    headers = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return decide(access, method=method, headers=headers, local_host=local, peer_host=peer)


@pytest.mark.parametrize("host,local,ok", [
    ("127.0.0.1:8555", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.1", True),
    ("localhost:8555", "127.0.0.1", True),
    ("LOCALHOST.", "127.0.0.1", True),
    ("kvod1.example.net:8555", "10.0.0.5", True),
    ("[::1]:8555", "::1", True),
    ("127.0.0.1:8555", "::ffff:127.0.0.1", True),   # IPv4 on a dual-stack socket
    ("10.0.0.5:8555", "10.0.0.5", True),
    ("evil.example:8555", "127.0.0.1", False),       # DNS rebinding
    ("127.0.0.2:8555", "127.0.0.1", False),          # another address than the listener's
    ("[::1]:8555", "127.0.0.1", False),
    ("localhost.evil.example", "127.0.0.1", False),
    ("kvod1.example.net.evil.example", "127.0.0.1", False),
    ("127.0.0.1, evil.example", "127.0.0.1", False),  # two Host headers, joined
    ("", "127.0.0.1", False),
    ("[::1", "::1", False),
    ("127.0.0.1:port", "127.0.0.1", False),
    (None, "127.0.0.1", True),                        # HTTP/1.0 tools; browsers send Host
])
def test_host_must_be_one_the_listener_answers_for(host, local, ok):
    assert host_allowed(host, local, LOOPBACK.names) is ok
    headers = {} if host is None else {"host": host}
    for path_method in ("GET", "HEAD", "POST"):
        result = decide(LOOPBACK, method=path_method, headers=headers, local_host=local,
                        peer_host=local)
        assert (result.status == 421) is (not ok), (host, path_method, result)


@pytest.mark.parametrize("headers,status", [
    ({"origin": "http://evil.example"}, 403),
    ({"origin": "null"}, 403),
    ({"origin": "http://127.0.0.1:8556"}, 403),      # another port: another origin
    ({"origin": "https://127.0.0.1:8555"}, 403),
    ({"sec-fetch-site": "cross-site"}, 403),
    ({"sec-fetch-site": "same-site"}, 403),           # a page on localhost:3000
    ({"origin": "http://127.0.0.1:8555", "sec-fetch-site": "cross-site"}, 403),
    ({"origin": "http://127.0.0.1:8555"}, 0),         # the admin's own page
    ({"origin": "http://127.0.0.1:8555", "sec-fetch-site": "same-origin"}, 0),
    ({"sec-fetch-site": "none"}, 0),                  # typed by the user
    ({}, 0),                                          # curl, kvod's CLI
])
def test_cross_origin_writes_are_refused(headers, status):
    result = verdict(LOOPBACK, "POST", host="127.0.0.1:8555", **headers)
    assert result.status == status, result
    # reads are not writes: a cross-origin page cannot read the answer anyway
    assert verdict(LOOPBACK, "GET", host="127.0.0.1:8555", **headers).status == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
                                    "PROPFIND", "get"])
def test_methods_other_than_get_head_post_are_405(method):
    assert verdict(LOOPBACK, method, host="127.0.0.1").status == 405


def test_off_loopback_writes_need_the_token():
    host = {"host": "10.0.0.5:8555"}
    kw = dict(local="10.0.0.5", peer="10.0.0.9")
    assert verdict(PUBLIC, "POST", **host, **kw).status == 401
    assert verdict(PUBLIC, "POST", **host, authorization="Bearer wrong", **kw).status == 401
    assert verdict(PUBLIC, "POST", **host, authorization="Basic " + TOKEN, **kw).status == 401
    good = verdict(PUBLIC, "POST", **host, authorization="Bearer " + TOKEN, **kw)
    assert good.status == 0 and good.full
    # even from loopback, to a listener that is not only on loopback
    assert verdict(PUBLIC, "POST", host="127.0.0.1", local="127.0.0.1").status == 401
    # a wrong token is refused for reads too, rather than quietly ignored
    assert verdict(PUBLIC, "GET", **host, authorization="Bearer wrong", **kw).status == 401


def test_off_loopback_without_a_token_writes_are_refused_unless_turned_off():
    broken = AdminAccess(token=None, loopback_only=False)
    assert verdict(broken, "POST", host="10.0.0.5", local="10.0.0.5", peer="10.0.0.9") \
        .status == 403
    open_ = AdminAccess(token=None, loopback_only=False, open_writes=True)
    assert verdict(open_, "POST", host="10.0.0.5", local="10.0.0.5", peer="10.0.0.9") \
        .status == 0


def test_only_loopback_or_authenticated_readers_see_session_ids():
    kw = dict(host="10.0.0.5:8555", local="10.0.0.5")
    assert verdict(PUBLIC, "GET", peer="10.0.0.9", **kw).full is False
    assert verdict(PUBLIC, "GET", peer="10.0.0.9", authorization="Bearer " + TOKEN,
                   **kw).full is True
    assert verdict(PUBLIC, "GET", peer="127.0.0.1", host="127.0.0.1",
                   local="127.0.0.1").full is True
    assert verdict(PUBLIC, "GET", peer="::ffff:127.0.0.1", host="127.0.0.1",
                   local="::ffff:127.0.0.1").full is True


def test_redacted_status_and_metrics_hold_no_session_id():
    status = {"uptime_s": 1.0, "engine": {"strategy": "gso", "requested_strategy": "auto",
                                          "fallback": None, "threads": 2},
              "sessions": [{"id": "2BF3B9AD8A795A3C", "title": "movie", "state": "playing",
                            "client": "10.0.0.9", "streams": {"0": {"packets_sent": 5}}},
                           {"id": "0123456789ABCDEF", "title": "movie", "state": "ready",
                            "client": "10.0.0.8", "streams": {"0": {"packets_sent": 0}}}]}
    secret = os.urandom(32)
    redacted = redact_sessions(status, secret)
    text = repr(redacted) + DaemonMetrics(lambda: redacted).text().decode()
    assert "2BF3B9AD8A795A3C" not in text and "0123456789ABCDEF" not in text
    aliases = [s["id"] for s in redacted["sessions"]]
    assert aliases == [session_alias(secret, "2BF3B9AD8A795A3C"),
                       session_alias(secret, "0123456789ABCDEF")]
    assert len(set(aliases)) == 2  # two sessions stay two
    assert status["sessions"][0]["id"] == "2BF3B9AD8A795A3C"  # the original is untouched


def test_token_file_is_made_0640_once_and_read_back(tmp_path):
    path = str(tmp_path / "sub" / "admin.token")
    old = os.umask(0o077)  # a strict umask must not take the group's read away
    try:
        token = load_or_create_token(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert len(token) >= 32 and load_or_create_token(path) == token
    assert read_token(path) == token
    assert read_token(str(tmp_path / "missing")) is None and read_token("") is None


@pytest.mark.parametrize("content", [b"", b"short\n", b"two words in it for sure\n",
                                     b"\xff" * 40, b"x" * 5000])
def test_a_token_file_without_a_usable_token_is_an_error(tmp_path, content):
    path = tmp_path / "admin.token"
    path.write_bytes(content)
    with pytest.raises(TokenError, match="no usable token"):
        load_or_create_token(str(path))
    assert read_token(str(path)) is None


def test_a_fifo_as_token_file_does_not_block(tmp_path):
    path = tmp_path / "admin.token"
    os.mkfifo(path)
    with pytest.raises(TokenError, match="not a plain file"):
        load_or_create_token(str(path))
    assert read_token(str(path)) is None
