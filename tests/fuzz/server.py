"""The sans-IO RTSP server under fuzz: one harness that sends requests and
checks the invariants after each, driven three ways (per input by the
``rtsp_server`` target, by hypothesis's state machine, by a seeded random
walk in the long campaign).

With ``gated``, an auth gate protects one title and requests carry good,
wrong, replayed, garbage or no credentials: one without good ones never
gets a protected title's 2xx nor opens its stream.

Invariants, after every request: it got exactly one response, with a
status from 100 to 599 that is not 500 (the server turns a bug into 500),
its CSeq echoed, bytes that parse back as that one response; a SETUP
answered 200 names a session; no more sessions than the limit; every
opened stream is either closed or held by a live session (nothing leaks),
and no live session holds a closed stream.
"""

from __future__ import annotations

import functools
import random

from appliance.auth import AccessRules, NonceStore, RtspGate, parse_htdigest
from appliance.auth.digest import ha1
from appliance.rtsp import Request, Response, RTSPConnection, parse_session
from appliance.rtsp.session_states import SessionState
from appliance.rtsp.sessions import RtspServer
from catalog import open_catalog
from tests.helpers.memory_media import SECOND, MemoryMedia

BASE = "rtsp://127.0.0.1:8554"
MAX_SESSIONS = 3
TIMEOUT = 60.0
METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER",
           "SET_PARAMETER", "RECORD", "FOO")
TITLES = ("movie", "av", "nosuch", "filling")
TRANSPORTS = (None, "RTP/AVP;unicast;client_port=5000-5001", "RTP/AVP/UDP;client_port=6000",
              "RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP;multicast",
              "RTP/AVP;unicast;client_port=0-1", "RTP/AVP;unicast;client_port=70000-70001",
              "RTP/SAVP;unicast;client_port=5000-5001", "garbage;;;", "RTP/AVP;unicast")
RANGES = (None, "npt=0-", "npt=3.5-", "npt=99-", "npt=now-", "npt=5-2", "smpte=0:0:0-", "x")
PEERS = ("127.0.0.1", "127.0.0.2")
# with a gate: "av" needs alice's password, the rest is open
CREDENTIALS = (None, "good", "good", "replay", "wrong", "garbage")
PROTECTED = "av"
BAD_SESSIONS = ("", "x", "0123456789ABCDEF", "A" * 200, "12345678;timeout=x")


def _track(index: int, media_type: str, codec: str, pt: int) -> dict:
    return dict(track_index=index, media_type=media_type, codec=codec, payload_type=pt,
                clock_rate=90000, hint_path=f"/nonexistent/track{index}.hint", packets=10)


class ServerHarness:
    """An RtspServer on an in-memory catalog and media, and its checks."""

    def __init__(self, gated: bool = False) -> None:
        """``gated``: the server asks an auth gate first (``CREDENTIALS``)."""
        self.gated = gated
        self.catalog = open_catalog(None)
        self.catalog.add_title("movie", container="mpegts", media_path="/nonexistent/m.ts",
                               duration_ns=10 * SECOND, size=1000, state="complete", now=0.0,
                               tracks=[_track(0, "video", "MP2T", 33)])
        self.catalog.add_title("av", container="mp4", media_path="/nonexistent/av.mp4",
                               duration_ns=10 * SECOND, size=1000, state="complete", now=0.0,
                               tracks=[_track(0, "video", "H264", 96),
                                       _track(1, "audio", "MPEG4-GENERIC", 97)])
        self.catalog.add_title("filling", container="mpegts", state="partial", now=0.0)
        self.reset()

    def reset(self) -> None:
        """A fresh server and media on the same catalog."""
        self.media = MemoryMedia()
        self.server = RtspServer(titles=self.catalog, media=self.media,
                                 session_timeout=TIMEOUT, max_sessions=MAX_SESSIONS)
        self.now = 1000.0
        self.cseq = 0
        self.issued: list[str] = []   # every session id answered, live or not
        self.requests = 0
        self.challenges: dict[str, str] = {}   # peer: its last WWW-Authenticate
        self.counts: dict[str, int] = {}       # peer: the nc it used last
        self.last_good: dict[str, str] = {}    # peer: its last good Authorization
        if self.gated:
            users = parse_htdigest(f"alice:kvod:{ha1('MD5', 'alice', 'kvod', 'wonder')}")
            self.server.auth = RtspGate(users, "kvod", AccessRules.parse(["/ open",
                                                                          f"/{PROTECTED}/ any"]),
                                        NonceStore(lifetime=TIMEOUT, capacity=8))

    def close(self) -> None:
        """Tear everything down and check nothing stayed open."""
        self.server.close_all()
        assert not self.server.sessions
        assert all(stream.closed for *_, stream in self.media.opened)
        self.catalog.close()

    # -- one step --------------------------------------------------------------

    def answer(self, request: Request, peer: str = PEERS[0],
               credential: str | None = None) -> Response:
        """Hand ``request`` to the server and check the invariants;
        ``credential`` says what its Authorization is (see ``CREDENTIALS``)."""
        self.requests += 1
        opened = len(self.media.opened)
        response = self.server.handle_request(request, peer_host=peer, now=self.now,
                                              connection=f"{peer} 554")
        assert isinstance(response, Response), response
        assert 100 <= response.status <= 599 and response.status != 500, response
        assert response.headers.get("CSeq") == request.headers.get("CSeq").strip(" \t"), (
            request, response)
        # exactly one response on the wire, and it reads back as itself
        client = RTSPConnection("client")
        (echo,) = client.receive_data(RTSPConnection("server").send(response))
        assert (echo.status, echo.cseq) == (response.status, response.cseq)
        if request.method == "SETUP" and response.status == 200:
            self.issued.append(parse_session(response.headers.get("Session"))[0])
        if self.gated:
            self._check_gate(request, response, peer, credential, opened)
        self.check_sessions()
        return response

    def _check_gate(self, request: Request, response: Response, peer: str,
                    credential: str | None, opened: int) -> None:
        """Without good credentials, a protected title gives nothing away."""
        if response.status == 401:
            self.challenges[peer] = response.headers.get("WWW-Authenticate")
            self.counts[peer] = 0
        protected = request.target.startswith(f"{BASE}/{PROTECTED}")
        if protected and request.method != "OPTIONS" and credential != "good":
            assert response.status in (400, 401, 403), (credential, request, response)
            assert len(self.media.opened) == opened, "a stream opened without a login"
        if credential == "good" and response.status != 401:
            self.last_good[peer] = request.headers.get("Authorization")

    def _authorization(self, credential: str | None, peer: str, method: str,
                       url: str) -> str | None:
        from tests.helpers.rtsp_auth import digest_authorization
        challenge = self.challenges.get(peer)
        if credential == "garbage":
            return 'Digest username="alice", ,,, nc=zz'
        if credential == "replay":
            return self.last_good.get(peer)
        if credential in ("good", "wrong") and challenge is not None:
            self.counts[peer] += 1
            password = "wonder" if credential == "good" else "wonder!"
            return digest_authorization(challenge, "alice", password, method, url,
                                        nc=self.counts[peer])
        return None

    def request(self, method: str, title: str, track: int | None, session: object,
                transport: str | None, rng: str | None, peer: str, wait: float,
                credential: str | None = None) -> Response:
        """Build one request from the drawn choices (``session``: None, an
        index into the ids issued so far, or a bad value; ``credential``
        one of ``CREDENTIALS``) and send it."""
        self.tick(wait)
        self.cseq += 1
        url = f"{BASE}/{title}" + (f"/trackID={track}" if track is not None else "")
        headers = [("CSeq", str(self.cseq))]
        if isinstance(session, int) and self.issued:
            headers.append(("Session", self.issued[session % len(self.issued)]))
        elif isinstance(session, str) and session:
            headers.append(("Session", session))
        if transport is not None:
            headers.append(("Transport", transport))
        if rng is not None:
            headers.append(("Range", rng))
        authorization = self._authorization(credential, peer, method, url)
        if authorization is None:
            credential = None  # e.g. "good" before any challenge: nothing to answer
        else:
            headers.append(("Authorization", authorization))
        return self.answer(Request(method, url, headers), peer, credential)

    def tick(self, wait: float) -> None:
        """Let ``wait`` seconds pass and run the server's timer."""
        self.now += wait
        self.server.handle_timer(self.now)
        self.check_sessions()

    def check_sessions(self) -> None:
        """Sessions within the limit, live ones open and fresh, nothing leaked."""
        sessions = self.server.sessions
        assert len(sessions) <= MAX_SESSIONS
        live = set()
        for session in sessions.values():
            assert session.state in (SessionState.READY, SessionState.PLAYING), session
            assert session.last_seen + TIMEOUT > self.now
            for stream in session.streams.values():
                assert not stream.closed
                live.add(id(stream))
        for *_, stream in self.media.opened:
            assert stream.closed != (id(stream) in live), "a stream leaked or was closed live"

    # -- a seeded random walk (the long campaign) --------------------------------

    def walk(self, rng: random.Random, steps: int) -> int:
        """``steps`` random requests and timer ticks, then a fresh server;
        returns the requests sent."""
        for _ in range(steps):
            if rng.random() < 0.1:
                self.tick(rng.choice((1.0, 30.0, 61.0)))
                continue
            session: object = rng.choice((None, rng.randrange(8), rng.choice(BAD_SESSIONS)))
            self.request(rng.choice(METHODS), rng.choice(TITLES),
                         rng.choice((None, 0, 1, 2)), session, rng.choice(TRANSPORTS),
                         rng.choice(RANGES), rng.choice(PEERS), rng.choice((0.0, 0.5, 20.0)),
                         rng.choice(CREDENTIALS) if self.gated else None)
        self.server.close_all()
        self.check_sessions()
        sent = self.requests
        self.reset()
        return sent


@functools.lru_cache(maxsize=None)
def server_harness(gated: bool = False) -> ServerHarness:
    """One harness (of each kind) per process for the per-input target (a
    catalog is slow to open; ``reset`` gives each input a fresh server)."""
    return ServerHarness(gated)
