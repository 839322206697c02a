"""The cache quota: room for a fill before it starts, eviction when there is
none, and the figures ``kvod cache status`` shows.

Bytes count once they are recorded in the catalog; a running fill also
holds a reservation for every byte of its title it does not have yet, so
the quota holds exactly: recorded + reserved never exceeds ``max_bytes``.
A fill that cannot get room is refused. Which titles go is
``eviction.plan``'s choice; this module applies it to the catalog first
(so it never claims bytes that are gone), then to the files.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Callable, Iterable

from appliance.cache import eviction
from catalog import cache_entries, get_meta, keep_cached_below, set_meta, set_priority
from rtpengine.index.mpegts import PACKET_SIZE

log = logging.getLogger(__name__)

INFLATION_KEY = "gdsf.inflation"
# How long plays are counted in memory before they are written: a catalog
# write per DESCRIBE costs the start-up time of a viewer and empties the
# RTSP server's title cache; eviction and status write them first anyway.
HIT_FLUSH_SECONDS = 2.0


class CacheFull(Exception):
    """No room for a title even after evicting all that may go."""

    status = 503
    retryable = False


class CacheQuota:
    """Keeps the cache within ``max_bytes`` (0: no quota) under ``policy``."""

    def __init__(self, catalog, *, max_bytes: int = 0, policy: str = "lru",
                 keep_prefix_seconds: float = 0.0,
                 busy: Callable[[str], bool] = lambda name: False,
                 reserved: Callable[[], int] = lambda: 0,
                 on_evict: Callable[[str], None] = lambda name: None,
                 schedule: Callable[[float, Callable[[], None]], object] | None = None) -> None:
        """``schedule(delay, call)`` (a reactor's ``callLater``) batches the
        plays counted by :meth:`on_hit`; without it each is written at once."""
        if policy not in eviction.POLICIES:
            raise ValueError(f"unknown eviction policy {policy!r}")
        self.catalog = catalog
        self.max_bytes = max_bytes
        self.policy = policy
        self.keep_prefix_seconds = keep_prefix_seconds
        self.busy = busy
        self.reserved = reserved
        self.on_evict = on_evict
        self.evicted_bytes = 0
        self.schedule = schedule
        # title -> (plays, last play) not yet in the catalog
        self._hits: dict[str, tuple[int, float]] = {}
        self._flush_pending = False

    def used(self) -> int:
        """Bytes recorded as cached."""
        return self.catalog.total_cached_bytes()

    def on_hit(self, name: str, now: float) -> None:
        """Count a play of ``name`` (and rank it, for the size-aware policy):
        in the catalog within :data:`HIT_FLUSH_SECONDS`, or at once without
        a ``schedule``."""
        count, _ = self._hits.get(name, (0, now))
        self._hits[name] = (count + 1, now)
        if self.schedule is None:
            self.flush_hits()
        elif not self._flush_pending:
            self._flush_pending = True
            self.schedule(HIT_FLUSH_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_pending = False
        try:
            self.flush_hits()
        except Exception:  # a damaged catalog says so elsewhere; plays are not worth a crash
            log.exception("cannot record plays in the catalog")

    def flush_hits(self) -> None:
        """Write the plays counted so far to the catalog (one transaction)."""
        hits, self._hits = self._hits, {}
        if not hits:
            return
        self.catalog.record_hits(hits)
        if self.policy == "gdsf":
            inflation = get_meta(self.catalog, INFLATION_KEY)
            for name in hits:
                title = self.catalog.get_title(name)
                if title is not None and title.size:
                    set_priority(self.catalog, name, eviction.gdsf_priority(
                        inflation, title.hits, title.size))

    def _keep(self, entry) -> int:
        """The prefix tail eviction keeps: the first seconds, whole packets."""
        if not self.keep_prefix_seconds or not entry.size or not entry.duration_ns:
            return 0
        keep = int(entry.size * self.keep_prefix_seconds * 1e9 / entry.duration_ns)
        return min(entry.size, keep - keep % PACKET_SIZE)

    def usages(self) -> list[eviction.Usage]:
        """Every title with cached bytes, as eviction sees it (plays counted
        in memory written first, so the ranking sees them)."""
        self.flush_hits()
        return [eviction.Usage(e.name, e.cached, e.size or e.cached, e.hits,
                               e.last_access or 0.0, e.priority, e.pinned,
                               self.busy(e.name), self._keep(e))
                for e in cache_entries(self.catalog) if e.cached]

    def make_room(self, need: int, *, ignore_quota: bool = False,
                  for_title: str | None = None) -> int:
        """Evict so that ``need`` more bytes fit; returns the bytes evicted.
        Raises CacheFull when they cannot fit, and then evicts nothing: bytes
        given up for room that is not enough anyway would be lost for
        nothing. ``ignore_quota`` frees ``need`` bytes whatever the quota
        says (the disk is full). ``for_title``: the title the room is for,
        whose own bytes are never given up for it."""
        if ignore_quota:
            short = need
        else:
            if not self.max_bytes:
                return 0
            if need > self.max_bytes:
                raise CacheFull(f"a title of {need} bytes is larger than the cache quota "
                                f"({self.max_bytes} bytes)")
            short = self.used() + self.reserved() + need - self.max_bytes
            if short <= 0:
                return 0
        inflation = get_meta(self.catalog, INFLATION_KEY)
        usages = [u for u in self.usages() if u.name != for_title]
        cuts, inflation = eviction.plan(usages, short, self.policy, inflation)
        could = sum(cut.freed for cut in cuts)
        if could < short:
            if ignore_quota:
                raise CacheFull(f"only {could} of {short} bytes could be freed; the rest is "
                                "pinned or in use (nothing was evicted)")
            raise CacheFull(f"{need} bytes do not fit: {self.used()} cached, "
                            f"{self.reserved()} reserved by fills, quota {self.max_bytes}; "
                            "the rest is pinned or in use (nothing was evicted)")
        freed = self.apply(cuts)
        if self.policy == "gdsf":
            set_meta(self.catalog, INFLATION_KEY, inflation)
        return freed

    def apply(self, cuts: Iterable[eviction.Eviction]) -> int:
        """Carry out evictions: the catalog forgets the bytes, then the files lose them."""
        freed = 0
        for cut in cuts:
            freed += self.evict(cut.name, cut.keep)
        return freed

    def evict(self, name: str, keep: int = 0) -> int:
        """Cut title ``name`` to its first ``keep`` bytes (0: every byte, and its
        hint file); returns the bytes freed. The title stays in the catalog
        (``remote`` or ``partial``): it is fetched again when played."""
        title = self.catalog.get_title(name)
        if title is None:
            return 0
        before = self.catalog.cached_bytes(name)
        left = keep_cached_below(self.catalog, name, keep)
        if left == 0:
            self.catalog.replace_tracks(name, [])
            self.catalog.set_state(name, "remote")
            if title.folder:
                shutil.rmtree(title.folder, ignore_errors=True)
        else:
            self.catalog.set_state(name, "partial")
            if title.media_path and title.size:
                # the tail becomes a hole; nothing maps the file (the title is not busy)
                os.truncate(title.media_path, left)
                os.truncate(title.media_path, title.size)
        freed = before - left
        self.evicted_bytes += freed
        self.on_evict(name)
        log.info("evicted %s: %d bytes freed, %d kept (policy %s)", name, freed, left,
                 self.policy)
        return freed


def cache_status(catalog, *, max_bytes: int, policy: str, fills=None,
                 busy: Callable[[str], bool] = lambda name: False,
                 errors: dict | None = None) -> dict:
    """What the cache holds: used and reserved bytes against the quota, and
    each title's state, share cached, plays and pin (a dict for JSON)."""
    fills = fills or {}
    titles = []
    for e in cache_entries(catalog):
        fill = fills.get(e.name)
        titles.append({
            "name": e.name, "state": e.state, "size": e.size, "cached_bytes": e.cached,
            "percent": round(e.percent, 1), "hits": e.hits, "pinned": e.pinned,
            "last_access": e.last_access, "busy": busy(e.name),
            "filling": fill is not None and not fill.complete and fill.error is None,
            "fill_error": (str(fill.error) if fill is not None and fill.error
                           else (errors or {}).get(e.name)),
        })
    reserved = sum(f.size - sum(e - s for s, e in f.durable) for f in fills.values()
                   if not f.complete and f.error is None)
    return {"used_bytes": catalog.total_cached_bytes(), "reserved_bytes": reserved,
            "quota_bytes": max_bytes, "policy": policy, "titles": titles}
