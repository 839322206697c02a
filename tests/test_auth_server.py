"""The auth gate in front of the sans-IO RTSP server: an in-memory catalog
and media backend, time passed in by the test."""

from __future__ import annotations

import pytest

from appliance.auth import AccessRules, NonceStore, RtspGate, parse_htdigest
from appliance.auth.digest import ha1
from appliance.rtsp import Request, parse_session
from appliance.rtsp.sessions import RtspServer
from catalog import open_catalog
from tests.helpers.memory_media import SECOND, MemoryMedia
from tests.helpers.rtsp_auth import challenge_params, digest_authorization

BASE = "rtsp://127.0.0.1:8554"
TRACK0 = dict(track_index=0, media_type="video", codec="MP2T", payload_type=33,
              clock_rate=90000, hint_path="/nonexistent/track0.hint", packets=10)


@pytest.fixture
def media():
    return MemoryMedia()


@pytest.fixture
def server(media):
    db = open_catalog(None)
    for name in ("movie", "public/trailer"):
        db.add_title(name, container="mpegts", media_path="/nonexistent/media.ts",
                     duration_ns=10 * SECOND, size=1000, state="complete", now=0.0,
                     tracks=[TRACK0])
    server = RtspServer(titles=db, media=media, session_timeout=60, max_sessions=3)
    users = parse_htdigest(f"alice:kvod:{ha1('MD5', 'alice', 'kvod', 'wonder')}")
    server.auth = RtspGate(users, "kvod", AccessRules.parse(["/public/ open"]),
                           NonceStore(lifetime=30))
    yield server
    db.close()


class Client:
    def __init__(self, server, connection="127.0.0.1 40000"):
        self.server, self.connection, self.cseq, self.now = server, connection, 0, 1000.0
        self.challenge = None
        self.nc = 0

    def __call__(self, method, url, *headers, password=None):
        self.cseq += 1
        if password is not None:
            self.nc += 1
            headers += (("Authorization", digest_authorization(
                self.challenge, "alice", password, method, url, nc=self.nc)),)
        req = Request(method, url, (("CSeq", str(self.cseq)),) + tuple(headers))
        resp = self.server.handle_request(req, peer_host="127.0.0.1", now=self.now,
                                          connection=self.connection)
        assert resp.headers.get("CSeq") == str(self.cseq)
        if resp.status == 401:
            self.challenge = resp.headers.get("WWW-Authenticate")
            self.nc = 0
        return resp


def test_a_viewer_logs_in_and_plays(server, media):
    c = Client(server)
    assert c("OPTIONS", "*").status == 200
    assert c("DESCRIBE", f"{BASE}/movie").status == 401
    assert c("DESCRIBE", f"{BASE}/movie", password="wonder").status == 200
    setup = c("SETUP", f"{BASE}/movie/trackID=0",
              ("Transport", "RTP/AVP;unicast;client_port=5000-5001"), password="wonder")
    assert setup.status == 200
    session = ("Session", parse_session(setup.headers.get("Session"))[0])
    assert c("PLAY", f"{BASE}/movie", session, password="wonder").status == 200
    assert media.opened and media.opened[0][-1].playing
    # a keep-alive without credentials is refused and does not touch the session
    assert c("GET_PARAMETER", f"{BASE}/movie", session).status == 401


def test_wrong_password_opens_no_stream(server, media):
    c = Client(server)
    c("DESCRIBE", f"{BASE}/movie")
    resp = c("SETUP", f"{BASE}/movie/trackID=0",
             ("Transport", "RTP/AVP;unicast;client_port=5000-5001"), password="guess")
    assert resp.status == 401 and not media.opened and not server.sessions
    assert server.auth.failures["bad_credentials"] == 1


def test_stale_nonce_gets_stale_true(server):
    c = Client(server)
    c("DESCRIBE", f"{BASE}/movie")
    c.now += 31
    resp = c("DESCRIBE", f"{BASE}/movie", password="wonder")
    assert resp.status == 401
    assert challenge_params(resp.headers.get("WWW-Authenticate"))["stale"] == "true"
    assert c("DESCRIBE", f"{BASE}/movie", password="wonder").status == 200


def test_replay_on_another_connection_is_refused(server):
    c = Client(server)
    c("DESCRIBE", f"{BASE}/movie")
    c.cseq += 1
    auth = digest_authorization(c.challenge, "alice", "wonder", "DESCRIBE", f"{BASE}/movie")
    req = Request("DESCRIBE", f"{BASE}/movie", (("CSeq", "9"), ("Authorization", auth)))
    ok = server.handle_request(req, peer_host="127.0.0.1", now=c.now, connection=c.connection)
    assert ok.status == 200
    assert server.handle_request(req, peer_host="127.0.0.1", now=c.now,
                                 connection=c.connection).status == 401
    assert server.handle_request(req, peer_host="127.0.0.1", now=c.now,
                                 connection="127.0.0.1 40001").status == 401


def test_open_prefix_needs_no_credentials(server):
    c = Client(server)
    assert c("DESCRIBE", f"{BASE}/public/trailer").status == 200


def test_no_gate_means_no_auth(server):
    server.auth = None
    assert Client(server)("DESCRIBE", f"{BASE}/movie").status == 200
