"""One title's fill: origin bytes into a sparse file, durable ranges into the
catalog, hint records out to the streams that play it meanwhile.

The media file is created at the title's full size (sparse), so the engine
maps it whole at open; bytes are written where they belong as they arrive.
Three things follow every write, each coalesced so that a burst of writes
costs one of each:

- durability: ``fsync`` in a worker thread, then the ranges written before
  it began are recorded in the catalog (``add_cached_range``). Nothing is
  recorded before it is on disk, so after a crash or ``kill -9`` the
  catalog names only bytes that are there. Each request's bytes are handed
  to the disk every WRITEBACK_BYTES as they come (not waited for), so an
  fsync finds them mostly written. A body spliced from a near origin is
  written by the splice's own thread (body_splice) and counted here, in the
  reactor, as it reports;
- indexing: the C scan runs in a worker thread over the contiguous prefix
  (``GrowingTsIndex``); final records are appended to the growing hint file
  and the streams are told (``HintUpdate``);
- planning: the next Range request (``fill_plan.next_request``) never asks
  for a byte held or in flight, so every viewer of the title shares this
  one fill and each byte is fetched once.

When every byte is durable, the final hint file is written (fsync, rename)
and the title becomes ``complete``. A title that changed at the origin
(If-Range answered 200, another ETag) is discarded: its viewers get a clean
end, a new media file is made (never truncated under the engine's mapping)
and the fill starts over, after a back-off, at most ``max_changes`` times
in a row.

An origin that answers a Range request with the whole title of the same
version ignores If-Range or Range: the fill asks with Range alone, or reads
the title once front to back. A fill that no viewer streams and no prefetch
wants stops after ``idle_timeout`` and keeps its bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

from twisted.internet import defer, threads
from twisted.internet.task import deferLater

from appliance.cache.fill_plan import back_off, next_request
from appliance.cache.layout import hint_path, media_path
from appliance.cache.origin import (OriginChanged, OriginError, Probe, RangesIgnored,
                                    Validator)
from appliance.cache.request_size import RequestSize
from appliance.cache.seek_ahead import SeekSegment, estimate_offset
from catalog import TitleNotFound
from catalog.byte_ranges import Range, add, end_from, subtract, union
from rtpengine.engine import start_writeback
from rtpengine.index.errors import MediaError
from rtpengine.hintfile import RECORD_SIZE, GrowingHintFile, HintRecord
from rtpengine.index.file_reads import FileBytes
from rtpengine.index.mpegts import CLOCK_RATE, PAYLOAD_TYPE_MP2T
from rtpengine.index.mpegts_growing import GrowingTsIndex, estimate_duration_ns, first_pcr

log = logging.getLogger(__name__)

_TAIL = "the title's tail"   # the fill's own want, among the viewers' ones
# While a long request runs, what came so far is made durable this often, so
# a crash loses at most this much of a slow fill.
SYNC_INTERVAL = 0.5
# ... and once this many bytes came since the last fsync began: a fast fill
# then hands the disk its bytes while more arrive, instead of one long
# fsync of the whole title at the end.
SYNC_BYTES = 32 << 20
# A request's bytes are handed to the disk every this many (sync_file_range,
# not waited for), so the fsyncs find them mostly written: without it the
# disk idles while bytes come and each fsync waits for all of them. Nothing
# counts as durable before the fsync.
WRITEBACK_BYTES = 4 << 20


class CacheWriteError(OriginError):
    """The cache could not store bytes (disk full, I/O error)."""

    status = 503


class BadMedia(OriginError):
    """The origin's title is not a stream kvod can serve."""

    status = 415
    retryable = False


@dataclass(frozen=True)
class FillSettings:
    """How a fill talks to the origin; from ``[origin]`` in the config."""

    chunk_bytes: int = 1 << 20
    requests_per_fill: int = 2
    retries: int = 6
    retry_delay: float = 0.5
    retry_max_delay: float = 10.0
    probe_bytes: int = 256 << 10
    tail_bytes: int = 64 << 10
    max_changes: int = 3         # the title changed this often in a row: give up
    idle_timeout: float = 30.0   # no viewer, no prefetch this long: stop, keep the bytes
    probe_timeout: float = 10.0  # a re-probe (after a change) must be done by then


@dataclass(frozen=True)
class HintUpdate:
    """The hint file streams of this title should send from now."""

    path: str
    count: Optional[int]        # None: the header's count (the final file)
    growing: bool


class FillListener(Protocol):
    """What a stream of a filling title is told."""

    def hints_grew(self, update: HintUpdate) -> None:
        """More records (or the final file) are there."""

    def fill_stopped(self, error: OriginError) -> None:
        """The fill gave up; bytes that are not there will not come."""

    def title_changed(self) -> None:
        """The bytes sent so far belong to a version the origin no longer has."""


class TitleFill:
    """The fill of one title; made by :meth:`create` (a new title) or
    :meth:`resume` (a partial one the catalog knows)."""

    def __init__(self, *, reactor, catalog, origin, name: str, url: str, folder: str,
                 settings: FillSettings, on_end: Callable[["TitleFill"], None] = lambda f: None,
                 disk_full: Callable[[int], bool] = lambda need: False,
                 writer=None) -> None:
        """``writer`` (a CatalogWriter) runs the fsync and the range records in
        its thread on its own connection; without one, the fsync runs in a
        worker thread and the records are written here."""
        self.writer = writer
        self.reactor = reactor
        self.catalog = catalog
        self.origin = origin
        self.name = name
        self.url = url
        self.folder = folder
        self.settings = settings
        self.media_path = media_path(folder)
        self.hint_path = hint_path(folder)
        self.size = 0
        self.validator = Validator()
        self.held: list[Range] = []
        self.durable: list[Range] = []
        self.inflight: dict[object, Range] = {}
        self.listeners: set[FillListener] = set()
        self.wants: dict[object, int] = {}
        self.complete = False
        self.error: Optional[OriginError] = None
        self.stopped = False
        self.bytes_fetched = 0
        self.started_at = time.monotonic()
        self.finished_at: Optional[float] = None
        self.done: defer.Deferred = defer.Deferred()
        self._on_end = on_end
        self._disk_full = disk_full
        self._generation = 0
        self._failures = 0
        self._fd: Optional[int] = None
        self._media: Optional[FileBytes] = None     # the media file's bytes
        self._index: Optional[GrowingTsIndex] = None
        self._hints: Optional[GrowingHintFile] = None
        self._fetches: dict[object, defer.Deferred] = {}
        self._sync: Optional[defer.Deferred] = None
        self._sync_again = False
        self._last_sync = 0.0
        self._unsynced = 0         # bytes stored since the last fsync began
        self._request_size = RequestSize(settings.chunk_bytes)
        self._sync_call = None
        self._indexing: Optional[defer.Deferred] = None
        self._splices: list[defer.Deferred] = []   # a splice thread's file, until it closes
        # bumped when the media file closes or is replaced: a request's bytes
        # belong to the file that was open when it began, and no other
        self._file_epoch = 0
        self._splice_lock = threading.Lock()
        self._index_again = False
        self._run_d: Optional[defer.Deferred] = None
        self._started = False
        self.segments: list[SeekSegment] = []
        self._seekers: list[defer.Deferred] = []   # seek() calls waiting for a change
        self._segment_number = 0
        self._main_last_ns: Optional[int] = None
        self._turn = 0
        self.duration_ns: Optional[int] = None   # an estimate until complete
        self._tail_start: Optional[int] = None
        # How to ask the origin: Range with If-Range; Range alone (an origin
        # that ignores If-Range; each 206's validator is still checked); or
        # one sequential read of the whole title (an origin without Range).
        self.ranges = True
        self.if_range = True
        self._changes = 0          # the title changed this many times in a row
        self._quiet = False        # closing the files: start no scan, no fsync
        # kept: fills on for nobody (a prefetch, a resume at start-up);
        # otherwise it stops once no viewer is attached for idle_timeout
        self.keep = False
        self._idle_since: Optional[float] = None
        self._idle_call = None
        self._last_count = 0       # hint records when the files closed

    # -- making it -----------------------------------------------------------

    @classmethod
    def create(cls, probe: Probe, *, title=None, now: float, **kw) -> "TitleFill":
        """A new fill from ``probe``: files made, the probed bytes written and
        indexed, the title entered (or updated) in the catalog as ``partial``.
        Raises BadMedia if the first bytes are not a stream kvod serves."""
        fill = cls(url=probe.url, **kw)
        try:
            fill._start_copy(probe)
            fill._enter_in_catalog(probe, title, now)
        except BaseException:
            fill._close_files()
            raise
        return fill

    @classmethod
    def resume(cls, title, **kw) -> "TitleFill":
        """The fill of a ``partial`` title from its recorded ranges: bytes of
        the file that were never recorded count as missing."""
        fill = cls(url=title.origin_url, **kw)
        fill.size = title.size
        fill.validator = Validator(title.etag, title.last_modified)
        fill.duration_ns = title.duration_ns
        fill.durable = fill.catalog.cached_ranges(title.name)
        fill.held = list(fill.durable)
        exists = os.path.exists(fill.media_path)
        if not exists and fill.durable:
            log.warning("fill %s: %s is gone; fetching every byte again", title.name,
                        fill.media_path)
            fill.catalog.clear_cached_ranges(title.name)
            fill.durable, fill.held = [], []
        with fill._closed_on_failure(title.name):
            fill._open_files(create=not exists)
            fill._index_sync()
            fill._want_tail()
            if not title.tracks:  # its hint file went with an eviction
                fill.catalog.replace_tracks(title.name, fill._track_rows())
        return fill

    @contextmanager
    def _closed_on_failure(self, what: str) -> Iterator[None]:
        """Making the fill: on any failure its files are closed; a MediaError
        (the bytes are not a title kvod serves) is ``what``'s BadMedia."""
        try:
            yield
        except MediaError as exc:
            self._close_files()
            raise BadMedia(f"{what}: {exc}") from None
        except BaseException:
            self._close_files()
            raise

    def _open_files(self, *, create: bool) -> None:
        os.makedirs(self.folder, exist_ok=True)
        if create:
            # a new inode: a mapping of an older copy keeps its own pages
            tmp = self.media_path + ".new"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            os.replace(tmp, self.media_path)
        else:
            fd = os.open(self.media_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size < self.size:
                os.ftruncate(fd, self.size)  # sparse: no block is written
            # read with pread, not mapped: a page past the end of a file cut
            # short under the fill would kill the daemon with SIGBUS
            self._media = FileBytes(fd, self.media_path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._make_index()

    def _make_index(self) -> None:
        """The growing index and hint file of the media file just opened."""
        self._index = GrowingTsIndex(self.name)
        self._hints = GrowingHintFile(self.hint_path, CLOCK_RATE, PAYLOAD_TYPE_MP2T)

    def _start_copy(self, probe: Probe) -> None:
        self.size = probe.size
        self.validator = probe.validator
        self.ranges = probe.ranges
        self.if_range = True
        if not probe.ranges:
            log.warning("fill %s: %s ignores Range requests: the title is read once, "
                        "front to back (no seek ahead, no resume mid-title)",
                        self.name, probe.url)
        self._open_files(create=True)
        # indexed right below, in this thread: no scan may run beside it
        self._store(0, probe.head)
        self.bytes_fetched += len(probe.head)
        try:
            self._index_sync()
        except MediaError as exc:
            raise BadMedia(f"{probe.url}: {exc}") from None
        self._want_tail()

    def _want_tail(self) -> None:
        """The title's last bytes come first: with the first ones they give its
        duration (for status, eviction prefixes and seeks ahead). Fetched by
        the fill, not the probe, so DESCRIBE waits for one request only."""
        if self.duration_ns or not self.settings.tail_bytes or not self.ranges:
            return
        start = max(self.contiguous(), self.size - self.settings.tail_bytes)
        if start < self.size:
            self._tail_start = start
            self.wants[_TAIL] = start

    def _estimate_duration(self) -> None:
        start = self._tail_start
        if start is None or end_from(self.held, start) < self.size or self._media is None \
                or self._index is None or self._index.program is None:
            return
        self._tail_start = None
        self.wants.pop(_TAIL, None)
        try:
            head = self._media[:min(self.contiguous(), self.settings.probe_bytes)]
            tail = self._media[start:self.size]
        except MediaError as exc:       # the file was cut short under the fill
            self._stop_with(BadMedia(f"{self.media_path}: {exc}"))
            return
        duration = estimate_duration_ns(head, tail, start, self.size,
                                        self._index.program.pcr_pid)
        if duration and not self.complete:
            self.duration_ns = duration
            self.catalog.update_title(self.name, duration_ns=duration,
                                      bitrate=self.size * 8 * 10**9 // duration)
            self._progressed()

    def _enter_in_catalog(self, probe: Probe, title, now: float) -> None:
        fields = dict(origin_url=probe.url, size=probe.size, duration_ns=None, bitrate=None,
                      etag=probe.validator.etag, last_modified=probe.validator.last_modified,
                      media_path=self.media_path, folder=self.folder)
        tracks = [self._track(self._hints.count)]
        if title is None:
            self.catalog.add_title(self.name, container="mpegts", state="partial", now=now,
                                   tracks=tracks, **fields)
        else:
            self.catalog.clear_cached_ranges(self.name)
            self.catalog.update_title(self.name, **fields)
            self.catalog.replace_tracks(self.name, tracks)
            self.catalog.set_state(self.name, "partial")

    def _track_rows(self) -> list[dict]:
        """The catalog's track rows of what is indexed so far."""
        return [self._track(self._hints.count)]

    def _track(self, packets: int) -> dict:
        return dict(track_index=0, media_type="video", codec="MP2T",
                    payload_type=PAYLOAD_TYPE_MP2T, clock_rate=CLOCK_RATE,
                    hint_path=self.hint_path, packets=packets)

    def _close_files(self) -> None:
        self._file_epoch += 1
        self._close_segments()
        if self._hints is not None:
            self._last_count = self._hints.count
            self._hints.close()
            self._hints = None
        if self._index is not None:
            self._index.close()
            self._index = None
        self._media = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- what streams see ------------------------------------------------------

    def hints(self, track: int = 0) -> HintUpdate:
        """The hint file a new stream of this title (of its ``track``; an
        MPEG-TS has one) opens now."""
        if self.complete:
            return HintUpdate(self.hint_path, None, False)
        return HintUpdate(self.hint_path,
                          self._hints.count if self._hints else self._last_count, True)

    def attach(self, listener: FillListener) -> None:
        """Tell ``listener`` about new records until it detaches."""
        self.listeners.add(listener)

    def detach(self, listener: FillListener) -> None:
        """Stop telling ``listener``; forget what it wanted."""
        self.listeners.discard(listener)
        self.wants.pop(listener, None)

    def want(self, who: object, offset: Optional[int]) -> None:
        """``who`` needs the bytes from ``offset`` on first (None: no more)."""
        if offset is None:
            self.wants.pop(who, None)
        else:
            self.wants[who] = offset

    def contiguous(self) -> int:
        """Bytes held from offset 0 without a hole."""
        return end_from(self.held, 0)

    # -- running ---------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Fetch every missing byte; ``done`` fires when the title is complete
        (or the fill stopped)."""
        if not self._started:
            # set first: the coroutine runs up to its first wait right here
            self._started = True
            self._run_d = defer.Deferred.fromCoroutine(self._run())
            self._run_d.addErrback(self._crashed)
            self._check_idle()
        return self.done

    def _check_idle(self) -> None:
        """Once a second: a fill nobody watches (no stream attached) and
        nobody asked for (no prefetch) stops after ``idle_timeout`` seconds
        and keeps what it has; the next DESCRIBE resumes it."""
        self._idle_call = None
        if not self._running():
            return
        if self.listeners or self.keep:
            self._idle_since = None
        else:
            now = self.reactor.seconds()
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= self.settings.idle_timeout:
                log.info("fill %s: no viewer for %.0f s and no prefetch: stopping with %d of "
                         "%d bytes (the next DESCRIBE resumes it)", self.name,
                         now - self._idle_since, sum(e - s for s, e in self.held), self.size)
                defer.Deferred.fromCoroutine(self.stop()).addErrback(self._crashed)
                return
        self._idle_call = self.reactor.callLater(min(1.0, self.settings.idle_timeout),
                                                 self._check_idle)

    def _crashed(self, failure) -> None:
        log.error("fill %s: %s", self.name, failure.getTraceback())
        self._end(OriginError(f"internal error: {failure.getErrorMessage()}"))

    async def _run(self) -> None:
        while not self.stopped and self.error is None:
            generation = self._generation
            workers = [defer.Deferred.fromCoroutine(self._worker(generation))
                       for _ in range(self.settings.requests_per_fill)]
            for worker in workers:
                worker.addErrback(self._crashed)
            await defer.DeferredList(workers, consumeErrors=True)
            if generation != self._generation:
                await self._restart_copy()
                continue
            if self.stopped or self.error is not None:
                break
            await self._settle()
            if self.stopped or self.error is not None:
                break
            if self.durable == [(0, self.size)]:
                await self._finish()
                return
            # an fsync failed: its bytes are missing again
            if self._failures > self.settings.retries:
                self.error = CacheWriteError(f"cannot make {self.media_path} durable")
            elif next_request(self.size, 1, self.held, ()) is None:
                self.error = OriginError(f"{self.name}: every byte is held but not all "
                                         "are durable")
        await self._settle_quietly()
        self._end(self.error)

    async def _worker(self, generation: int, only: Optional[SeekSegment] = None) -> None:
        """Fetch chunks until there is nothing left to ask for (``only``: the
        bytes of that seek segment, while it is needed)."""
        while generation == self._generation and not self.stopped and self.error is None:
            if only is not None:
                if only not in self.segments:
                    return
                request = next_request(self.size, self.settings.chunk_bytes, self.held,
                                       self.inflight.values(), [only.next_needed(self.held)])
                if request is not None and request[0] < only.start:
                    return  # its bytes are all there or on their way
            elif not self.ranges:
                # one sequential read; the other workers have nothing to do
                if self.inflight or self.contiguous() >= self.size:
                    return
                request = (self.contiguous(), self.size)
            else:
                request = next_request(self.size, self._request_bytes(), self.held,
                                       self.inflight.values(), self._wanted())
            if request is None:
                return
            token = object()
            self.inflight[token] = request
            asked_if_range = self.if_range and bool(self.validator.if_range())
            if self.ranges:
                d = defer.Deferred.fromCoroutine(self.origin.fetch(
                    self.url, request[0], request[1], self.validator, self._sink(generation),
                    size=self.size, if_range=self.if_range))
            else:
                d = defer.Deferred.fromCoroutine(self.origin.fetch_whole(
                    self.url, self.validator, self._sink(generation, skip=request[0]),
                    size=self.size))
            self._fetches[token] = d
            asked_at = self.reactor.seconds()
            try:
                got = await d
                self._request_size.took(got, self.reactor.seconds() - asked_at)
                self.bytes_fetched += got
                self._failures = 0
                self._changes = 0
            except defer.CancelledError:
                return
            except RangesIgnored as exc:
                if generation == self._generation and not self.stopped:
                    self._ask_differently(exc, asked_if_range)
                continue
            except OriginChanged as exc:
                if generation == self._generation:
                    self._changes += 1
                    log.warning("fill %s: %s; change %d in a row: checking the title again",
                                self.name, exc, self._changes)
                    self._generation += 1
                    self._cancel_fetches()
                return
            except OriginError as exc:
                self.bytes_fetched += exc.received
                if generation != self._generation or self.stopped:
                    return
                if not await self._retry_or_stop(request, exc):
                    return
            finally:
                del self.inflight[token]
                self._fetches.pop(token, None)
                self._kick_sync()

    def _request_bytes(self) -> int:
        """The size of the next Range request: the configured chunk for a
        fill a viewer waits on or may soon (its wants and seeks wait behind
        the requests in flight, and an origin that was fast may not stay
        so); more from a fast origin for a fill nobody watches (a prefetch,
        a resume at start-up), where only the throughput counts."""
        if not self.keep or self.listeners or self.segments:
            return self.settings.chunk_bytes
        return self._request_size.next()

    def _ask_differently(self, exc: OriginError, asked_if_range: bool) -> None:
        """The origin answered a Range request with the whole title of the
        same version: ask without If-Range (each 206 is still checked
        against the validator), and if it ignores Range itself, read the
        title once front to back."""
        if asked_if_range:
            if self.if_range:
                self.if_range = False
                log.warning("fill %s: %s; the origin ignores If-Range: asking without it",
                            self.name, exc)
        elif self.ranges:
            self.ranges = False
            self.wants.pop(_TAIL, None)
            self._tail_start = None
            self._close_segments()
            log.warning("fill %s: %s; the origin ignores Range: reading the title once, "
                        "front to back", self.name, exc)

    def _missing(self) -> int:
        """Bytes of the title not held yet."""
        return self.size - sum(e - s for s, e in self.held)

    def _wanted(self) -> list[int]:
        """Offsets to fetch from first, taken in turn: viewers' wants, the
        seek segments' next bytes and (while there are segments) the front."""
        wants = sorted(self.wants.values())
        if self.segments:
            wants += [seg.next_needed(self.held) for seg in self.segments]
            wants.append(self.contiguous())
        if not wants:
            return []
        self._turn = (self._turn + 1) % len(wants)
        return wants[self._turn:] + wants[:self._turn]

    async def _retry_or_stop(self, request: Range, exc: OriginError) -> bool:
        self._failures += 1
        what = f"fill {self.name}: bytes {request[0]}-{request[1] - 1} from {self.url}: {exc}"
        if no_space(exc) and not self._disk_full(self._missing()):
            # eviction cannot make room for the rest: retrying cannot help,
            # and no other title is given up for a fill that would fail anyway
            exc = CacheWriteError(f"{exc}: the title's other {self._missing()} bytes do not "
                                  "fit even after evicting what may go")
            exc.retryable = False
        if not exc.retryable or self._failures > self.settings.retries:
            log.error("%s; giving up after %d tries", what, self._failures)
            self.error = exc
            self._cancel_fetches()
            for listener in list(self.listeners):
                listener.fill_stopped(exc)
            self._progressed()
            return False
        delay = back_off(self._failures, self.settings.retry_delay,
                         self.settings.retry_max_delay)
        log.warning("%s; retry %d of %d in %.1f s", what, self._failures,
                    self.settings.retries, delay)
        token = object()
        self._fetches[token] = sleep = deferLater(self.reactor, delay, lambda: None)
        try:
            await sleep
        except defer.CancelledError:
            return False
        finally:
            self._fetches.pop(token, None)
        return True

    def _cancel_fetches(self) -> None:
        for d in list(self._fetches.values()):
            d.cancel()

    def _store(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; what was written counts as held, a
        failure too."""
        view = memoryview(data)
        at, end = offset, offset + len(data)
        try:
            while at < end:
                at += os.pwrite(self._fd, view[at - offset:], at)
        except OSError as exc:
            if at > offset:
                self.held = add(self.held, offset, at)
            raise self._write_error(exc) from exc
        self.held = add(self.held, offset, at)

    def _write_error(self, exc: OSError) -> CacheWriteError:
        error = CacheWriteError(f"cannot write {self.media_path}: {os.strerror(exc.errno)}")
        error.__cause__ = exc
        return error

    def _sink(self, generation: int, skip: int = 0) -> "_FillSink":
        """Where a request's bytes go; ``skip``: bytes below it are held
        already (a sequential read from the start): dropped, not rewritten."""
        return _FillSink(self, generation, skip)

    def _stored(self, size: int) -> None:
        """``size`` bytes more were stored: index them, and fsync when due."""
        self._unsynced += size
        self._kick_index()
        if self._tail_start is not None:
            self._estimate_duration()
        if self._unsynced >= SYNC_BYTES or \
                time.monotonic() - self._last_sync >= SYNC_INTERVAL:
            self._kick_sync()

    # -- durability ---------------------------------------------------------------

    def _kick_sync(self, *, now: bool = False) -> None:
        """fsync, then record what it made durable: at most once a
        SYNC_INTERVAL (a fast fill would otherwise fsync after every chunk)
        unless SYNC_BYTES came since the last one, or ``now`` when the fill
        settles."""
        if not self._started or self._quiet:
            return
        if self._sync is not None:
            self._sync_again = True
            return
        todo = subtract(self.held, self.durable)
        if not todo or self._fd is None:
            return
        wait = self._last_sync + SYNC_INTERVAL - time.monotonic()
        if wait > 0 and not now and self._unsynced < SYNC_BYTES:
            if self._sync_call is None or not self._sync_call.active():
                self._sync_call = self.reactor.callLater(wait, self._kick_sync)
            return
        generation = self._generation
        self._last_sync = time.monotonic()
        self._unsynced = 0
        if self.writer is not None:
            self._sync = self.writer.run(_sync_and_record, self._fd, self.name, todo)
            self._sync.addCallbacks(lambda _: self._synced(todo, generation, recorded=True),
                                    self._sync_failed)
        else:
            self._sync = threads.deferToThread(os.fsync, self._fd)
            self._sync.addCallbacks(lambda _: self._synced(todo, generation),
                                    self._sync_failed)
        self._sync.addBoth(self._sync_ended)

    def _synced(self, todo: list[Range], generation: int, recorded: bool = False) -> None:
        if generation != self._generation:
            return
        if not recorded:
            try:
                for start, end in todo:
                    self.catalog.add_cached_range(self.name, start, end)
            except TitleNotFound:
                self._title_gone()
                return
        self.durable = union(self.durable, todo)

    def _title_gone(self) -> None:
        log.warning("fill %s: the title left the catalog; stopping", self.name)
        defer.Deferred.fromCoroutine(self.stop())

    def _sync_failed(self, failure) -> None:
        if failure.check(TitleNotFound):
            self._title_gone()
            return
        # nothing of this round is recorded; the bytes are fetched again
        log.error("fill %s: fsync of %s failed: %s", self.name, self.media_path,
                  failure.getErrorMessage())
        self.held = list(self.durable)
        self._failures += 1

    def _sync_ended(self, _result) -> None:
        self._sync = None
        if self._sync_again:
            self._sync_again = False
            self._kick_sync()

    def _work_running(self) -> list[defer.Deferred]:
        """What runs in other threads on the fill's files: the fsync, the
        index scan, the splice threads' writes."""
        return [d for d in (self._sync, self._indexing) if d is not None] + self._splices

    async def _settle(self) -> None:
        """Wait until no fsync or index scan is running or due, and no splice
        thread of a request that ended is still writing."""
        for _ in range(1000):
            self._kick_sync(now=True)
            self._kick_index()
            pending = self._work_running()
            if not pending:
                return
            await defer.DeferredList(pending)

    # -- indexing -----------------------------------------------------------------

    def _index_sync(self) -> None:
        """Index the contiguous prefix now, in this thread (the probe's bytes)."""
        upto = self.contiguous()
        ready = self._index.feed(self._media, upto, complete=upto == self.size)
        self._publish(ready)

    def _kick_index(self) -> None:
        if not self._started or self._quiet:
            return  # not started: create() and resume() index in their own thread
        self._feed_segments()
        if self._indexing is not None:
            self._index_again = True
            return
        upto = self.contiguous()
        if self._index is None or upto - upto % 188 <= self._index.scanned:
            return
        index, generation = self._index, self._generation
        self._indexing = threads.deferToThread(index.feed, self._media, upto,
                                               complete=upto == self.size)
        self._indexing.addCallbacks(lambda ready: self._indexed(ready, generation),
                                    self._index_failed)
        self._indexing.addBoth(self._index_ended)

    def _indexed(self, ready: int, generation: int) -> None:
        if generation == self._generation:
            self._publish(ready)

    def _index_failed(self, failure) -> None:
        failure.trap(MediaError)
        self._stop_with(BadMedia(f"{self.url}: {failure.getErrorMessage()}"))

    def _stop_with(self, exc: OriginError) -> None:
        log.error("fill %s: %s", self.name, exc)
        self.error = exc
        self._cancel_fetches()
        for listener in list(self.listeners):
            listener.fill_stopped(exc)
        self._progressed()

    def _index_ended(self, _result) -> None:
        self._indexing = None
        if self._index_again:
            self._index_again = False
            self._kick_index()

    def _publish(self, ready: int) -> None:
        if self._hints is None or ready <= self._hints.count:
            return
        records = self._index.records(self._hints.count, ready)
        try:
            self._append_hints(records)
        except OSError as exc:
            # a hint file short of records would stall every viewer: stop cleanly
            self._stop_with(CacheWriteError(f"cannot write {self.hint_path}: "
                                            f"{os.strerror(exc.errno)}"))
            return
        self._main_last_ns = HintRecord.unpack_from(records, len(records) - RECORD_SIZE).send_ns
        update = self.hints()
        for listener in list(self.listeners):
            listener.hints_grew(update)
        self._retire_segments()
        self._progressed()

    def _append_hints(self, records: bytes, hints=None) -> None:
        """Append to the main (or a seek segment's) hint file; a full disk
        first gives up what eviction may take, as for the media bytes."""
        hints = hints or self._hints
        try:
            hints.append(records)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or \
                    not self._disk_full(max(len(records), self._missing())):
                raise
            log.warning("fill %s: the disk was full for %s; evicted, writing again",
                        self.name, hints.path)
            hints.append(records)

    # -- seek ahead ---------------------------------------------------------------

    def covered(self, npt_ns: int) -> bool:
        """Whether the main hints reach ``npt_ns``."""
        return self.complete or (self._main_last_ns is not None
                                 and self._main_last_ns >= npt_ns)

    def segment_for(self, npt_ns: int) -> Optional[SeekSegment]:
        """A seek segment a viewer can start ``npt_ns`` from now, or None."""
        for seg in self.segments:
            if seg.first_ns is not None and seg.first_ns <= npt_ns and seg.covers(npt_ns):
                return seg
        return None

    async def seek(self, npt_ns: int, timeout: float) -> None:
        """Make ``npt_ns`` playable soon: nothing to do if the main hints reach
        it, else a seek segment there, its bytes fetched first; returns when
        it is playable, the fill stopped, or ``timeout`` passed."""
        if self.covered(npt_ns) or self.error is not None or self.stopped or not self.ranges:
            return
        deadline = self.reactor.seconds() + timeout
        while not self.duration_ns and self._running():
            if not await self._next_change(deadline):  # the tail is on its way
                return
        segment = self._segment_near(npt_ns)
        if segment is None:
            return
        while self._running():
            if self.covered(npt_ns) or self.segment_for(npt_ns) is not None:
                return
            if segment not in self.segments:  # the main hints caught up with it
                return
            if not await self._next_change(deadline):
                return

    def _running(self) -> bool:
        return self.error is None and not self.stopped and not self.done.called

    async def _next_change(self, deadline: float) -> bool:
        """Wait until what seek() looks at changes (records, a duration, the
        end) or ``deadline`` (reactor time) passes; False once it has."""
        left = deadline - self.reactor.seconds()
        if left <= 0:
            return False
        changed: defer.Deferred = defer.Deferred()
        self._seekers.append(changed)
        timer = self.reactor.callLater(left, lambda: changed.called or changed.callback(None))
        try:
            await changed
        finally:
            if timer.active():
                timer.cancel()
            if changed in self._seekers:
                self._seekers.remove(changed)
        return True

    def _progressed(self) -> None:
        """Wake every seek() waiting for a change."""
        seekers, self._seekers = self._seekers, []
        for changed in seekers:
            if not changed.called:
                changed.callback(None)

    def _segment_near(self, npt_ns: int) -> Optional[SeekSegment]:
        duration = self.duration_ns
        program = self._index.program if self._index is not None else None
        if not duration or program is None or self._media is None:
            return None
        for seg in self.segments:
            # one whose bytes will reach the time soon enough
            if seg.npt_ns <= npt_ns <= (seg.last_ns or seg.npt_ns) + 5 * 10**9:
                return seg
        try:
            head = self._media[:min(self.contiguous(), 4 << 20)]
        except MediaError as exc:       # the file was cut short under the fill
            log.warning("fill %s: %s", self.name, exc)
            return None
        origin = first_pcr(head, program.pcr_pid)
        if origin is None:
            return None
        start = estimate_offset(npt_ns, self.size, duration, floor=self.contiguous())
        self._segment_number += 1
        seg = SeekSegment(name=self.name, folder=self.folder, number=self._segment_number,
                          start=start, npt_ns=npt_ns, program=program, origin_pcr=origin)
        self.segments.append(seg)
        log.info("fill %s: seek to %.3f s ahead of the fill: fetching from byte %d first",
                 self.name, npt_ns / 1e9, start)
        self._feed_segments()
        # its own request at once, not after the ones in flight
        extra = defer.Deferred.fromCoroutine(self._worker(self._generation, only=seg))
        extra.addErrback(self._crashed)
        return seg

    def _feed_segments(self) -> None:
        if self._media is None:
            return
        for seg in self.segments:
            try:
                grew = seg.feed(self._media, self.held, append=lambda r, s=seg:
                                self._append_hints(r, s.hints))
            except (MediaError, OSError) as exc:
                log.warning("fill %s: seek segment at %d: %s", self.name, seg.start, exc)
                continue
            if grew:
                update = HintUpdate(seg.path, seg.hints.count, True)
                for listener in list(self.listeners):
                    listener.hints_grew(update)
                self._progressed()

    def release(self, segment: SeekSegment) -> None:
        """A stream no longer plays from ``segment``."""
        segment.users -= 1
        self._retire_segments()

    def _retire_segments(self) -> None:
        """Drop the segments the main hints have caught up with and nobody plays."""
        scanned = self._index.scanned if self._index is not None else 0
        for seg in list(self.segments):
            if seg.users <= 0 and (self.complete or scanned >= seg.index.scanned):
                self.segments.remove(seg)
                seg.close()

    def _close_segments(self) -> None:
        for seg in self.segments:
            seg.close()
        self.segments.clear()

    # -- the end ------------------------------------------------------------------

    async def _finish(self) -> None:
        index = await threads.deferToThread(self._index.finish, self.size, self.hint_path)
        self._hints.close()
        self._hints = None
        self._complete(index.duration_ns, index.bitrate, [self._track(index.records)], 1)

    def _complete(self, duration_ns: int, bitrate: int | None, tracks: list, count: int) -> None:
        """Record the title complete with its ``tracks`` (catalog rows), tell
        the viewers of its ``count`` tracks their final hints, and end."""
        self.catalog.update_title(self.name, duration_ns=duration_ns, bitrate=bitrate)
        self.catalog.replace_tracks(self.name, tracks)
        # the file that was indexed, whole: what SETUP checks it against
        st = os.fstat(self._fd)
        self.catalog.update_title(self.name, media_inode=st.st_ino,
                                  media_mtime_ns=st.st_mtime_ns)
        self.catalog.set_state(self.name, "complete")
        self.complete = True
        self.finished_at = time.monotonic()
        log.info("fill %s: complete, %d bytes in %.2f s (%d fetched from the origin)",
                 self.name, self.size, self.finished_at - self.started_at, self.bytes_fetched)
        for i in range(count):
            update = self.hints(i)
            for listener in list(self.listeners):
                listener.hints_grew(update)
        self._end(None)

    async def _restart_copy(self) -> None:
        """The origin's answer said the title changed: look again (after a
        back-off) and begin again with the new version. An origin whose
        ETag changes while the size and Last-Modified do not (backends that
        disagree on ETags) is validated by Last-Modified from then on and
        keeps its bytes; one that changes ``max_changes`` times in a row
        with nothing fetched between is given up, with a clear error."""
        await self._settle_quietly()
        if self._changes > self.settings.max_changes:
            self._give_up(OriginChanged(
                f"{self.url}: the title changed {self._changes} times in a row, with no "
                "request between that went through: its validator (ETag) is not stable "
                "(backends that disagree?); giving up"))
            return
        delay = back_off(self._changes, self.settings.retry_delay, self.settings.retry_max_delay)
        token = object()
        self._fetches[token] = sleep = deferLater(self.reactor, delay, lambda: None)
        try:
            await sleep
            probe = await self.origin.probe(
                self.url, self.settings.probe_bytes,
                deadline=self.reactor.seconds() + self.settings.probe_timeout)
        except defer.CancelledError:
            return
        except OriginError as exc:
            self._give_up(OriginError(f"cannot start over: {exc}"))
            return
        finally:
            self._fetches.pop(token, None)
        if self.stopped:
            return
        old, new = self.validator, probe.validator
        if probe.size == self.size and old.last_modified and \
                old.last_modified == new.last_modified and old.etag != new.etag:
            log.warning("fill %s: the ETag changed (%s, now %s) but not the size or "
                        "Last-Modified: the origin's ETags are not stable; validating by "
                        "Last-Modified from now on, keeping the bytes", self.name,
                        old.etag, new.etag)
            self.validator = Validator(None, old.last_modified)
            self._quiet = False
            try:
                self.catalog.update_title(self.name, etag=None)
            except TitleNotFound:
                self._title_gone()
            return
        log.warning("fill %s: the title changed at the origin; discarding the partial copy "
                    "and starting over", self.name)
        for listener in list(self.listeners):
            listener.title_changed()
        self.listeners.clear()
        self.wants.clear()
        self.catalog.clear_cached_ranges(self.name)
        self._close_files()
        self.held, self.durable = [], []
        self._quiet = False
        try:
            self._start_copy(probe)
            self._enter_in_catalog(probe, self.catalog.get_title(self.name), now=time.time())
        except TitleNotFound:
            self._title_gone()
        except OriginError as exc:
            self._give_up(exc)
        except OSError as exc:
            self._give_up(CacheWriteError(f"cannot start over: {exc}"))

    def _give_up(self, exc: OriginError) -> None:
        log.error("fill %s: %s", self.name, exc)
        self.error = exc
        for listener in list(self.listeners):
            listener.fill_stopped(exc)
        self._progressed()

    async def _settle_quietly(self) -> None:
        """Wait until no fsync or scan runs, and start none: the files may be
        closed after this (a scan holds a view of the mapping)."""
        self._quiet = True
        for _ in range(1000):
            pending = self._work_running()
            if not pending:
                return
            await defer.DeferredList(pending, consumeErrors=True)

    def _end(self, error: Optional[OriginError]) -> None:
        if self.done.called:
            return
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        if error is not None:
            self.error = error
        self._close_files()
        self._on_end(self)
        self.done.callback(self)
        self._progressed()

    def abandon(self, error: OriginError) -> None:
        """A fill that will not run (no room for the rest of its title): its
        files close, its hint records stay readable (``hints()`` still says
        how many) and a stream that attaches learns ``error`` at once."""
        self._end(error)

    async def stop(self) -> None:
        """Stop fetching, wait for the running fsync and scan, close the files.
        Bytes written but not yet recorded are fetched again next time."""
        self.stopped = True
        self._cancel_fetches()
        if self._run_d is not None and not self._run_d.called:
            await defer.DeferredList([self._run_d], consumeErrors=True)
        await self._settle_quietly()
        self._end(self.error)


class _FillSink:
    """A fill's sink for one request (see origin.Sink and body_splice.FileSink):
    bytes refused once the fill stopped or started over."""

    def __init__(self, fill: TitleFill, generation: int, skip: int) -> None:
        self.fill = fill
        self.generation = generation
        self.epoch = fill._file_epoch
        self.skip = skip
        self._dirty: Optional[Range] = None   # written, not yet handed to the disk

    def _wrote(self, offset: int, size: int) -> None:
        self._dirty = _written(self.fill._fd, self._dirty, offset, size)

    def _check(self) -> None:
        fill = self.fill
        if self.generation != fill._generation or fill._fd is None or fill.stopped or \
                self.epoch != fill._file_epoch:
            # the file this request began for was closed or replaced since:
            # its bytes may be of another version (an origin whose backends
            # disagree), and a splice thread's copy went to the old file
            raise CacheWriteError("the fill stopped or started over")

    def __call__(self, offset: int, data: bytes) -> None:
        self._check()
        if offset < self.skip:
            data = data[self.skip - offset:]
            offset = self.skip
            if not data:
                return
        self.fill._store(offset, data)
        self._wrote(offset, len(data))
        self.fill._stored(len(data))

    def splice_file(self, offset: int) -> Optional["_SpliceFile"]:
        self._check()
        if offset < self.skip:
            return None     # bytes held already are dropped, not spliced
        try:
            return _SpliceFile(self)
        except OSError:
            return None     # no descriptor to be had (EMFILE): read the usual way

    def spliced(self, offset: int, size: int) -> None:
        """A splice thread wrote ``size`` bytes at ``offset`` (and started
        their write-back): they count as held (refused, not counted, once the
        fill stopped or started over)."""
        self._check()
        self.fill.held = add(self.fill.held, offset, offset + size)
        self.fill._stored(size)


class _SpliceFile:
    """The fill's file as a splice thread writes one request's body into it
    (body_splice.SpliceFile): through a descriptor of its own, so the fill may
    close its files while the thread ends its last write; a fill that stops
    or starts over waits for ``closed`` before it closes or replaces them."""

    def __init__(self, sink: _FillSink) -> None:
        self._sink = sink
        self._fd = os.dup(sink.fill._fd)
        self._lock = sink.fill._splice_lock
        self._dirty: Optional[Range] = None     # written, write-back not started
        self.closed: defer.Deferred = defer.Deferred()
        sink.fill._splices.append(self.closed)

    def write(self, pipe: int, offset: int, size: int) -> int:
        # one writer of the file at a time: two would spin on the inode's
        # lock in the kernel (ext4), where this one sleeps
        with self._lock:
            n = os.splice(pipe, self._fd, size, offset_dst=offset, flags=os.SPLICE_F_MOVE)
        if n == 0:
            raise OSError(errno.EIO, "the pipe ran dry")
        self._dirty = _written(self._fd, self._dirty, offset, n)
        return n

    def wrote(self, offset: int, size: int) -> None:
        self._sink.spliced(offset, size)

    def failed(self, exc: OSError) -> Exception:
        return self._sink.fill._write_error(exc)

    def close(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._sink.fill._splices.remove(self.closed)
        self.closed.callback(None)


def _written(fd: int, dirty: Optional[Range], offset: int, size: int) -> Range:
    """``size`` bytes of a request were written at ``offset`` of ``fd``;
    ``dirty``: the request's bytes whose write-back has not begun. A
    request's bytes come in order: every WRITEBACK_BYTES of them start their
    write-back. The bytes whose write-back has not begun now."""
    start, end = dirty if dirty is not None else (offset, offset)
    if end != offset:
        start = offset
    end = offset + size
    if end - start >= WRITEBACK_BYTES:
        start_writeback(fd, start, end - start)
        start = end
    return start, end


def _sync_and_record(catalog, fd: int, name: str, ranges: list[Range]) -> None:
    """In the writer thread: make the bytes durable, then say so."""
    os.fsync(fd)
    for start, end in ranges:
        catalog.add_cached_range(name, start, end)


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full."""
    cause = exc.__cause__ if isinstance(exc, CacheWriteError) else exc
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


__all__ = ["BadMedia", "CacheWriteError", "FillListener", "FillSettings", "HintUpdate",
           "TitleFill", "no_space"]
