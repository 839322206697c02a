"""The proxy cache: which titles can be served now, which must be fetched,
and the one fill per title that every viewer of it shares.

The RTSP session layer asks :meth:`ProxyCache.servable` and
:meth:`ProxyCache.can_fetch` (plain look-ups); for a title it cannot serve
yet, the Twisted adapter awaits :meth:`ProxyCache.prepare`, which probes
the origin, enters the title as ``partial`` and starts its fill, then asks
again. ``rtsp://kvod/PATH`` is fetched from ``origin_url`` when the catalog
has one (``kvod catalog add URL``), else from each ``[origin] base_url`` +
PATH in turn.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from twisted.internet import defer

from appliance.cache.quota import CacheFull, CacheQuota, cache_status
from appliance.cache.layout import title_folder
from appliance.cache.origin import (FileOrigin, HttpOrigin, OriginError, OriginNotFound, Probe,
                              origin_for)
from appliance.cache.fill import BadMedia, FillSettings, TitleFill
from catalog import InvalidTitleName, validate_title_name

log = logging.getLogger(__name__)


class ProxyCache:
    """Serves titles from the cache and fills the ones it lacks."""

    def __init__(self, *, reactor, catalog, cache_dir: str, base_urls: tuple[str, ...] = (),
                 settings: FillSettings = FillSettings(), max_fills: int = 4,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connections: int = 8, clock: Callable[[], float] = time.time,
                 max_bytes: int = 0, policy: str = "lru",
                 keep_prefix_seconds: float = 0.0, writer=None,
                 seek_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.catalog = catalog
        self.cache_dir = cache_dir
        self.base_urls = base_urls
        self.settings = settings
        self.max_fills = max_fills
        self.clock = clock
        self.http = HttpOrigin(reactor, connect_timeout=connect_timeout,
                               read_timeout=read_timeout, connections=connections)
        self.files = FileOrigin(reactor)
        self.fills: dict[str, TitleFill] = {}
        self.in_use: Callable[[str], bool] = lambda name: False
        self._preparing: dict[str, list[defer.Deferred]] = {}
        self._waiting: list[str] = []       # partial titles to resume when a slot frees
        self.misses = 0
        self.errors: dict[str, str] = {}    # why the last fill of a title stopped
        self.writer = writer
        self.seek_timeout = seek_timeout
        self.quota = CacheQuota(catalog, max_bytes=max_bytes, policy=policy,
                                keep_prefix_seconds=keep_prefix_seconds, busy=self.busy,
                                reserved=self.reserved)

    # -- look-ups for the session layer (no I/O) ------------------------------

    def get_title(self, name: str):
        """The catalog's title ``name``, or None."""
        return self.catalog.get_title(name)

    def record_hit(self, name: str, now: float) -> None:
        """Count a play of ``name``."""
        self.quota.on_hit(name, now)

    def busy(self, name: str) -> bool:
        """Whether ``name`` is streamed or filled now (it must not be evicted)."""
        return name in self.fills or self.in_use(name)

    def reserved(self) -> int:
        """Bytes the running fills will still record (part of the quota already)."""
        return sum(f.size - sum(e - s for s, e in f.durable)
                   for f in self.fills.values() if not f.complete and f.error is None)

    def servable(self, title) -> bool:
        """Whether ``title`` can be streamed now: complete, or filling."""
        if not title.tracks or title.damaged:
            return False
        if title.state == "complete":
            return True
        fill = self.fills.get(title.name)
        return title.state == "partial" and fill is not None and fill.error is None

    def can_fetch(self, name: str, title=None) -> bool:
        """Whether :meth:`prepare` may make ``name`` servable."""
        if title is not None and title.damaged:
            return bool(title.origin_url)       # fetched again, whole
        if title is not None and title.state == "complete":
            return False
        try:
            validate_title_name(name)
        except InvalidTitleName:
            return False
        return bool(self.base_urls or (title is not None and title.origin_url))

    def status(self) -> dict:
        """The cache's figures and titles (``kvod cache status``)."""
        return cache_status(self.catalog, max_bytes=self.quota.max_bytes,
                            policy=self.quota.policy, fills=self.fills, busy=self.busy,
                            errors=self.errors)

    def mark_damaged(self, name: str, why: str) -> None:
        """A stream found ``name``'s cached files cut short or changed: it is
        not served again as it is. A title with an origin is fetched again,
        whole, when it is next asked for; one without must be added again."""
        title = self.catalog.get_title(name)
        if title is None or title.damaged:
            return
        self.catalog.set_damaged(name, why)
        log.error("title %s is damaged: %s; %s", name, why,
                  "it is fetched again from its origin when next asked for"
                  if title.origin_url else
                  f"remove it (kvod catalog rm {name}) and add its file again")

    def fill_for(self, name: str) -> Optional[TitleFill]:
        """The running fill of ``name``, or None."""
        return self.fills.get(name)

    # -- making titles servable ----------------------------------------------------

    async def prepare(self, name: str, npt_ns: Optional[int] = None) -> None:
        """Make ``name`` servable: resume its fill or probe the origin and start
        one; with ``npt_ns``, also make that time playable soon (a seek ahead
        of the fill: those bytes come first). Concurrent calls for one title
        share one probe. Raises OriginError (its ``status`` is the RTSP answer)."""
        await self._prepare_shared(name)
        fill = self.fills.get(name)
        if npt_ns is not None and fill is not None:
            await fill.seek(npt_ns, self.seek_timeout)

    async def _prepare_shared(self, name: str) -> None:
        waiters = self._preparing.get(name)
        if waiters is not None:
            d: defer.Deferred = defer.Deferred()
            waiters.append(d)
            await d
            return
        self._preparing[name] = []
        try:
            await self._prepare(name)
        except BaseException as exc:
            for d in self._preparing.pop(name):
                d.errback(exc)
            raise
        for d in self._preparing.pop(name):
            d.callback(None)

    async def _prepare(self, name: str) -> None:
        fill = self.fills.get(name)
        if fill is not None and fill.error is None:
            return
        title = self.catalog.get_title(name)
        if title is not None and title.state == "complete" and not title.damaged:
            return
        if title is not None and title.state == "partial" and title.origin_url and title.size \
                and not title.damaged:
            self.quota.make_room(title.size - self.catalog.cached_bytes(name))
            self._launch(TitleFill.resume(title, **self._fill_args(name, title.origin_url)))
            return
        started = time.monotonic()
        probe = await self._probe(name, title)
        if self.fills.get(name) is not None:  # another request won the race
            return
        self.quota.make_room(probe.size - (self.catalog.cached_bytes(name) if title else 0))
        fill = TitleFill.create(probe, title=title, now=self.clock(),
                                **self._fill_args(name, probe.url))
        if title is not None and title.damaged:
            # a new media file (a new inode) and new hints: sound again
            self.catalog.set_damaged(name, None)
            log.info("title %s: damaged copy replaced; fetching it again from %s",
                     name, probe.url)
        self.misses += 1
        log.info("miss %s: probed %s (%d bytes) in %.1f ms; filling", name, probe.url,
                 probe.size, (time.monotonic() - started) * 1000)
        self._launch(fill)

    async def _probe(self, name: str, title) -> Probe:
        urls = [title.origin_url] if title is not None and title.origin_url else [
            base + name for base in self.base_urls]
        if not urls:
            raise OriginNotFound(f"no origin is configured for {name!r}")
        error: Optional[OriginError] = None
        for url in urls:
            origin = origin_for(url, self.http, self.files)
            for attempt in range(2):
                try:
                    return await origin.probe(url, self.settings.probe_bytes)
                except OriginNotFound as exc:
                    error = error if error is not None and error.status != 404 else exc
                    break
                except OriginError as exc:
                    log.warning("probe of %s failed: %s%s", url, exc,
                                "; retrying" if exc.retryable and not attempt else "")
                    error = exc
                    if not exc.retryable:
                        break
        raise error

    def _fill_args(self, name: str, url: str) -> dict:
        return dict(reactor=self.reactor, catalog=self.catalog,
                    origin=origin_for(url, self.http, self.files), name=name,
                    folder=title_folder(self.cache_dir, name), settings=self.settings,
                    on_end=self._fill_ended, disk_full=self._disk_full, writer=self.writer)

    def _disk_full(self, need: int) -> bool:
        """The disk refused a write: give up other titles' bytes, whatever the quota."""
        try:
            freed = self.quota.make_room(need, ignore_quota=True)
        except CacheFull as exc:
            log.error("the disk is full and nothing can be evicted: %s", exc)
            return False
        log.warning("the disk is full: evicted %d bytes", freed)
        return True

    def _launch(self, fill: TitleFill) -> None:
        self.errors.pop(fill.name, None)
        self.fills[fill.name] = fill
        fill.start()

    def _fill_ended(self, fill: TitleFill) -> None:
        if self.fills.get(fill.name) is fill and (fill.error is None or not fill.listeners):
            del self.fills[fill.name]
        if fill.error is not None:
            self.errors[fill.name] = str(fill.error)
            log.error("fill %s stopped: %s", fill.name, fill.error)
        self._resume_waiting()

    # -- restart ------------------------------------------------------------------

    def resume_all(self) -> None:
        """Resume the fills of every partial title (``max_fills`` at a time)."""
        self._waiting = [t.name for t in self.catalog.list_titles(state="partial")
                         if t.name not in self.fills]
        self._resume_waiting()

    def _resume_waiting(self) -> None:
        while self._waiting and len(self.fills) < self.max_fills:
            name = self._waiting.pop(0)
            title = self.catalog.get_title(name)
            if title is None or title.state != "partial" or name in self.fills:
                continue
            if not (title.origin_url and title.size):
                continue
            try:
                self.quota.make_room(title.size - self.catalog.cached_bytes(name))
                fill = TitleFill.resume(title, **self._fill_args(name, title.origin_url))
            except (OSError, BadMedia, CacheFull) as exc:
                log.error("cannot resume the fill of %s: %s", name, exc)
                continue
            log.info("resuming the fill of %s (%d of %d bytes cached)", name,
                     sum(e - s for s, e in fill.durable), fill.size)
            self._launch(fill)

    async def stop(self) -> None:
        """Stop every fill (what is durable stays recorded) and close connections."""
        self._waiting.clear()
        fills = list(self.fills.values())
        await defer.DeferredList([defer.Deferred.fromCoroutine(f.stop()) for f in fills],
                                 consumeErrors=True)
        await self.http.close()
        if self.writer is not None:
            await self.writer.stop()
