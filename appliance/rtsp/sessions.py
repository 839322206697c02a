"""The RTSP server's session layer, sans-IO.

Fed parsed requests (``appliance.rtsp`` events) with the time and the
client's address, it answers each with a Response and drives media streams
through a ``MediaBackend``. It keeps sessions, expires the idle ones
(``get_timer`` / ``handle_timer``) and owns every RTSP rule above the wire
format. No sockets, no reactor, no clock of its own.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit
from typing import Hashable

from appliance.rtsp.client_quirks import quirks_for
from catalog import CatalogError
from appliance.rtsp.media_api import MediaBackend, MediaFilesBad, MediaStream, MediaUnavailable
from appliance.rtsp.media_api import pick_interleaved
from appliance.rtsp import (
    Request,
    Response,
    TransportError,
    format_range,
    format_rtp_info,
    format_session,
    format_transport,
    parse_range,
    parse_session,
    parse_transport,
    response_for,
)
from appliance.rtsp.headers import RangeError, TransportSpec, format_scale, parse_scale
from appliance.rtsp.sdp import SdpMedia, build_sdp, rtpmap_channels
from appliance.rtsp.session_states import (
    TRANSITIONS,
    InvalidTransition,
    SessionState,
    next_state,
)

log = logging.getLogger(__name__)

PUBLIC_METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN",
                  "GET_PARAMETER", "SET_PARAMETER")
# Methods of RFC 2326 that a VoD server deliberately does not do.
NOT_ALLOWED_METHODS = ("ANNOUNCE", "RECORD", "REDIRECT")
TRACK_PREFIX = "trackID="


def log_fields(session_id: str, title: str) -> dict[str, str]:
    """The ``extra`` of a log record about one session: under systemd they
    become journal fields, so ``journalctl -u kvod SESSION_ID=…`` finds one
    viewer's lines."""
    return {"SESSION_ID": session_id, "TITLE": title}


@dataclass(frozen=True)
class NeedTitle:
    """The answer to a request waits until title ``name`` is prepared (its
    origin probed, its fill started): the adapter awaits the cache's
    ``prepare(name)``, then hands the same request in again with
    ``prepared=True``, or answers with :meth:`RtspServer.error_response`."""

    name: str
    npt_ns: int | None = None   # a PLAY ahead of the fill: make this time playable


class RtspFailure(Exception):
    """Ends one request with ``status``; the message goes to the log."""

    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass
class Session:
    """One RTSP session: a title, its set-up tracks, and its liveness."""

    id: str
    title_name: str
    peer_host: str
    state: SessionState
    last_seen: float
    streams: dict[int, MediaStream] = field(default_factory=dict)
    #: when it was set up (the clock of ``last_seen``); None: unknown
    started: float | None = None
    #: the RTSP connection that set it up (the adapter's key), or None
    connection: Hashable | None = None
    #: the (host, UDP port) pairs its streams send to
    client_ports: set[tuple[str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.last_seen


@dataclass(frozen=True)
class TitleUrl:
    """What an RTSP URL names: a title, and maybe one of its tracks."""

    name: str
    track: int | None
    base: str  # rtsp://host[:port]/name/ as the client spelled the host


def parse_title_url(target: str) -> TitleUrl:
    """Split ``rtsp://host/name[/trackID=N]`` (or rtsps://, over TLS) into
    title name and track."""
    parts = urlsplit(target)
    if parts.scheme.lower() not in ("rtsp", "rtspu", "rtsps") or not parts.netloc:
        raise RtspFailure(400, f"not an rtsp:// URL: {target!r}")
    path = unquote(parts.path).strip("/")
    track = None
    head, _, last = path.rpartition("/")
    if last.startswith(TRACK_PREFIX):
        digits = last[len(TRACK_PREFIX):]
        if not digits.isdigit() or len(digits) > 4:
            raise RtspFailure(404, f"bad track in {target!r}")
        track, path = int(digits), head
    if not path:
        raise RtspFailure(404, f"no title in {target!r}")
    return TitleUrl(path, track, title_base_url(parts.netloc, path, parts.scheme))


def title_base_url(netloc: str, name: str, scheme: str = "rtsp") -> str:
    """``rtsp://netloc/name/``: the Content-Base of a title, track URLs below
    it (``rtsps://`` for a client that came over TLS)."""
    scheme = "rtsps" if scheme.lower() == "rtsps" else "rtsp"
    return f"{scheme}://{netloc}/{quote(name, safe='/')}/"


class RtspServer:
    """Answers RTSP requests and keeps the sessions they create."""

    #: the door every request passes first (``appliance.auth.RtspGate``);
    #: None lets all through. The daemon sets and replaces it (reload).
    auth = None

    def __init__(self, *, titles, media: MediaBackend, session_timeout: float = 60.0,
                 max_sessions: int = 1000, server_name: str = "kvod", cache=None,
                 max_sessions_per_connection: int = 16,
                 max_sessions_per_address: int = 100):
        """``titles`` is the catalog (``get_title``, ``record_hit``); ``cache``,
        if given, also says which titles are servable while they fill
        (``servable(title)``) and which may be fetched (``can_fetch(name, title)``)."""
        self._titles = titles
        self._cache = cache
        self._media = media
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        self.server_name = server_name
        self.sessions: dict[str, Session] = {}
        # one connection or one address must not take every session
        self.max_sessions_per_connection = max_sessions_per_connection
        self.max_sessions_per_address = max_sessions_per_address
        self._per_connection: dict[Hashable, int] = {}
        self._per_host: dict[str, int] = {}
        # (host, UDP port) -> the session whose stream sends there
        self._client_ports: dict[tuple[str, int], str] = {}
        self._link = None  # the current request's connection (handle_request)
        # (id of the title, host) -> (that title, its SDP): every viewer of a
        # title is given the same description (see _sdp_of)
        self._sdp: dict[tuple[int, str], tuple[object, bytes]] = {}

    # -- the entry points ---------------------------------------------------

    def handle_request(self, request: Request, *, peer_host: str, now: float,
                       prepared: bool = False, connection: str | None = None,
                       link=None, secure: bool = False) -> Response | NeedTitle:
        """The response to ``request`` from a client at ``peer_host``, or
        :class:`NeedTitle` when the title must be fetched first (``prepared``:
        it was, as far as it could be: answer with what there is).
        ``connection`` names the client's RTSP connection: auth nonces are
        bound to it (default: the host), and sessions per connection are
        limited. ``link`` is the connection's
        :class:`~appliance.rtsp.media_api.InterleavedLink` (None: RTP over
        UDP only). ``secure``: the connection is TLS (RTSPS), where Basic
        authentication may be used."""
        # the request's connection, for a SETUP that interleaves on it
        self._link = link
        try:
            if self.auth is not None and not prepared:  # a prepared one passed already
                denial = self.auth.check(
                    method=request.method, target=request.target,
                    authorization=request.headers.get_all("Authorization"),
                    connection=connection or peer_host, peer=peer_host, now=now,
                    secure=secure)
                if denial is not None:
                    return self._reply(request, denial.status, headers=denial.headers)
            return self._dispatch(request, peer_host, now, prepared, connection)
        except _NeedTitle as need:
            return NeedTitle(need.name, need.npt_ns)
        except RtspFailure as exc:
            log.info("%s %s from %s: %d %s", request.method, request.target,
                     peer_host, exc.status, exc)
            return self._reply(request, exc.status, headers=exc.headers)
        except CatalogError as exc:
            # The catalog file (damaged under the running daemon, say), not a
            # bug: one line that says what to do, and the client may retry.
            log.error("%s %s from %s: %s", request.method, request.target, peer_host, exc)
            return self._reply(request, 503)
        except Exception:
            # A bug must end this request, not the connection or the daemon.
            log.exception("%s %s from %s failed", request.method, request.target, peer_host)
            return self._reply(request, 500)

    def error_response(self, request: Request, status: int, message: str) -> Response:
        """The answer to a request whose title could not be prepared."""
        log.info("%s %s: %d %s", request.method, request.target, status, message)
        return self._reply(request, status)

    def touch(self, session_id: str, now: float) -> None:
        """Note a sign of life (e.g. an RTCP receiver report) for a session."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_seen = now

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next run (the earliest session expiry)."""
        if not self.sessions:
            return None
        return min(s.last_seen for s in self.sessions.values()) + self.session_timeout

    def handle_timer(self, now: float) -> None:
        """Reclaim the sessions whose client has gone quiet for the timeout."""
        for session in list(self.sessions.values()):
            if now >= session.last_seen + self.session_timeout:
                log.info("session %s (%s, %s) timed out after %.0f s of silence",
                         session.id, session.title_name, session.peer_host,
                         now - session.last_seen,
                         extra=log_fields(session.id, session.title_name))
                self._close(session)

    def close_sessions(self, session_ids, why: str) -> None:
        """End the sessions ``session_ids`` (their media went on a connection
        that closed)."""
        for session_id in session_ids:
            session = self.sessions.get(session_id)
            if session is not None:
                log.info("session %s (%s, %s) ended: %s", session.id, session.title_name,
                         session.peer_host, why, extra=log_fields(session.id, session.title_name))
                self._close(session)

    def close_all(self) -> None:
        """Tear down every session (daemon shutdown)."""
        for session in list(self.sessions.values()):
            self._close(session)

    # -- methods ------------------------------------------------------------

    def sessions_on(self, connection: Hashable) -> int:
        """Open sessions set up on ``connection``."""
        return self._per_connection.get(connection, 0)

    def _dispatch(self, req: Request, peer_host: str, now: float, prepared: bool,
                  connection: Hashable | None = None) -> Response:
        method = req.method
        require = req.headers.get("Require")
        if require:
            raise RtspFailure(551, f"unsupported option {require!r}",
                              headers=(("Unsupported", require),))
        if method == "OPTIONS":
            self._keepalive(req, peer_host, now, required=False)
            return self._reply(req, 200, headers=(("Public", ", ".join(PUBLIC_METHODS)),))
        if method == "DESCRIBE":
            return self._describe(req, now, prepared)
        if method == "SETUP":
            return self._setup(req, peer_host, now, prepared, connection)
        if method in ("PLAY", "PAUSE", "TEARDOWN"):
            session = self._session_of(req, peer_host, now)
            try:
                new_state = next_state(session.state, method)
            except InvalidTransition as exc:
                raise RtspFailure(455, str(exc),
                                  headers=(("Allow", self._allowed(session)),)) from None
            if method == "PLAY":
                response = self._play(req, session, prepared)
            elif method == "PAUSE":
                response = self._pause(req, session)
            else:
                response = self._teardown(req, session)
            session.state = new_state
            return response
        if method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._keepalive(req, peer_host, now, required=False)
            if method == "SET_PARAMETER" and req.body:
                raise RtspFailure(451, "no parameters can be set")
            return self._reply(req, 200, session=self._session_header(req, peer_host))
        if method in NOT_ALLOWED_METHODS:
            raise RtspFailure(405, f"{method} is not supported by a VoD server",
                              headers=(("Allow", ", ".join(PUBLIC_METHODS)),))
        raise RtspFailure(501, f"unknown method {method}")

    def _describe(self, req: Request, now: float, prepared: bool) -> Response:
        accept = req.headers.get("Accept")
        if accept and not any(a.split(";")[0].strip() in ("application/sdp", "*/*", "application/*")
                              for a in accept.split(",")):
            raise RtspFailure(406, f"only application/sdp, not {accept!r}")
        url = parse_title_url(req.target)
        title = self._title(url.name, prepared)
        (self._cache or self._titles).record_hit(title.name, now=now)
        host = urlsplit(req.target).hostname or "0.0.0.0"
        return self._reply(req, 200, body=self._sdp_of(title, host),
                           headers=(("Content-Type", "application/sdp"),
                                    ("Content-Base", url.base)))

    def _sdp_of(self, title, host: str) -> bytes:
        """``title``'s SDP as seen through ``host``, built once per title
        object: the title cache hands out one object until the catalog
        changes, and a flash crowd asks for the same description a thousand
        times (building it is a third of a DESCRIBE)."""
        key = (id(title), host)
        cached = self._sdp.get(key)
        if cached is not None and cached[0] is title:
            return cached[1]
        media = [SdpMedia(kind=_sdp_kind(t.media_type), payload_type=t.payload_type,
                          encoding=t.codec, clock_rate=t.clock_rate, fmtp=t.fmtp,
                          control=f"{TRACK_PREFIX}{t.track_index}",
                          channels=rtpmap_channels(t.codec, t.fmtp)
                          if t.media_type == "audio" else None)
                 for t in title.tracks]
        sdp = build_sdp(session_name=title.name, origin_address=host,
                        session_id=title.id, session_version=int(title.created),
                        # a filling title's length is an estimate until the fill
                        # ends; a player clips at a range end that is too short
                        duration_s=((title.duration_ns or 0) / 1e9 or None)
                        if title.state == "complete" else None, media=media).encode()
        if len(self._sdp) >= 1024:
            self._sdp.clear()  # titles come and go: bounded, rebuilt on demand
        # the title is kept with it: its id cannot be another title's meanwhile
        self._sdp[key] = (title, sdp)
        return sdp

    def _setup(self, req: Request, peer_host: str, now: float, prepared: bool,
               connection: Hashable | None = None) -> Response:
        url = parse_title_url(req.target)
        title = self._title(url.name, prepared)
        tracks = {t.track_index: t for t in title.tracks}
        track_index = url.track if url.track is not None else (
            min(tracks) if len(tracks) == 1 else None)
        if track_index is None:
            raise RtspFailure(459, "SETUP of a multi-track title needs a track URL")
        track = tracks.get(track_index)
        if track is None:
            raise RtspFailure(404, f"{title.name} has no track {track_index}")
        spec = self._pick_transport(req, peer_host)

        session = None
        if req.headers.get("Session"):
            session = self._session_of(req, peer_host, now)
            if session.title_name != title.name:
                raise RtspFailure(459, f"session {session.id} is for {session.title_name}")
            if session.state is not SessionState.READY:
                raise RtspFailure(455, "SETUP while playing is not supported",
                                  headers=(("Allow", self._allowed(session)),))
        elif len(self.sessions) >= self.max_sessions:
            raise RtspFailure(453, f"session limit {self.max_sessions} reached")
        elif connection is not None and \
                self.sessions_on(connection) >= self.max_sessions_per_connection:
            raise RtspFailure(453, f"{self.max_sessions_per_connection} sessions on one "
                                   "connection (rtsp.max_sessions_per_connection)")
        elif self._per_host.get(peer_host, 0) >= self.max_sessions_per_address:
            raise RtspFailure(453, f"{self.max_sessions_per_address} sessions from "
                                   f"{peer_host} (rtsp.max_sessions_per_address)")
        session_id_now = session.id if session else None
        for port in spec.client_port or ():
            holder = self._client_ports.get((peer_host, port))
            if holder is not None and holder != session_id_now:
                # another viewer's ports: its stream would be broken by ours
                raise RtspFailure(461, f"client port {port} of {peer_host} is in use by "
                                       "another session")

        session_id = session.id if session else _new_session_id(self.sessions)
        tcp = {"interleaved": (self._link, spec.interleaved)} \
            if spec.lower_transport == "TCP" else {}
        try:
            stream = self._media.open_stream(session_id=session_id, title=title, track=track,
                                             client_host=peer_host,
                                             client_ports=spec.client_port,
                                             quirks=quirks_for(req.headers.get("User-Agent")),
                                             **tcp)
        except MediaFilesBad as exc:
            # the server's own files, not the client's request or its bandwidth
            raise RtspFailure(503, f"cannot serve {title.name}: {exc}") from None
        except MediaUnavailable as exc:
            raise RtspFailure(453, f"cannot open a stream: {exc}") from None
        if session is None:
            session = Session(session_id, title.name, peer_host, SessionState.READY, now,
                              connection=connection)
            self.sessions[session_id] = session
            if connection is not None:
                self._per_connection[connection] = self.sessions_on(connection) + 1
            self._per_host[peer_host] = self._per_host.get(peer_host, 0) + 1
            # per request at DEBUG: at INFO, a line per request is a tenth of a
            # start-up's time; the session's end says it at INFO, once
            log.debug("session %s: %s for %s", session_id, title.name, peer_host,
                     extra=log_fields(session_id, title.name))
        old = session.streams.pop(track_index, None)
        if old is not None:
            old.close()
        session.streams[track_index] = stream
        for port in spec.client_port or ():
            self._client_ports[(peer_host, port)] = session_id
            session.client_ports.add((peer_host, port))
        reply_spec = TransportSpec(profile=spec.profile, lower_transport=spec.lower_transport,
                                   delivery="unicast", client_port=spec.client_port,
                                   server_port=stream.server_ports, ssrc=stream.ssrc,
                                   interleaved=spec.interleaved)
        return self._reply(req, 200, session=session,
                           headers=(("Transport", format_transport(reply_spec)),))

    def _pick_transport(self, req: Request, peer_host: str):
        value = req.headers.get("Transport")
        if not value:
            raise RtspFailure(461, "SETUP without a Transport header")
        try:
            specs = parse_transport(value)
        except TransportError as exc:
            raise RtspFailure(461, f"bad Transport {value!r}: {exc}") from None
        for spec in specs:
            if spec.lower_transport == "TCP":
                picked = pick_interleaved(spec, self._link, self._media)
                if picked is not None:
                    return picked
                continue
            # RFC 2326 makes a spec without "unicast" multicast, but clients
            # that give client_port and no delivery mean unicast.
            if (spec.lower_transport != "UDP" or spec.delivery == "multicast"
                    or spec.client_port is None):
                continue
            # RTP only ever goes to the client that asked for it.
            if spec.destination and spec.destination != peer_host:
                continue
            return spec
        raise RtspFailure(461, f"no supported transport in {value!r} (kvod serves "
                               "RTP/AVP over UDP unicast or interleaved on TCP with "
                               "a free channel pair)")

    def _play(self, req: Request, session: Session, prepared: bool) -> Response:
        if not session.streams:
            raise RtspFailure(455, "PLAY before SETUP")
        streams = sorted(session.streams.items())
        first = streams[0][1]
        scale = self._scale(req)
        value = req.headers.get("Range")
        npt_ns = end_ns = None
        if value:
            try:
                rng = parse_range(value, backwards=scale < 0)
            except RangeError as exc:
                raise RtspFailure(457, f"bad Range {value!r}: {exc}") from None
            if rng.start is not None:
                npt_ns = int(rng.start * 1e9)
                if first.duration_ns and npt_ns > first.duration_ns:
                    raise RtspFailure(457, f"Range starts at {rng.start}s, "
                                           f"past the end ({first.duration_ns / 1e9:.3f}s)")
            if rng.end is not None and scale > 0:
                # backwards, the end is an earlier time: trick play runs to
                # the title's start (nor does it keep a forward end), and a
                # title that cannot go backwards plays forwards without one
                end_ns = int(rng.end * 1e9)
        if npt_ns is not None and not prepared and any(
                stream.needs_seek(npt_ns) for _, stream in streams):
            # ahead of a running fill: its bytes are fetched first, then PLAY answers
            raise _NeedTitle(session.title_name, npt_ns)
        ends: list[int | None] = []
        if npt_ns is None and session.state is SessionState.PLAYING and all(
                stream.scale == scale for _, stream in streams):
            # PLAY while playing without a new position changes nothing but
            # its end (npt=now-b)
            start_ns = first.position_ns()
            infos = None
            for _, stream in streams:
                ends.append(self._stop_at(stream, end_ns, None))
        else:
            infos = []
            start_ns = None
            for index, stream in streams:
                try:
                    at = npt_ns if start_ns is None else start_ns
                    if npt_ns is None and stream.scale == scale:
                        record = None
                        pos = stream.position_ns()
                    elif scale != 1 or stream.scale != 1:
                        # to or from a trick stream, where the stream is
                        # (npt=now) or where the Range says
                        stream.pause()
                        record, pos = stream.set_scale(
                            scale, stream.position_ns() if at is None else at)
                    else:
                        if session.state is not SessionState.READY:
                            # stopped while it moves; a first PLAY's stream
                            # never started (and the engine call waits for
                            # its pacer's lock)
                            stream.pause()
                        # the first track (video) picks the keyframe; the others
                        # start at that instant, so audio and video stay together
                        record, pos = stream.keyframe_at_or_before(at)
                    ends.append(self._stop_at(stream, end_ns, record))
                    start = stream.play(record)
                except MediaUnavailable as exc:
                    raise RtspFailure(503, f"cannot play {session.title_name}: {exc}") from None
                start_ns = pos if start_ns is None else start_ns
                target = urlsplit(req.target)
                base = title_base_url(target.netloc, session.title_name, target.scheme)
                infos.append((f"{base}{TRACK_PREFIX}{index}",
                              start.seq, start.rtptime))
        end = first.duration_ns / 1e9 if first.duration_ns else None
        if ends and ends[0] is not None:
            end = min(ends[0] / 1e9, end) if end is not None else ends[0] / 1e9
        if first.scale < 0:
            # in the direction of play, to the title's start
            headers = [("Range", format_range(start_ns / 1e9, 0.0, backwards=True))]
        else:
            headers = [("Range", format_range(start_ns / 1e9, max(end, start_ns / 1e9)
                                              if end is not None else None))]
        if infos:
            headers.append(("RTP-Info", format_rtp_info(infos)))
        if req.headers.get("Scale") is not None:
            # the scale used, which the client must be told (RFC 2326 12.34)
            headers.append(("Scale", format_scale(first.scale)))
        log.debug("session %s: PLAY %s from %.3f s", session.id, session.title_name,
                 start_ns / 1e9, extra=log_fields(session.id, session.title_name))
        return self._reply(req, 200, session=session, headers=tuple(headers))

    @staticmethod
    def _scale(req: Request) -> int:
        """The Scale a PLAY asks for, as kvod plays it: 1, or the nearest of
        2, 4 and 8 forwards or backwards (slow motion plays at 1)."""
        value = req.headers.get("Scale")
        if value is None:
            return 1
        try:
            asked = parse_scale(value)
        except RangeError as exc:
            raise RtspFailure(400, str(exc)) from None
        if abs(asked) < 1.5 and asked > 0:
            return 1
        speed = min((2, 4, 8), key=lambda s: abs(s - abs(asked)))
        return speed if asked > 0 else -speed

    @staticmethod
    def _stop_at(stream: MediaStream, end_ns: int | None, record: int | None) -> int | None:
        """A Range end for ``stream`` (None: the title's end), 457 when it is
        before where the stream is."""
        try:
            return stream.stop_at(end_ns, record)
        except ValueError as exc:
            raise RtspFailure(457, str(exc)) from None

    def _pause(self, req: Request, session: Session) -> Response:
        for stream in session.streams.values():
            stream.pause()
        return self._reply(req, 200, session=session)

    def _teardown(self, req: Request, session: Session) -> Response:
        self._close(session)
        log.info("session %s (%s, %s) ended by TEARDOWN after %.0f s", session.id,
                 session.title_name, session.peer_host, session.last_seen - session.started,
                 extra=log_fields(session.id, session.title_name))
        return self._reply(req, 200)

    # -- helpers ------------------------------------------------------------

    def _title(self, name: str, prepared: bool):
        title = self._titles.get_title(name)
        cache = self._cache
        if title is not None and title.tracks and (
                title.state == "complete" and not title.damaged if cache is None
                else cache.servable(title)):
            return title
        if cache is not None and not prepared and cache.can_fetch(name, title):
            raise _NeedTitle(name)
        if title is None:
            raise RtspFailure(404, f"no title {name!r}")
        if title.damaged:
            # the log line says what the operator must do; the client learns
            # that the server cannot serve it now, not that it never existed
            raise RtspFailure(503, f"title {name!r} is damaged: {title.damaged}")
        raise RtspFailure(404 if cache is None else 503,
                          f"title {name!r} is not ready ({title.state})")

    def _session_id(self, req: Request) -> str | None:
        value = req.headers.get("Session")
        if not value:
            return None
        try:
            return parse_session(value)[0]
        except ValueError:
            raise RtspFailure(454, f"malformed Session {value!r}") from None

    def _session_of(self, req: Request, peer_host: str, now: float) -> Session:
        session_id = self._session_id(req)
        if session_id is None:
            raise RtspFailure(454, f"{req.method} needs a Session header")
        session = self._own_session(session_id, peer_host)
        if session is None:
            raise RtspFailure(454, f"no session {session_id!r} for {peer_host}")
        session.last_seen = now
        return session

    def _own_session(self, session_id: str, peer_host: str) -> Session | None:
        # A session belongs to the address that set it up: an id seen
        # elsewhere (the admin status, a capture) must not let another host
        # tear it down, redirect it or keep it alive. To that host it does
        # not exist, the same 454 as an id never issued.
        session = self.sessions.get(session_id)
        if session is None or session.peer_host != peer_host:
            return None
        return session

    def _keepalive(self, req: Request, peer_host: str, now: float, required: bool) -> None:
        if required or req.headers.get("Session"):
            self._session_of(req, peer_host, now)

    def _session_header(self, req: Request, peer_host: str) -> Session | None:
        session_id = self._session_id(req)
        return self._own_session(session_id, peer_host) if session_id else None

    def _allowed(self, session: Session) -> str:
        methods = {m for (state, m) in TRANSITIONS if state is session.state}
        return ", ".join(sorted(methods | {"OPTIONS", "GET_PARAMETER"}))

    def _close(self, session: Session) -> None:
        for stream in session.streams.values():
            try:
                stream.close()
            except Exception:  # one bad stream must not keep the others open
                log.exception("session %s: closing a stream failed", session.id)
        session.streams.clear()
        session.state = SessionState.CLOSED
        if self.sessions.pop(session.id, None) is None:
            return
        for key in session.client_ports:
            if self._client_ports.get(key) == session.id:
                del self._client_ports[key]
        for table, key in ((self._per_connection, session.connection),
                           (self._per_host, session.peer_host)):
            if key in table:
                table[key] -= 1
                if not table[key]:
                    del table[key]

    def _reply(self, req: Request, status: int, *, session: Session | None = None,
               headers: tuple = (), body: bytes = b"") -> Response:
        extra = [("Server", self.server_name)]
        if session is not None:
            extra.append(("Session", format_session(session.id, int(self.session_timeout))))
        return response_for(req, status, headers=tuple(extra) + tuple(headers), body=body)


class _NeedTitle(Exception):
    def __init__(self, name: str, npt_ns: int | None = None):
        super().__init__(name)
        self.name = name
        self.npt_ns = npt_ns


def _sdp_kind(media_type: str) -> str:
    return media_type if media_type in ("video", "audio") else "video"


def _new_session_id(taken) -> str:
    while True:
        session_id = secrets.token_hex(8).upper()
        if session_id not in taken:
            return session_id
