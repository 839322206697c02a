"""The kvod daemon: builds the Twisted service tree from a Config.

``make_service(config, reactor)`` opens the catalog, starts the C engine,
listens for RTSP, and arms the session-expiry timer; ``kvod serve`` runs it.
systemd readiness (READY=1 once the catalog is migrated and every port
listens) and the watchdog are sent when the daemon runs under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, gatherResults

from appliance.admin_access import AdminAccess
from appliance.admin_http import admin_site
from appliance.admin_token import TokenError, load_or_create_token
from appliance.cache.catalog_writer import CatalogWriter
from appliance.config import Config
from appliance.cache.proxy import ProxyCache
from appliance.cache.fill import FillSettings
from appliance.rtsp_adapter import RtspFactory, SessionTimer
from appliance.rtsp.sessions import RtspServer
from appliance.status import daemon_status
from appliance.media.server_ports import server_ports
from appliance.media.udp import UdpMediaBackend
from catalog import open_catalog
from rtpengine.backend import open_engine

log = logging.getLogger(__name__)


def _sd_notify(message: str) -> None:
    """Tell systemd ``message`` when running under it (NOTIFY_SOCKET set)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return
    sd_daemon.notify(message)


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
        settings=FillSettings(
            chunk_bytes=origin.chunk_bytes, requests_per_fill=origin.requests_per_fill,
            retries=origin.retries, retry_delay=origin.retry_delay,
            retry_max_delay=origin.retry_max_delay, probe_bytes=origin.probe_bytes,
            tail_bytes=origin.tail_bytes))


class KvodService(service.MultiService):
    """The daemon: catalog, engine, media backend, RTSP listener, timers."""

    def __init__(self, config: Config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
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
                               shared_rtp_port=config.rtsp.shared_pair[0]),
            sr_interval=config.rtcp.sr_interval,
            cname=f"kvod@{socket.gethostname()}",
            on_alive=lambda session_id: self.server.touch(session_id, time.monotonic()),
            fill_for=self.cache.fill_for, stall_timeout=config.cache.stall_timeout,
            pacing=config.engine.pacing)
        self.cache.in_use = self.media.playing
        self.server = RtspServer(titles=self.catalog, media=self.media,
                                 session_timeout=config.rtsp.session_timeout,
                                 max_sessions=config.rtsp.max_sessions,
                                 server_name=config.rtsp.server_name, cache=self.cache)
        self.timer = SessionTimer(self.server, reactor)
        self.timer.setServiceParent(self)
        self.factory = RtspFactory(self.server, max_connections=config.rtsp.max_connections,
                                   on_request=self.timer.rearm, cache=self.cache)
        self.exit_code = 0
        self.started = time.time()
        self.endpoint = endpoints.serverFromString(reactor, config.rtsp.listen)
        self.port = None
        self.admin_endpoint = endpoints.serverFromString(reactor, config.admin.listen)
        self.admin_port = None
        self.admin_site = admin_site(self.status, self.cache, access=admin_access(config))

    def status(self) -> dict:
        """The daemon's status snapshot (``/status``, ``kvod status``)."""
        return daemon_status(engine=self.engine, server=self.server, started=self.started,
                             ports=self.media.ports.status())

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        try:
            self.media.start()
        except OSError as exc:
            pair = "-".join(map(str, self.config.rtsp.shared_pair))
            self._listen_failed(None, "RTP/RTCP", f"shared server ports {pair} ({exc})")
            return
        self.cache.resume_all()
        rtsp = self.endpoint.listen(self.factory)
        rtsp.addCallback(self._set_port, "port")
        rtsp.addErrback(self._listen_failed, "RTSP", self.config.rtsp.listen)
        admin = self.admin_endpoint.listen(self.admin_site)
        admin.addCallback(self._set_port, "admin_port")
        admin.addCallback(self._admin_listening)
        admin.addErrback(self._listen_failed, "admin HTTP", self.config.admin.listen)
        # READY only once every port listens (STYLE.md: Type=notify)
        gatherResults([rtsp, admin], consumeErrors=True).addCallback(self._ready)

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
        rtsp, admin = (p.getHost() for p in ports)
        log.info("listening for RTSP on %s:%d, admin HTTP on %s:%d",
                 rtsp.host, rtsp.port, admin.host, admin.port)
        _sd_notify(f"READY=1\nSTATUS=serving RTSP on port {rtsp.port}")

    def _listen_failed(self, failure, what: str, where: str) -> None:
        why = f": {failure.getErrorMessage()}" if failure is not None else ""
        log.error("cannot listen for %s on %s%s", what, where, why)
        self.exit_code = 1
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self):  # noqa: N802 (Twisted API)
        _sd_notify("STOPPING=1")
        self.server.close_all()
        self.media.stop()
        for attr in ("port", "admin_port"):
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


def make_service(config: Config, reactor) -> KvodService:
    """Build the daemon's service tree for ``config`` on ``reactor``."""
    return KvodService(config, reactor)


def run(config: Config) -> int:
    """Run the daemon in the foreground until SIGINT/SIGTERM."""
    from twisted.internet import reactor
    daemon = make_service(config, reactor)
    reactor.callWhenRunning(daemon.startService)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    reactor.run()
    return daemon.exit_code
