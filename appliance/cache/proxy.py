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

import errno
import logging
import os
import time
from typing import Callable, Optional

from twisted.internet import defer

from appliance.cache.quota import CacheFull, CacheQuota, cache_status
from appliance.cache.layout import title_folder
from appliance.cache.origin import (FileOrigin, HttpOrigin, OriginError, OriginNotFound, Probe,
                                    OriginUnavailable, origin_for)
from appliance.cache.fill import CacheWriteError, FillSettings, TitleFill
from appliance.cache.fill_slots import FillSlots, SharedWait
from appliance.cache.mp4_fill import MoovNotCached, Mp4TitleFill, fetch_moov
from catalog import InvalidTitleName, validate_title_name
from rtpengine.index.mp4 import looks_like_mp4

log = logging.getLogger(__name__)

# Hint records take 32 bytes per 1316 media bytes (7 TS packets): room on disk
# is asked for the media bytes and this share more.
_HINT_SHARE = 40


def disk_free(folder: str) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s file system."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class ProxyCache:
    """Serves titles from the cache and fills the ones it lacks."""

    def __init__(self, *, reactor, catalog, cache_dir: str, base_urls: tuple[str, ...] = (),
                 settings: FillSettings = FillSettings(), max_fills: int = 4,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connections: int = 8, clock: Callable[[], float] = time.time,
                 max_bytes: int = 0, policy: str = "lru",
                 keep_prefix_seconds: float = 0.0, writer=None,
                 seek_timeout: float = 10.0, probe_timeout: float = 10.0,
                 queue_timeout: float = 15.0, min_rate: float = 16 << 10) -> None:
        """``max_fills`` bounds the probes and fills that talk to origins at
        once; a DESCRIBE beyond it waits in a queue for ``queue_timeout``
        seconds (then 503). ``probe_timeout`` bounds a DESCRIBE's probe (then
        504); ``min_rate`` (bytes/s) is the slowest body an origin may send."""
        self.reactor = reactor
        self.catalog = catalog
        self.cache_dir = cache_dir
        self.base_urls = base_urls
        self.settings = settings
        self.max_fills = max_fills
        self.clock = clock
        self.probe_timeout = probe_timeout
        self.http = HttpOrigin(reactor, connect_timeout=connect_timeout,
                               read_timeout=read_timeout, connections=connections,
                               min_rate=min_rate)
        self.files = FileOrigin(reactor)
        self.fills: dict[str, TitleFill] = {}
        self.in_use: Callable[[str], bool] = lambda name: False
        self._preparing: dict[str, SharedWait] = {}
        self.slots = FillSlots(reactor, limit=max_fills, queue_timeout=queue_timeout,
                               running=self.running_fills)
        self._waiting: list[str] = []       # partial titles to resume when a slot frees
        self._backlog: list[str] = []       # prefetches waiting for a slot
        self.misses = 0
        self.hits = 0
        self.errors: dict[str, str] = {}    # why the last fill of a title stopped
        self.writer = writer
        self.seek_timeout = seek_timeout
        self.quota = CacheQuota(catalog, max_bytes=max_bytes, policy=policy,
                                keep_prefix_seconds=keep_prefix_seconds, busy=self.busy,
                                reserved=self.reserved, on_evict=self._evicted,
                                schedule=reactor.callLater)

    # -- look-ups for the session layer (no I/O) ------------------------------

    def get_title(self, name: str):
        """The catalog's title ``name``, or None."""
        return self.catalog.get_title(name)

    def record_hit(self, name: str, now: float) -> None:
        """Count a play of ``name``."""
        self.hits += 1
        self.quota.on_hit(name, now)

    def busy(self, name: str) -> bool:
        """Whether ``name`` is streamed or filled now (it must not be evicted)."""
        fill = self.fills.get(name)
        return (fill is not None and fill.error is None) or self.in_use(name)

    def _evicted(self, name: str) -> None:
        # a stopped fill kept so its bytes could be played: they are gone now
        fill = self.fills.get(name)
        if fill is not None and fill.error is not None:
            del self.fills[name]

    def running_fills(self) -> int:
        """Fills that fetch now (or will, once their start-up is done)."""
        return sum(1 for f in self.fills.values()
                   if f.error is None and not f.stopped and not f.done.called)

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
        # a fill that stopped (disk full, origin gone) still serves its bytes
        return title.state == "partial" and fill is not None and (
            fill.error is None or fill.hints().count > 0)

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
        """The cache's figures and titles (``kvod cache status``), the
        prefetches waiting for a slot and those that failed before their
        title was known (``prefetch_errors``)."""
        self.quota.flush_hits()
        status = cache_status(self.catalog, max_bytes=self.quota.max_bytes,
                              policy=self.quota.policy, fills=self.fills, busy=self.busy,
                              errors=self.errors)
        known = {t["name"] for t in status["titles"]}
        status["prefetch_queue"] = list(self._backlog)
        status["prefetch_errors"] = {n: e for n, e in self.errors.items() if n not in known}
        return status

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

    async def prepare(self, name: str, npt_ns: Optional[int] = None, *,
                      keep: bool = False, patient: bool = False) -> None:
        """Make ``name`` servable: resume its fill or probe the origin and start
        one; with ``npt_ns``, also make that time playable soon (a seek ahead
        of the fill: those bytes come first). Concurrent calls for one title
        share one probe; cancelling a call stops waiting (and the probe, or
        the place in the fill queue, when nobody else waits). ``keep``: a
        prefetch, the fill runs on with no viewer; ``patient``: wait for a
        fill slot without a time limit. Raises OriginError or CacheFull
        (their ``status`` is the RTSP answer)."""
        await self._prepare_shared(name, patient)
        fill = self.fills.get(name)
        if keep and fill is not None:
            fill.keep = True
        if npt_ns is not None and fill is not None:
            await fill.seek(npt_ns, self.seek_timeout)

    async def prefetch(self, name: str, *, wait: bool = False) -> bool:
        """Fill ``name`` whether anyone watches it or not. When every fill
        slot is taken, ``name`` joins the prefetch backlog, started as slots
        free up after the viewers' queue, and False is returned at once (an
        operator may prefetch a whole list); ``wait``: wait for a slot
        instead, however long (the CLI when no daemon runs)."""
        fill = self.fills.get(name)
        busy = fill is None or fill.error is not None or fill.stopped
        if not wait and busy and (self.slots.queue or not self.slots.free()):
            if name not in self._backlog:
                self._backlog.append(name)
                log.info("prefetch of %s: every fill slot is taken; it starts when one "
                         "frees", name)
            return False
        await self.prepare(name, keep=True, patient=wait)
        return True

    def _start_backlog(self) -> None:
        while self._backlog and not self.slots.queue and self.slots.free():
            name = self._backlog.pop(0)
            d = defer.Deferred.fromCoroutine(self.prepare(name, keep=True))
            d.addErrback(self._prefetch_failed, name)

    def _prefetch_failed(self, failure, name: str) -> None:
        # shown by status(): kvod cache prefetch waits on it
        self.errors[name] = failure.getErrorMessage()
        log.error("prefetch of %s failed: %s", name, failure.getErrorMessage())

    async def _prepare_shared(self, name: str, patient: bool = False) -> None:
        shared = self._preparing.get(name)
        if shared is None:
            shared = SharedWait(defer.Deferred.fromCoroutine(self._prepare(name, patient)))
            if not shared.done:
                self._preparing[name] = shared
                shared.work.addBoth(lambda _: self._preparing.pop(name, None))
        await shared.wait()

    async def _prepare(self, name: str, patient: bool = False) -> None:
        fill = self.fills.get(name)
        if fill is not None and fill.error is None and not fill.stopped:
            return
        title = self.catalog.get_title(name)
        if title is not None and title.state == "complete" and not title.damaged:
            return
        await self.slots.take(name, patient=patient)
        try:
            await self._start(name)
        finally:
            self.slots.release()
            self._resume_waiting()
            self._start_backlog()

    async def _start(self, name: str) -> None:
        """Under a fill slot: resume or probe and create the fill of ``name``."""
        fill = self.fills.get(name)
        if fill is not None and fill.error is None and not fill.stopped:
            return  # started while this one waited for its slot
        title = self.catalog.get_title(name)
        if title is not None and title.state == "complete" and not title.damaged:
            return
        if title is not None and title.state == "partial" and title.origin_url and title.size \
                and not title.damaged:
            try:
                self._make_room(name, title.size - self.catalog.cached_bytes(name))
                self._launch(fill_class(title).resume(
                    title, **self._fill_args(name, title.origin_url)))
                return
            except MoovNotCached as exc:
                log.warning("%s; fetching the title again", exc)   # a probe, below
            except (CacheFull, CacheWriteError, OSError) as exc:
                error = _no_room(name, exc)
                if self._serve_stopped(title, error):
                    return
                raise error from None
        started = time.monotonic()
        probe = await self._probe(name, title)
        # an MP4 is described by its moov, wherever it lies: fetched now
        mp4 = await fetch_moov(origin_for(probe.url, self.http, self.files), probe,
                               tail_bytes=self.settings.tail_bytes or self.settings.probe_bytes
                               ) if looks_like_mp4(probe.head) else None
        if self.fills.get(name) is not None and self.fills[name].error is None:
            return  # another request won the race
        try:
            self._make_room(name, probe.size - (self.catalog.cached_bytes(name) if title else 0))
            if mp4 is not None:
                fill = Mp4TitleFill.create(probe, mp4, title=title, now=self.clock(),
                                           **self._fill_args(name, probe.url))
            else:
                fill = TitleFill.create(probe, title=title, now=self.clock(),
                                        **self._fill_args(name, probe.url))
        except (CacheFull, CacheWriteError, OSError) as exc:
            raise _no_room(name, exc) from None
        if title is not None and title.damaged:
            # a new media file (a new inode) and new hints: sound again
            self.catalog.set_damaged(name, None)
            log.info("title %s: damaged copy replaced; fetching it again from %s",
                     name, probe.url)
        self.misses += 1
        log.info("miss %s: probed %s (%d bytes) in %.1f ms; filling", name, probe.url,
                 probe.size, (time.monotonic() - started) * 1000)
        self._launch(fill)

    def _serve_stopped(self, title, error: OriginError) -> bool:
        """A partial title whose fill cannot run: serve the bytes it has (its
        viewers end cleanly where they stop). False if there are none."""
        fill = self.fills.get(title.name)
        if fill is None:
            try:
                fill = fill_class(title).resume(
                    title, **self._fill_args(title.name, title.origin_url))
            except (OSError, OriginError) as exc:
                log.warning("%s: cannot index its cached bytes either: %s", title.name, exc)
                return False
            fill.abandon(error)
            self.fills[title.name] = fill
        if not fill.hints().count:
            return False
        log.warning("%s: %s; serving the %d bytes it has", title.name, error,
                    self.catalog.cached_bytes(title.name))
        self.errors[title.name] = str(error)
        return True

    async def _probe(self, name: str, title) -> Probe:
        urls = [title.origin_url] if title is not None and title.origin_url else [
            base + name for base in self.base_urls]
        if not urls:
            raise OriginNotFound(f"no origin is configured for {name!r}")
        # one deadline for every try: DESCRIBE must get its answer in time
        deadline = self.reactor.seconds() + self.probe_timeout
        error: Optional[OriginError] = None
        for url in urls:
            origin = origin_for(url, self.http, self.files)
            for attempt in range(2):
                if self.reactor.seconds() >= deadline:
                    raise OriginUnavailable(
                        f"{name}: no probe answered within origin.probe_timeout "
                        f"({self.probe_timeout:g} s); last: {error}")
                try:
                    return await origin.probe(url, self.settings.probe_bytes,
                                              deadline=deadline)
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

    def _make_room(self, name: str, need: int) -> None:
        """Room for ``need`` more bytes of ``name``, under the quota and on the
        disk; nothing is evicted unless the evictions make room for all of
        them (CacheFull otherwise)."""
        need = max(need, 0)
        self.quota.make_room(need, for_title=name)
        need += need // _HINT_SHARE
        os.makedirs(self.cache_dir, exist_ok=True)
        free = disk_free(self.cache_dir)
        promised = self.reserved()   # what running fills will still write
        short = need + promised - free
        if short <= 0:
            return
        try:
            freed = self.quota.make_room(short, ignore_quota=True, for_title=name)
        except CacheFull as exc:
            raise CacheFull(f"{os.strerror(errno.ENOSPC)}: {name} needs {need} bytes, the "
                            f"cache's file system has {free} free ({promised} promised to "
                            f"running fills), and {exc}") from None
        log.warning("the disk is full: evicted %d bytes to make room for %s", freed, name)

    def _disk_full(self, need: int) -> bool:
        """The disk refused a write of a fill that still needs ``need`` bytes:
        give up other titles' bytes, whatever the quota, but only if that
        makes room for all of them (a fill that would fail anyway must not
        cost the cache its titles)."""
        try:
            freed = self.quota.make_room(need + need // _HINT_SHARE, ignore_quota=True)
        except CacheFull as exc:
            log.error("the disk is full and evicting cannot make room for the rest of the "
                      "fill: %s", exc)
            return False
        log.warning("the disk is full: evicted %d bytes", freed)
        return True

    def _launch(self, fill: TitleFill) -> None:
        self.errors.pop(fill.name, None)
        self.fills[fill.name] = fill
        fill.start()

    def _fill_ended(self, fill: TitleFill) -> None:
        # a fill that failed stays, for later viewers of the bytes it has
        if self.fills.get(fill.name) is fill and (fill.error is None or not fill.complete
                                                  and fill.hints().count == 0):
            del self.fills[fill.name]
        if fill.error is not None:
            self.errors[fill.name] = str(fill.error)
            log.error("fill %s stopped: %s", fill.name, fill.error)
        self.slots.grant()
        self._resume_waiting()
        self._start_backlog()

    # -- restart ------------------------------------------------------------------

    def resume_all(self) -> None:
        """Resume the fills of every partial title (``max_fills`` at a time)."""
        self._waiting = [t.name for t in self.catalog.list_titles(state="partial")
                         if t.name not in self.fills]
        self._resume_waiting()

    def _resume_waiting(self) -> None:
        while self._waiting and not self.slots.queue and self.slots.free():
            name = self._waiting.pop(0)
            title = self.catalog.get_title(name)
            if title is None or title.state != "partial" or name in self.fills:
                continue
            if not (title.origin_url and title.size):
                continue
            try:
                self._make_room(name, title.size - self.catalog.cached_bytes(name))
                fill = fill_class(title).resume(
                    title, **self._fill_args(name, title.origin_url))
            except (OSError, OriginError, CacheFull) as exc:
                log.error("cannot resume the fill of %s: %s", name, exc)
                continue
            fill.keep = True   # it was filling when the daemon stopped
            log.info("resuming the fill of %s (%d of %d bytes cached)", name,
                     sum(e - s for s, e in fill.durable), fill.size)
            self._launch(fill)

    async def stop(self) -> None:
        """Stop every fill (what is durable stays recorded) and close connections."""
        self._waiting.clear()
        self._backlog.clear()
        self.slots.cancel_all()
        fills = list(self.fills.values())
        await defer.DeferredList([defer.Deferred.fromCoroutine(f.stop()) for f in fills],
                                 consumeErrors=True)
        await self.http.close()
        self.quota.flush_hits()
        if self.writer is not None:
            await self.writer.stop()


def fill_class(title) -> type[TitleFill]:
    """The fill that resumes a partial ``title``: by its container."""
    return Mp4TitleFill if title.container == "mp4" else TitleFill


def _no_room(name: str, exc: BaseException) -> OriginError:
    """A fill that cannot start for want of room, as the error viewers get (503)."""
    if isinstance(exc, OriginError):
        return exc
    if isinstance(exc, CacheFull):
        return CacheWriteError(str(exc))
    return CacheWriteError(f"{name}: cannot write to the cache: {exc}")
