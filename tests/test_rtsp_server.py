"""The RTSP session layer, sans-IO: a real in-memory catalog, an in-memory
media backend, and time passed in by the test."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.rtsp import Request, parse_range, parse_rtp_info, parse_session, parse_transport
from appliance.rtsp.sessions import RtspServer, parse_title_url, RtspFailure
from appliance.rtsp.session_states import SessionState
from catalog import open_catalog
from tests.helpers.memory_media import SECOND, MemoryMedia, movie_catalog

HOST = "127.0.0.1"
BASE = "rtsp://127.0.0.1:8554"


@pytest.fixture
def catalog():
    db = movie_catalog()
    db.add_title("filling", container="mpegts", state="partial", now=0.0)
    yield db
    db.close()


@pytest.fixture
def media():
    return MemoryMedia()


@pytest.fixture
def server(catalog, media):
    return RtspServer(titles=catalog, media=media, session_timeout=60, max_sessions=3)


class Client:
    """Builds requests with increasing CSeq."""

    def __init__(self, server):
        self.server = server
        self.cseq = 0
        self.now = 1000.0

    def __call__(self, method, url, *headers, body=b"", peer=HOST):
        self.cseq += 1
        req = Request(method, url, (("CSeq", str(self.cseq)),) + tuple(headers), body)
        resp = self.server.handle_request(req, peer_host=peer, now=self.now)
        assert resp.headers.get("CSeq") == str(self.cseq)
        return resp

    def setup(self, url=f"{BASE}/movie/trackID=0", transport=None):
        if transport is None:
            # a viewer's own ports: two sessions of one host never share them
            port = 5000 + 2 * self.cseq
            transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
        resp = self("SETUP", url, ("Transport", transport))
        assert resp.status == 200, resp
        return parse_session(resp.headers.get("Session"))[0], resp


@pytest.fixture
def client(server):
    return Client(server)


def test_options_lists_methods(client):
    resp = client("OPTIONS", "*")
    assert resp.status == 200
    public = resp.headers.get("Public")
    for method in ("DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER"):
        assert method in public


def test_describe_answers_sdp(client, catalog):
    resp = client("DESCRIBE", f"{BASE}/movie", ("Accept", "application/sdp"))
    assert resp.status == 200
    assert resp.headers.get("Content-Type") == "application/sdp"
    assert resp.headers.get("Content-Base") == f"{BASE}/movie/"
    sdp = resp.body.decode()
    assert "a=range:npt=0-10.000" in sdp
    assert "m=video 0 RTP/AVP 33" in sdp
    assert "a=rtpmap:33 MP2T/90000" in sdp
    assert "a=control:trackID=0" in sdp
    assert catalog.get_title("movie").hits == 1


def test_describe_builds_a_title_description_once_and_anew_when_the_title_changes(
        catalog, media):
    from catalog.title_cache import TitleCache

    class BatchedHits(TitleCache):
        """As in the daemon, where the cache quota writes hits in batches."""

        def record_hit(self, name, now):
            pass
    client = Client(RtspServer(titles=BatchedHits(catalog), media=media))

    def describe(host="127.0.0.1"):
        return client("DESCRIBE", f"rtsp://{host}:8554/movie").body

    first = describe()
    assert describe() is first                      # the same title: the same bytes
    other_host = describe("192.0.2.1")
    assert b"IN IP4 192.0.2.1" in other_host and b"IN IP4 127.0.0.1" in first
    # a change in the catalog is a new title object, and a new description
    catalog.update_title("movie", duration_ns=20 * SECOND)
    assert b"a=range:npt=0-20.000" in describe()


@pytest.mark.parametrize("name", ["nothing", "filling", "movie/trackID=7/x"])
def test_describe_unknown_or_unready_title_is_404(client, name):
    assert client("DESCRIBE", f"{BASE}/{name}").status == 404


def test_describe_refuses_other_formats(client):
    assert client("DESCRIBE", f"{BASE}/movie", ("Accept", "text/html")).status == 406


def test_setup_creates_session(client, media):
    session, resp = client.setup()
    sid, timeout = parse_session(resp.headers.get("Session"))
    assert timeout == 60
    spec = parse_transport(resp.headers.get("Transport"))[0]
    assert spec.client_port == (5000, 5001)
    assert spec.server_port == media.opened[0][3].server_ports
    assert spec.ssrc == 0x1234ABCD
    assert media.opened[0][1] == HOST


@pytest.mark.parametrize("transport", [
    "RTP/AVP/TCP;unicast;interleaved=0-1",
    "RTP/AVP;multicast;port=5000-5001",
    "RTP/AVP;unicast",                      # no client_port
    "RTP/AVP;unicast;client_port=5000-5001;destination=10.1.2.3",  # not the client
    "garbage;;;",
    "RTP/SAVP;unicast;client_port=5000-5001",
])
def test_setup_bad_transport_is_461(client, media, transport):
    resp = client("SETUP", f"{BASE}/movie/trackID=0", ("Transport", transport))
    assert resp.status == 461
    assert not media.opened


def test_setup_picks_first_supported_alternative(client):
    _, resp = client.setup(transport="RTP/AVP/TCP;unicast;interleaved=0-1,"
                                     "RTP/AVP;unicast;client_port=6000-6001")
    assert parse_transport(resp.headers.get("Transport"))[0].client_port == (6000, 6001)


def test_setup_without_transport_is_461(client):
    assert client("SETUP", f"{BASE}/movie/trackID=0").status == 461


def test_setup_of_missing_track_is_404(client):
    assert client("SETUP", f"{BASE}/movie/trackID=3",
                  ("Transport", "RTP/AVP;unicast;client_port=5000-5001")).status == 404


def test_setup_with_unknown_session_is_454(client):
    resp = client("SETUP", f"{BASE}/movie/trackID=0", ("Session", "DEADBEEFDEADBEEF"),
                  ("Transport", "RTP/AVP;unicast;client_port=5000-5001"))
    assert resp.status == 454


def test_setup_when_backend_has_no_ports_is_453(catalog):
    server = RtspServer(titles=catalog, media=MemoryMedia(fail=True))
    client = Client(server)
    resp = client("SETUP", f"{BASE}/movie/trackID=0",
                  ("Transport", "RTP/AVP;unicast;client_port=5000-5001"))
    assert resp.status == 453
    assert not server.sessions


def test_session_limit_is_453(client):
    for _ in range(3):
        client.setup()
    resp = client("SETUP", f"{BASE}/movie/trackID=0",
                  ("Transport", "RTP/AVP;unicast;client_port=5000-5001"))
    assert resp.status == 453


@pytest.mark.parametrize("method", ["PLAY", "PAUSE", "TEARDOWN"])
def test_methods_need_a_known_session(client, method):
    assert client(method, f"{BASE}/movie/").status == 454
    assert client(method, f"{BASE}/movie/", ("Session", "0123456789ABCDEF")).status == 454
    assert client(method, f"{BASE}/movie/", ("Session", "bad id with spaces")).status == 454


def test_play_seeks_to_keyframe_at_or_before(client, media):
    session, _ = client.setup()
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Range", "npt=5-"))
    assert resp.status == 200
    rng = parse_range(resp.headers.get("Range"))
    assert rng.start == 4.0 and rng.end == 10.0
    info = parse_rtp_info(resp.headers.get("RTP-Info"))
    assert len(info) == 1
    assert info[0][0] == f"{BASE}/movie/trackID=0"
    assert info[0][1:] == (100, 4 * 90000)
    stream = media.opened[0][3]
    assert stream.playing and stream.next_record == 4


def test_play_past_the_end_is_457(client):
    session, _ = client.setup()
    assert client("PLAY", f"{BASE}/movie/", ("Session", session),
                  ("Range", "npt=11-")).status == 457
    assert client("PLAY", f"{BASE}/movie/", ("Session", session),
                  ("Range", "smpte=0:00:01-")).status == 457


def test_pause_and_resume_continue_sequence(client, media, server):
    session, _ = client.setup()
    client("PLAY", f"{BASE}/movie/", ("Session", session), ("Range", "npt=0-"))
    stream = media.opened[0][3]
    stream.advance(50)
    assert client("PAUSE", f"{BASE}/movie/", ("Session", session)).status == 200
    assert not stream.playing
    assert server.sessions[session].state is SessionState.READY
    stream.advance(50)  # nothing is sent while paused
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session))
    assert resp.status == 200
    assert stream.playing
    assert parse_rtp_info(resp.headers.get("RTP-Info"))[0][1] == 150
    assert parse_range(resp.headers.get("Range")).start == 1.0


def test_play_while_playing_without_range_changes_nothing(client, media):
    session, _ = client.setup()
    client("PLAY", f"{BASE}/movie/", ("Session", session))
    stream = media.opened[0][3]
    stream.advance(10)
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session))
    assert resp.status == 200 and resp.headers.get("RTP-Info") is None
    assert stream.next_record == 1


def test_teardown_closes_streams_and_forgets_session(client, media, server):
    session, _ = client.setup()
    client("PLAY", f"{BASE}/movie/", ("Session", session))
    assert client("TEARDOWN", f"{BASE}/movie/", ("Session", session)).status == 200
    assert media.opened[0][3].closed
    assert session not in server.sessions
    assert client("PLAY", f"{BASE}/movie/", ("Session", session)).status == 454


def test_idle_session_is_reclaimed_after_timeout(client, media, server):
    session, _ = client.setup()
    client("PLAY", f"{BASE}/movie/", ("Session", session))
    assert server.get_timer() == client.now + 60
    client.now += 30
    assert client("GET_PARAMETER", f"{BASE}/movie/", ("Session", session)).status == 200
    assert server.get_timer() == client.now + 60
    server.handle_timer(client.now + 59)
    assert session in server.sessions
    server.touch(session, client.now + 50)  # an RTCP receiver report
    server.handle_timer(client.now + 100)
    assert session in server.sessions
    server.handle_timer(client.now + 111)
    assert session not in server.sessions
    assert media.opened[0][3].closed
    assert server.get_timer() is None


OTHER_HOST = "127.0.0.2"


@pytest.mark.parametrize("method,url,headers", [
    ("TEARDOWN", f"{BASE}/movie/", ()),
    ("PAUSE", f"{BASE}/movie/", ()),
    ("PLAY", f"{BASE}/movie/", (("Range", "npt=4-"),)),
    ("SETUP", f"{BASE}/movie/trackID=0",
     (("Transport", "RTP/AVP;unicast;client_port=7000-7001"),)),
    ("GET_PARAMETER", f"{BASE}/movie/", ()),
    ("OPTIONS", "*", ()),
])
def test_a_session_id_from_another_host_is_454_and_changes_nothing(client, media, server,
                                                                    method, url, headers):
    """An id seen in the admin status or a capture does not let another
    host tear down, move, re-target or keep alive a viewer's session."""
    session, _ = client.setup()
    assert client("PLAY", f"{BASE}/movie/", ("Session", session)).status == 200
    stream = media.opened[0][3]
    position = stream.position_ns()
    client.now += 30
    resp = client(method, url, ("Session", session), *headers, peer=OTHER_HOST)
    assert resp.status == 454
    assert session in server.sessions
    assert server.sessions[session].state is SessionState.PLAYING
    assert server.sessions[session].last_seen == client.now - 30  # not kept alive
    assert stream.playing and not stream.closed and stream.position_ns() == position
    assert len(media.opened) == 1  # no stream opened toward the stranger
    # the viewer itself goes on as before
    assert client("GET_PARAMETER", f"{BASE}/movie/", ("Session", session)).status == 200
    assert client("TEARDOWN", f"{BASE}/movie/", ("Session", session)).status == 200


def test_options_with_session_is_a_keepalive(client, server):
    session, _ = client.setup()
    client.now += 40
    assert client("OPTIONS", "*", ("Session", session)).status == 200
    assert server.sessions[session].last_seen == client.now


def test_unknown_and_unsupported_methods(client):
    assert client("FROBNICATE", f"{BASE}/movie").status == 501
    assert client("RECORD", f"{BASE}/movie").status == 405
    assert client("ANNOUNCE", f"{BASE}/movie").status == 405


def test_require_is_refused_with_unsupported(client):
    resp = client("DESCRIBE", f"{BASE}/movie", ("Require", "play.basic"))
    assert resp.status == 551
    assert resp.headers.get("Unsupported") == "play.basic"


def test_set_parameter_with_body_is_451(client):
    assert client("SET_PARAMETER", f"{BASE}/movie", ("Content-Type", "text/parameters"),
                  body=b"speed: 2\r\n").status == 451


@pytest.mark.parametrize("url,name,track", [
    ("rtsp://h/movie", "movie", None),
    ("rtsp://h:8554/movie/", "movie", None),
    ("rtsp://h/a/b/trackID=0", "a/b", 0),
    ("rtsp://h/a%2Db/trackID=12?x=1", "a-b", 12),
])
def test_parse_title_url(url, name, track):
    parsed = parse_title_url(url)
    assert (parsed.name, parsed.track) == (name, track)


@pytest.mark.parametrize("url", ["http://h/movie", "rtsp://h/", "rtsp://h/trackID=0",
                                 "*", "movie", "rtsp://h/m/trackID=x"])
def test_parse_title_url_rejects(url):
    with pytest.raises(RtspFailure):
        parse_title_url(url)


METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER",
           "FOO"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(METHODS), st.booleans(),
                                st.sampled_from([None, "npt=0-", "npt=3.5-", "npt=99-", "x"]),
                                st.floats(0, 100)), max_size=25))
def test_any_request_sequence_keeps_invariants(catalog, steps):
    """State x input: every request gets an RTSP status, sessions and streams
    stay consistent, nothing raises."""
    media = MemoryMedia()
    server = RtspServer(titles=catalog, media=media, session_timeout=60, max_sessions=2)
    client = Client(server)
    sessions: list[str] = []
    for method, with_session, rng, wait in steps:
        client.now += wait
        server.handle_timer(client.now)
        headers = []
        if with_session and sessions:
            headers.append(("Session", sessions[-1]))
        if method == "SETUP":
            headers.append(("Transport", "RTP/AVP;unicast;client_port=5000-5001"))
        if rng and method == "PLAY":
            headers.append(("Range", rng))
        url = f"{BASE}/movie/trackID=0" if method == "SETUP" else f"{BASE}/movie/"
        resp = client(method, url, *headers)
        assert 200 <= resp.status < 600
        if method == "SETUP" and resp.status == 200:
            sessions.append(parse_session(resp.headers.get("Session"))[0])
        for session in server.sessions.values():
            assert session.state in (SessionState.READY, SessionState.PLAYING)
            assert all(not s.closed for s in session.streams.values())
            assert session.last_seen + 60 > client.now
        live = {id(s) for sess in server.sessions.values() for s in sess.streams.values()}
        for _, _, _, stream in media.opened:
            assert stream.closed != (id(stream) in live)
            if stream.playing:
                assert id(stream) in live


def test_setup_passes_client_quirks(client, media):
    client("SETUP", f"{BASE}/movie/trackID=0", ("User-Agent", "Lavf59.27.100"),
           ("Transport", "RTP/AVP/UDP;unicast;client_port=5000-5001"))
    assert media.quirks.flush_pes_at_end
    client("SETUP", f"{BASE}/movie/trackID=0", ("User-Agent", "GStreamer/1.22.0"),
           ("Transport", "RTP/AVP;unicast;client_port=5002-5003"))
    assert not media.quirks.flush_pes_at_end


def test_another_sessions_client_ports_are_refused_and_freed_when_it_ends(client):
    """A second connection's SETUP to a playing viewer's ports would break
    that viewer (tried against a GStreamer viewer): 461, and the ports are
    free again once their session is gone."""
    held = "RTP/AVP;unicast;client_port=6000-6001"
    first, _ = client.setup(transport=held)
    for ports in ("6000-6001", "5999-6000", "6001-6002"):
        resp = client("SETUP", f"{BASE}/movie/trackID=0",
                      ("Transport", f"RTP/AVP;unicast;client_port={ports}"))
        assert resp.status == 461, ports
    # another host may use the same numbers: they are its own ports
    assert client("SETUP", f"{BASE}/movie/trackID=0", ("Transport", held),
                  peer="192.0.2.7").status == 200
    # the session itself may set its track up again on them
    assert client("SETUP", f"{BASE}/movie/trackID=0", ("Session", first),
                  ("Transport", held)).status == 200
    assert client("TEARDOWN", f"{BASE}/movie/", ("Session", first)).status == 200
    client.setup(transport=held)


def test_one_connection_or_one_address_cannot_take_every_session(catalog, media):
    server = RtspServer(titles=catalog, media=media, max_sessions=100,
                        max_sessions_per_connection=2, max_sessions_per_address=3)
    client = Client(server)

    def setup(connection, peer=HOST):
        client.cseq += 1
        port = 7000 + 2 * client.cseq
        req = Request("SETUP", f"{BASE}/movie/trackID=0",
                      (("CSeq", str(client.cseq)),
                       ("Transport", f"RTP/AVP;unicast;client_port={port}-{port + 1}")))
        return server.handle_request(req, peer_host=peer, now=client.now, connection=connection)

    assert [setup("c1").status for _ in range(3)] == [200, 200, 453]
    assert setup("c2").status == 200
    resp = setup("c3")                       # a third connection, same address
    assert resp.status == 453
    assert setup("c4", peer="192.0.2.9").status == 200
    assert server.sessions_on("c1") == 2
    # a session ending gives its place back
    victim = next(s for s in server.sessions.values() if s.connection == "c1")
    client("TEARDOWN", f"{BASE}/movie/", ("Session", victim.id))
    assert setup("c1").status == 200


def test_a_bug_in_a_handler_answers_500_and_keeps_the_session(catalog):
    class BrokenMedia(MemoryMedia):
        def open_stream(self, **kwargs):
            raise TypeError("a bug")
    server = RtspServer(titles=catalog, media=BrokenMedia())
    client = Client(server)
    resp = client("SETUP", f"{BASE}/movie/trackID=0",
                  ("Transport", "RTP/AVP;unicast;client_port=5000-5001"))
    assert resp.status == 500
    assert not server.sessions
    assert client("OPTIONS", "*").status == 200


@pytest.fixture
def mp4_client(catalog, media):
    catalog.add_title(
        "film", container="mp4", media_path="/nonexistent/media.ts", duration_ns=10 * SECOND,
        size=1000, state="complete", now=0.0,
        tracks=[dict(track_index=0, media_type="video", codec="H264", payload_type=96,
                     clock_rate=90000, fmtp="packetization-mode=1;profile-level-id=640014",
                     hint_path="/nonexistent/track0.hint", packets=10),
                dict(track_index=1, media_type="audio", codec="MPEG4-GENERIC",
                     payload_type=97, clock_rate=48000,
                     fmtp="streamtype=5;mode=AAC-hbr;sizelength=13;indexlength=3;"
                          "indexdeltalength=3;config=1190",
                     hint_path="/nonexistent/track1.hint", packets=10)])
    return Client(RtspServer(titles=catalog, media=media, session_timeout=60))


def test_describe_of_an_mp4_title_has_a_section_per_track(mp4_client):
    resp = mp4_client("DESCRIBE", f"{BASE}/film", ("Accept", "application/sdp"))
    sdp = resp.body.decode()
    assert "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" in sdp
    assert "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n" in sdp
    assert "a=control:trackID=0" in sdp and "a=control:trackID=1" in sdp


def test_seek_starts_every_track_at_the_first_tracks_keyframe(mp4_client, media):
    session, _ = mp4_client.setup(f"{BASE}/film/trackID=0")
    resp = mp4_client("SETUP", f"{BASE}/film/trackID=1",
                      ("Transport", "RTP/AVP;unicast;client_port=5002-5003"),
                      ("Session", session))
    assert resp.status == 200
    audio = media.opened[1][3]
    asked = []
    plain = audio.keyframe_at_or_before
    audio.keyframe_at_or_before = lambda npt: asked.append(npt) or plain(npt)
    resp = mp4_client("PLAY", f"{BASE}/film/", ("Session", session), ("Range", "npt=5-"))
    assert resp.status == 200
    # the video's keyframe is at 4 s: the audio starts there, not at 5 s
    assert asked == [4 * SECOND]
    assert parse_range(resp.headers.get("Range")).start == 4.0
    info = parse_rtp_info(resp.headers.get("RTP-Info"))
    assert [i[0] for i in info] == [f"{BASE}/film/trackID=0", f"{BASE}/film/trackID=1"]


def test_a_catalog_damaged_under_the_server_is_503_and_one_log_line(tmp_path, media, caplog):
    """The catalog file changes under a running daemon: requests get 503 and
    the log one line with advice, never a traceback."""
    import logging
    import sqlite3

    from sqlite_utils import Database

    from catalog import Catalog
    path = tmp_path / "catalog.db"
    with open_catalog(path) as db:
        for i in range(200):
            db.add_title(f"t{i}", container="mpegts", now=0.0,
                         origin_url="http://127.0.0.1:9/" + "a" * 200)
        db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.seek(2 * 4096)
        f.write(b"\xa5" * 3 * 4096)
    # a connection opened before the damage: no check at open stands between
    titles = Catalog(Database(sqlite3.connect(path)))
    server = RtspServer(titles=titles, media=media)
    caplog.set_level(logging.INFO)
    resp = Client(server)("DESCRIBE", f"{BASE}/t150")
    titles.close()
    assert resp.status == 503
    assert not [r for r in caplog.records if r.exc_info]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"catalog {path}: damaged" in line and "move it aside" in line


def test_a_range_end_is_passed_to_the_streams_and_echoed(client, media):
    session, _ = client.setup()
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Range", "npt=2-5"))
    assert resp.status == 200
    assert resp.headers.get("Range") == "npt=2.000-5.000"
    stream = media.opened[-1][3]
    assert stream.end_ns == 5 * SECOND
    # a later PLAY without an end plays to the title's end again
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Range", "npt=0-"))
    assert stream.end_ns is None and resp.headers.get("Range").startswith("npt=0.000-")


def test_a_range_end_before_where_the_stream_is_is_457(client, media):
    session, _ = client.setup()
    assert client("PLAY", f"{BASE}/movie/", ("Session", session),
                  ("Range", "npt=6-")).status == 200
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Range", "npt=now-3"))
    assert resp.status == 457


@pytest.mark.parametrize("asked, used", [("4", "4"), ("-4", "-4"), ("5", "4"), ("-1", "-2"),
                                         ("20", "8"), ("1", "1"), ("0.5", "1")])
def test_play_with_scale_asks_the_streams_and_echoes_the_scale_used(client, media, asked, used):
    session, _ = client.setup()
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Scale", asked),
                  ("Range", "npt=4-"))
    assert resp.status == 200 and resp.headers.get("Scale") == used
    assert media.opened[-1][3].scale == float(used)
    # a PLAY without Scale is back to normal play, where the stream is
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session))
    assert resp.status == 200 and media.opened[-1][3].scale == 1


def test_a_backwards_play_takes_its_range_from_the_later_time(client, media):
    """Scale -4 with ``npt=3-0`` (GStreamer's reverse seek) plays
    backwards from 3 s, and the reply's Range runs the same
    way; ``npt=0-3`` with a negative Scale is a range that goes forwards: 457."""
    session, _ = client.setup()
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Scale", "-4"),
                  ("Range", "npt=3-0"))
    assert resp.status == 200 and resp.headers.get("Scale") == "-4"
    assert resp.headers.get("Range").endswith("-0.000")
    assert media.opened[-1][3].scale == -4
    resp = client("PLAY", f"{BASE}/movie/", ("Session", session), ("Scale", "-4"),
                  ("Range", "npt=0-3"))
    assert resp.status == 457


@pytest.mark.parametrize("bad", ["0", "fast", "1e9", ""])
def test_a_bad_scale_is_400(client, bad):
    session, _ = client.setup()
    assert client("PLAY", f"{BASE}/movie/", ("Session", session), ("Scale", bad)).status == 400
