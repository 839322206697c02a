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

from appliance.ingest import title_folder
from appliance.origin import (FileOrigin, HttpOrigin, OriginError, OriginNotFound, Probe,
                              origin_for)
from appliance.title_fill import BadMedia, FillSettings, TitleFill
from catalog import InvalidTitleName, validate_title_name

log = logging.getLogger(__name__)


class ProxyCache:
    """Serves titles from the cache and fills the ones it lacks."""

    def __init__(self, *, reactor, catalog, cache_dir: str, base_urls: tuple[str, ...] = (),
                 settings: FillSettings = FillSettings(), max_fills: int = 4,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connections: int = 8, clock: Callable[[], float] = time.time) -> None:
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

    # -- look-ups for the session layer (no I/O) ------------------------------

    def get_title(self, name: str):
        """The catalog's title ``name``, or None."""
        return self.catalog.get_title(name)

    def record_hit(self, name: str, now: float) -> None:
        """Count a play of ``name``."""
        self.catalog.record_hit(name, now=now)

    def servable(self, title) -> bool:
        """Whether ``title`` can be streamed now: complete, or filling."""
        if not title.tracks:
            return False
        if title.state == "complete":
            return True
        fill = self.fills.get(title.name)
        return title.state == "partial" and fill is not None and fill.error is None

    def can_fetch(self, name: str, title=None) -> bool:
        """Whether :meth:`prepare` may make ``name`` servable."""
        if title is not None and title.state == "complete":
            return False
        try:
            validate_title_name(name)
        except InvalidTitleName:
            return False
        return bool(self.base_urls or (title is not None and title.origin_url))

    def fill_for(self, name: str) -> Optional[TitleFill]:
        """The running fill of ``name``, or None."""
        return self.fills.get(name)

    # -- making titles servable ----------------------------------------------------

    async def prepare(self, name: str) -> None:
        """Make ``name`` servable: resume its fill or probe the origin and start
        one. Concurrent calls for one title share one probe. Raises
        OriginError (its ``status`` is the RTSP answer)."""
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
        if title is not None and title.state == "complete":
            return
        if title is not None and title.state == "partial" and title.tracks \
                and title.origin_url and title.size:
            self._launch(TitleFill.resume(title, **self._fill_args(name, title.origin_url)))
            return
        started = time.monotonic()
        probe = await self._probe(name, title)
        fill = TitleFill.create(probe, title=title, now=self.clock(),
                                **self._fill_args(name, probe.url))
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
                    return await origin.probe(url, self.settings.probe_bytes,
                                              self.settings.tail_bytes)
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
                    on_end=self._fill_ended)

    def _launch(self, fill: TitleFill) -> None:
        self.fills[fill.name] = fill
        fill.start()

    def _fill_ended(self, fill: TitleFill) -> None:
        if self.fills.get(fill.name) is fill and (fill.error is None or not fill.listeners):
            del self.fills[fill.name]
        if fill.error is not None:
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
            if not (title.origin_url and title.size and title.tracks):
                continue
            try:
                fill = TitleFill.resume(title, **self._fill_args(name, title.origin_url))
            except (OSError, BadMedia) as exc:
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
