"""The kvod daemon: builds the Twisted service tree from a Config.

``make_service(config, reactor)`` opens the catalog, starts the C engine,
listens for RTSP, and arms the session-expiry timer; ``kvod serve`` runs it.
Under systemd (``Type=notify``) it sends READY=1 once the catalog is
migrated and every port listens, a STATUS= line every few seconds,
WATCHDOG=1 while the data path makes progress, and STOPPING=1 before every
session gets its RTCP BYE. SIGHUP (``systemctl reload``) re-reads the
config file and applies what can change at run time (``appliance.reload``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import resource
import signal
import socket
import time
from typing import Optional

from twisted.application import service
from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred, gatherResults

from appliance.admin_access import AdminAccess
from appliance.admin_http import admin_site
from appliance.admin_token import TokenError, load_or_create_token
from appliance.cache.catalog_writer import CatalogWriter
from appliance.cache.origin import HttpOrigin
from appliance.config import Config, ConfigError, OriginConfig, load_config
from appliance.data_owner import share_with_group
from appliance.endpoint_strings import with_backlog
from appliance.http.site import http_site
from appliance.metrics import DaemonMetrics
from appliance.auth import AccessRules, HtdigestError, NonceStore, RtspGate, load_htdigest
from appliance.config import AuthConfig
from appliance.reload import plan
from appliance import supervision
from appliance.cache.proxy import ProxyCache
from appliance.cache.fill import FillSettings
from appliance.rtsp_adapter import RtspFactory, SessionTimer
from appliance.rtsp.sessions import RtspServer
from appliance.status import daemon_status
from appliance.media.server_ports import server_ports
from appliance.media.udp import UdpMediaBackend
from catalog import open_catalog
from catalog.title_cache import TitleCache
from rtpengine.backend import open_engine

log = logging.getLogger(__name__)

#: seconds between two STATUS= lines under systemd
STATUS_INTERVAL = 5.0


def fill_settings(origin: OriginConfig) -> FillSettings:
    """How fills fetch, from the ``[origin]`` section."""
    return FillSettings(
        chunk_bytes=origin.chunk_bytes, requests_per_fill=origin.requests_per_fill,
        retries=origin.retries, retry_delay=origin.retry_delay,
        retry_max_delay=origin.retry_max_delay, probe_bytes=origin.probe_bytes,
        tail_bytes=origin.tail_bytes, max_changes=origin.max_changes,
        idle_timeout=origin.idle_timeout, probe_timeout=origin.probe_timeout)


def make_cache(config: Config, reactor, catalog) -> ProxyCache:
    """The proxy cache as ``config`` sets it up (the daemon's, or a CLI's own).

    Fills record their ranges through a writer thread with its own catalog
    connection; ``catalog`` (the caller's, used from the reactor thread)
    leaves WAL checkpoints to that thread, so no commit here waits on one."""
    origin = config.origin
    catalog.db.execute("PRAGMA wal_autocheckpoint = 0")
    return ProxyCache(
        writer=CatalogWriter(reactor, config.catalog.path),
        seek_timeout=config.cache.stall_timeout,
        reactor=reactor, catalog=catalog, cache_dir=config.cache.dir,
        base_urls=origin.base_url, max_fills=origin.max_fills,
        connect_timeout=origin.connect_timeout, read_timeout=origin.read_timeout,
        connections=origin.connections, max_bytes=config.cache.max_bytes,
        policy=config.cache.policy, keep_prefix_seconds=config.cache.keep_prefix_seconds,
        probe_timeout=origin.probe_timeout, queue_timeout=origin.queue_timeout,
        min_rate=origin.min_rate,
        settings=fill_settings(origin))


class KvodService(service.MultiService):
    """The daemon: catalog, engine, media backend, RTSP listener, timers."""

    def __init__(self, config: Config, reactor, config_path: Optional[str] = None):
        """``config_path`` is the file ``config`` came from, read again on
        reload (None: built-in defaults, nothing to reload)."""
        super().__init__()
        self.config = config
        self.config_path = config_path
        self.reactor = reactor
        # first: a bad users file must stop the start before the engine's
        # threads and the catalog are opened
        gate = make_gate(config.auth)
        # files the operators' kvod commands (the data's group) may change too
        share_with_group(config.catalog.path)
        self.catalog = open_catalog(config.catalog.path)
        self.cache = make_cache(config, reactor, self.catalog)
        # KVOD_ENGINE_REFUSE=udp_segment,zerocopy,io_uring makes the engine act
        # as if the kernel refused those features: how tests show the fallback.
        refuse = [f for f in os.environ.get("KVOD_ENGINE_REFUSE", "").split(",") if f]
        self.engine, self.engine_description = open_engine(
            config.engine.backend, threads=config.engine.threads,
            strategy=config.engine.strategy, refuse=refuse,
            lookahead_ns=round(config.engine.lookahead_ms * 1e6),
            burst_ns=round(config.engine.burst_ms * 1e6), pacing=config.engine.pacing)
        log.info("engine: %s", self.engine_description)
        if self.engine.fallback:
            log.warning("engine fallback: %s", self.engine.fallback)
        self.media = UdpMediaBackend(
            engine=self.engine, reactor=reactor,
            ports=server_ports(reactor, mode=config.rtsp.server_ports,
                               port_min=config.rtsp.rtp_port_min,
                               port_max=config.rtsp.rtp_port_max,
                               shared_rtp_port=config.rtsp.shared_pair[0],
                               pool=config.rtsp.port_pool),
            sr_interval=config.rtcp.sr_interval,
            cname=f"kvod@{socket.gethostname()}",
            on_alive=lambda session_id: self.server.touch(session_id, time.monotonic()),
            fill_for=self.cache.fill_for, on_damaged=self.cache.mark_damaged,
            stall_timeout=config.cache.stall_timeout,
            pacing=config.engine.pacing,
            tcp_max_lag=config.interleaved.max_lag,
            tcp_stall=config.interleaved.stall_timeout,
            tcp_send_buffer=config.interleaved.send_buffer)
        self.http_site = http_site(self.cache, reactor, config.http.target_duration)
        # a title downloaded or played must not be evicted under its readers
        self.cache.in_use = lambda name: self.media.playing(name) or self.http_site.busy(name)
        self.server = RtspServer(titles=TitleCache(self.catalog), media=self.media,
                                 session_timeout=config.rtsp.session_timeout,
                                 max_sessions=config.rtsp.max_sessions,
                                 server_name=config.rtsp.server_name, cache=self.cache,
                                 max_sessions_per_connection=(
                                     config.rtsp.max_sessions_per_connection),
                                 max_sessions_per_address=config.rtsp.max_sessions_per_address)
        self.server.auth = gate
        self.timer = SessionTimer(self.server, reactor)
        self.timer.setServiceParent(self)
        self.metrics = DaemonMetrics(self.status, self._cache_figures)
        self.factory = RtspFactory(self.server, max_connections=config.rtsp.max_connections,
                                   on_request=self.timer.rearm, cache=self.cache,
                                   on_answered=self.metrics.answered,
                                   max_connections_per_address=(
                                       config.rtsp.max_connections_per_address),
                                   idle_timeout=config.rtsp.idle_timeout,
                                   request_timeout=config.rtsp.request_timeout,
                                   requests_per_second=config.rtsp.max_requests_per_second)
        self.exit_code = 0
        self.started = time.time()
        self.endpoint = endpoints.serverFromString(
            reactor, with_backlog(config.rtsp.listen, config.rtsp.listen_backlog))
        self.port = None
        self.admin_endpoint = endpoints.serverFromString(reactor, config.admin.listen)
        self.admin_port = None
        self.http_port = None
        self.tls_port = None
        self._status_line = supervision.StatusLine()
        self._watchdog = supervision.Watchdog()
        self._watchdog_failing = False
        self._loops: list[task.LoopingCall] = []
        self.admin_site = admin_site(self.status, self.cache, metrics=self.metrics,
                                     access=admin_access(config))

    def status(self) -> dict:
        """The daemon's status snapshot (``/status``, ``kvod status``)."""
        status = daemon_status(engine=self.engine, server=self.server, started=self.started,
                               ports=self.media.ports.status(), traffic=self.media.traffic(),
                               damaged=self.catalog.damaged_titles(),
                               connections=self.factory.table.counters(),
                               auth=self.server.auth.status() if self.server.auth else None)
        status["engine"]["description"] = self.engine_description
        return status

    def _cache_figures(self) -> dict:
        """The cache's figures for /metrics and the STATUS= line."""
        cache = self.cache
        return {"used_bytes": cache.quota.used(), "quota_bytes": cache.quota.max_bytes,
                "hits": cache.hits, "misses": cache.misses, "fills": len(cache.fills),
                "fill_errors": len(cache.errors)}

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        try:
            self.media.start()
        except OSError as exc:
            pair = "-".join(map(str, self.config.rtsp.shared_pair))
            self._listen_failed(None, "RTP/RTCP", f"shared server ports {pair} ({exc})")
            return
        self.cache.resume_all()
        # idle connections and slow requests are closed within a second of their timeout
        self._every(1.0, self.factory.sweep)
        rtsp = self.endpoint.listen(self.factory)
        rtsp.addCallback(self._set_port, "port")
        rtsp.addErrback(self._listen_failed, "RTSP", self.config.rtsp.listen)
        admin = self.admin_endpoint.listen(self.admin_site)
        admin.addCallback(self._set_port, "admin_port")
        admin.addCallback(self._admin_listening)
        admin.addErrback(self._listen_failed, "admin HTTP", self.config.admin.listen)
        listening = [rtsp, admin]
        if self.config.http.enabled:
            web = endpoints.serverFromString(self.reactor, self.config.http.listen).listen(
                self.http_site)
            web.addCallback(self._set_port, "http_port")
            web.addErrback(self._listen_failed, "HTTP", self.config.http.listen)
            listening.append(web)
        if self.config.rtsp.tls_listen != "none":
            # RTSPS: the same server behind TLS; RTP goes interleaved on the connection
            rtsps = endpoints.serverFromString(
                self.reactor, with_backlog(self.config.rtsp.tls_listen,
                                           self.config.rtsp.listen_backlog)).listen(self.factory)
            rtsps.addCallback(self._set_port, "tls_port")
            rtsps.addErrback(self._listen_failed, "RTSPS", self.config.rtsp.tls_listen)
            listening.append(rtsps)
        # READY only once every port listens (STYLE.md: Type=notify)
        gatherResults(listening, consumeErrors=True).addCallback(self._ready)

    def _set_port(self, port, attr: str):
        setattr(self, attr, port)
        return port

    def _admin_listening(self, port):
        host = getattr(port.getHost(), "host", None)
        self.admin_site.listening_on(host)
        access = self.admin_site.access
        if not access.loopback_only and access.token is None:
            if access.open_writes:
                log.warning("the admin listener on %s is not on loopback and [admin] "
                            "token_file is empty: anyone who reaches it can prefetch and "
                            "evict titles; set token_file or listen on 127.0.0.1", host)
            else:
                log.warning("the admin listener on %s is not on loopback and has no "
                            "token: writes (prefetch, evict) are refused until %s can be "
                            "made or read", host, self.config.admin.token_file)
        return port

    def _ready(self, ports) -> None:
        if None in ports:
            return
        rtsp, admin = (p.getHost() for p in ports[:2])
        log.info("listening for RTSP on %s:%d, admin HTTP on %s:%d",
                 rtsp.host, rtsp.port, admin.host, admin.port)
        supervision.notify(f"READY=1\nSTATUS=serving RTSP on port {rtsp.port}, "
                           f"engine {self.engine.strategy}")
        if not supervision.under_systemd():
            return
        self._every(STATUS_INTERVAL, self._send_status, now=True)
        interval = supervision.watchdog_interval()
        if interval is not None:
            self._every(interval, self._send_watchdog, now=True)

    def _every(self, seconds: float, work, now: bool = False) -> None:
        loop = task.LoopingCall(work)
        loop.clock = self.reactor
        self._loops.append(loop)
        loop.start(seconds, now=now).addErrback(
            lambda failure: log.error("%s stopped: %s", work.__name__, failure.getTraceback()))

    def _send_status(self) -> None:
        line = self._status_line.line(self.status(), self._cache_figures(), time.monotonic())
        supervision.notify(f"STATUS={line}")

    def _send_watchdog(self) -> None:
        snapshot = self.status()
        progress = supervision.engine_progress(snapshot["engine"], snapshot)
        if self._watchdog.healthy(progress):
            if self._watchdog_failing:
                log.warning("watchdog: the data path makes progress again")
            self._watchdog_failing = False
            supervision.notify("WATCHDOG=1")
        elif not self._watchdog_failing:
            self._watchdog_failing = True
            log.error("watchdog: %d stream(s) playing but the engine sent nothing since "
                      "the last check; not telling systemd we are alive",
                      len(progress.playing))

    # -- reload ---------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the config file again and apply what can change while
        running; a config that does not load is refused and the running
        one stays. True if it was applied."""
        if self.config_path is None:
            log.warning("reload: kvod runs on built-in defaults (no config file); "
                        "nothing to reload")
            return False
        supervision.notify("RELOADING=1")
        try:
            try:
                new = load_config(self.config_path)
            except (ConfigError, OSError) as exc:
                log.error("reload refused, the running config stays: %s", exc)
                return False
            steps = plan(self.config, new)
            for change in steps.restart:
                log.warning("reload: %s changed (%r -> %r); it takes effect after a "
                            "restart", change.key, change.old, change.new)
            try:
                # the users file may have changed with the config unchanged
                gate = make_gate(new.auth, self.server.auth)
            except ConfigError as exc:
                log.error("reload refused, the running config and users stay: %s", exc)
                return False
            self.config = _with(self.config, new, [c.key for c in steps.runtime])
            self._apply(self.config, {c.key for c in steps.runtime})
            self.server.auth = gate
            for change in steps.runtime:
                log.info("reload: %s is now %r", change.key, change.new)
            if not steps.runtime and not steps.restart:
                log.info("reload: the config is unchanged")
            return True
        finally:
            supervision.notify("READY=1")

    def _apply(self, config: Config, keys: set[str]) -> None:
        """Make the running objects follow ``config`` for ``keys``."""
        rtsp, cache, origin = config.rtsp, config.cache, config.origin
        self.server.session_timeout = rtsp.session_timeout
        self.server.max_sessions = rtsp.max_sessions
        self.server.server_name = rtsp.server_name
        self.factory.max_connections = rtsp.max_connections
        table = self.factory.table
        table.max_per_address = rtsp.max_connections_per_address
        table.idle_timeout, table.request_timeout = rtsp.idle_timeout, rtsp.request_timeout
        self.factory.requests_per_second = rtsp.max_requests_per_second
        self.server.max_sessions_per_connection = rtsp.max_sessions_per_connection
        self.server.max_sessions_per_address = rtsp.max_sessions_per_address
        self.media.set_sr_interval(config.rtcp.sr_interval)
        self.media.pacing = config.engine.pacing
        self.media.stall_timeout = cache.stall_timeout
        # interleaved streams opened from now on
        self.media.tcp_max_lag = config.interleaved.max_lag
        self.media.tcp_stall = config.interleaved.stall_timeout
        self.media.tcp_send_buffer = config.interleaved.send_buffer
        quota = self.cache.quota
        quota.max_bytes, quota.policy = cache.max_bytes, cache.policy
        quota.keep_prefix_seconds = cache.keep_prefix_seconds
        self.cache.seek_timeout = cache.stall_timeout
        self.cache.base_urls = origin.base_url
        self.cache.max_fills = self.cache.slots.limit = origin.max_fills
        self.cache.slots.queue_timeout = origin.queue_timeout
        self.cache.slots.grant()  # a raised limit lets the queue move at once
        self.cache.probe_timeout = origin.probe_timeout
        self.cache.settings = fill_settings(origin)
        if keys & {"origin.connect_timeout", "origin.read_timeout", "origin.connections",
                   "origin.min_rate"}:
            # new fills and probes use the new pool; running fills keep theirs
            self.cache.http = HttpOrigin(self.reactor, connect_timeout=origin.connect_timeout,
                                         read_timeout=origin.read_timeout,
                                         connections=origin.connections,
                                         min_rate=origin.min_rate)
        if "log.level" in keys:
            logging.getLogger().setLevel(getattr(logging, config.log.level.upper()))
        if "rtsp.session_timeout" in keys:
            self.timer.reschedule()
        if "cache.max_bytes" in keys or "cache.policy" in keys:
            try:
                quota.make_room(0)
            except Exception as exc:  # over the new quota with nothing evictable
                log.warning("reload: the cache is over its new quota and cannot shrink "
                            "now: %s", exc)

    def _listen_failed(self, failure, what: str, where: str) -> None:
        why = f": {failure.getErrorMessage()}" if failure is not None else ""
        log.error("cannot listen for %s on %s%s", what, where, why)
        self.exit_code = 1
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self):  # noqa: N802 (Twisted API)
        supervision.notify("STOPPING=1")
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self.server.close_all()
        self.media.stop()
        for attr in ("port", "admin_port", "http_port", "tls_port"):
            port = getattr(self, attr)
            if port is not None:
                port.stopListening()
                setattr(self, attr, None)
        d = super().stopService()
        d.addBoth(lambda result: Deferred.fromCoroutine(self.cache.stop()).addBoth(
            lambda _: result))

        def _release(result):
            self.engine.close()
            self.catalog.close()
            return result
        return d.addBoth(_release)


def _with(old: Config, new: Config, keys: list[str]) -> Config:
    """``old`` with the values of ``keys`` (``section.name``) taken from ``new``."""
    sections: dict[str, dict] = {}
    for key in keys:
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    return dataclasses.replace(old, **{
        section: dataclasses.replace(getattr(old, section), **values)
        for section, values in sections.items()})


def _raise_open_files(config: Config) -> None:
    """Take every descriptor the hard limit allows (a session holds several:
    its RTSP connection, a UDP pair, the engine's duplicates), and say so
    when that is short of what ``rtsp.max_sessions`` may need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    need = open_files_needed(config)
    if soft < need:
        log.warning("open-file limit %d is short of the %d that rtsp.max_connections = %d and "
                    "rtsp.max_sessions = %d may need (raise LimitNOFILE, or lower them)", soft,
                    need, config.rtsp.max_connections, config.rtsp.max_sessions)


def open_files_needed(config: Config) -> int:
    """Descriptors the daemon may hold at its configured limits: a socket
    per RTSP connection; per session two tracks, each an RTP and an RTCP
    socket and the engine's duplicate of the RTP one; the pooled pairs;
    the cache's files, listeners, catalog and the rest."""
    rtsp = config.rtsp
    return rtsp.max_connections + rtsp.max_sessions * 2 * 3 + 2 * rtsp.port_pool * 2 + 512



def admin_access(config: Config) -> AdminAccess:
    """The admin listener's access policy from ``[admin]``: its names, and the
    token of ``token_file`` (made now if missing; none if the key is empty)."""
    token = None
    path = config.admin.token_file
    if path:
        try:
            token = load_or_create_token(path)
        except TokenError as exc:
            # Only writes from other hosts need it; _admin_listening says
            # whether this listener is reached from them.
            log.warning("%s", exc)
    return AdminAccess(names=frozenset(config.admin.names), token=token,
                       loopback_only=False, open_writes=not path)


def make_gate(auth: AuthConfig, running: Optional[RtspGate] = None) -> Optional[RtspGate]:
    """The RTSP auth gate for ``[auth]``, with its users file read now; None
    when auth is off. A ``running`` gate's nonces carry over, so clients
    logged in before a reload stay so. A bad users file is a
    :class:`ConfigError` naming ``auth.htdigest_file`` and the line."""
    if not auth.enabled:
        return None
    try:
        users = load_htdigest(auth.htdigest_file)
    except HtdigestError as exc:
        raise ConfigError(str(exc), AuthConfig.dotted("htdigest_file")) from None
    if not users.count(auth.realm):
        log.warning("auth: %s has no user in realm %r: nobody can log in",
                    auth.htdigest_file, auth.realm)
    nonces = NonceStore(lifetime=auth.nonce_lifetime)
    if running is not None and running.nonces.lifetime == auth.nonce_lifetime:
        nonces = running.nonces
    gate = RtspGate(users, auth.realm, AccessRules.parse(list(auth.rules)), nonces)
    if running is not None:
        gate.challenges, gate.failures = running.challenges, running.failures
    log.info("auth: %d user(s) of realm %r from %s, %d access rule(s)",
             users.count(auth.realm), auth.realm, auth.htdigest_file, len(auth.rules))
    return gate


def make_service(config: Config, reactor, config_path: Optional[str] = None) -> KvodService:
    """Build the daemon's service tree for ``config`` on ``reactor``."""
    return KvodService(config, reactor, config_path)


def run(config: Config, config_path: Optional[str] = None) -> int:
    """Run the daemon in the foreground until SIGINT/SIGTERM; SIGHUP reloads
    ``config_path``."""
    from twisted.internet import reactor
    _raise_open_files(config)
    daemon = make_service(config, reactor, config_path)
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(daemon.reload))
    settle_heap()   # before the listeners open: no viewer waits for it
    reactor.callWhenRunning(daemon.startService)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    reactor.run()
    return daemon.exit_code


def settle_heap() -> None:
    """Take what start-up made (modules, Twisted, the catalog, the engine),
    which lives as long as the daemon, out of the garbage collector's walks.

    A full collection walks every object the process holds, and comes when
    enough new ones have lived long enough: in the middle of a flash crowd,
    it held the reactor for 0.1-0.2 s over the start-up heap, with a hundred
    viewers' requests waiting. Frozen, the walks cover only what came since
    (sessions, streams), and a full one is a fraction of that."""
    gc.collect()
    gc.freeze()
