"""The fill of a remote MP4: ``moov`` first, then streams while the rest fills.

An MP4's sample tables are in its ``moov``, which many files keep at the
end. After the probe (the title's first bytes), :func:`fetch_moov` walks
the top-level boxes and fetches what it lacks until the ``moov`` is there
(for "moov at the end": the box header after ``mdat``, then the tail), and
parses it: DESCRIBE is answered from it, before any sample has arrived.
A ``moov`` that lies is a 415 with the reason, and nothing is entered.

:class:`Mp4TitleFill` is a :class:`~appliance.cache.fill.TitleFill` whose
index is a :class:`~rtpengine.index.mp4_growing.GrowingMp4Index` and which
has one growing hint file per track (video, then audio): the byte-moving,
durability and planning of the fill are the same. It stores the ``moov``
first, then fills front to back; each track's records are appended as the
contiguous prefix covers their samples (a fragmented file: as each
``moof`` and its samples arrive), so the engine never sends a byte that is
not on disk. Parameter sets sent before keyframes point at their bytes in
the ``moov`` (held from the start), as a growing hint file has no blob
area. When the title is whole, each track's final hint file is those very
records with a true header.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from twisted.internet import threads

from appliance.cache.fill import BadMedia, CacheWriteError, HintUpdate, TitleFill
from appliance.cache.layout import track_hint_path
from appliance.cache.origin import Probe
from catalog.byte_ranges import end_from
from rtpengine.hintfile import HEADER_SIZE, RECORD_SIZE, GrowingHintFile, HintRecord
from rtpengine.index.errors import MediaError
from rtpengine.index.mp4 import moov_tracks
from rtpengine.index.mp4_boxes import Box
from rtpengine.index.mp4_growing import GrowingMp4Index, locate_moov

log = logging.getLogger(__name__)

# requests to find the moov: a header after the mdat, the moov, and slack
# for a few boxes (free, udta) between them
MAX_MOOV_REQUESTS = 8


class MoovNotCached(BadMedia):
    """A partial MP4 title's ``moov`` is not among its cached bytes (an
    eviction kept only a prefix): its fill cannot resume, it starts over."""


@dataclass(frozen=True)
class Mp4Head:
    """What :func:`fetch_moov` found: the ``moov`` and the bytes known to hold
    it and the box headers before it (the probe's head among them)."""

    moov: Box
    pieces: tuple[tuple[int, bytes], ...]


async def fetch_moov(origin, probe: Probe, *, tail_bytes: int) -> Mp4Head:
    """Fetch and parse the ``moov`` of the MP4 ``probe`` found: BadMedia (415)
    if the boxes lie or the ``moov`` cannot be served; the origin's errors
    as they are."""
    pieces: list[tuple[int, bytes]] = [(0, probe.head)]
    for _ in range(MAX_MOOV_REQUESTS):
        try:
            found = locate_moov(pieces, probe.size, probe.url)
            if isinstance(found, Box):
                moov_tracks(_piece(pieces, found), found, probe.url)
                return Mp4Head(found, tuple(pieces))
        except MediaError as exc:
            raise BadMedia(str(exc)) from None
        if not probe.ranges:
            raise BadMedia(f"{probe.url}: the MP4's moov is not in its first "
                           f"{len(probe.head)} bytes and the origin ignores Range requests")
        start, end = found
        # a box header: take what follows too, it is likely the moov (at the end)
        end = max(end, min(probe.size, start + tail_bytes))
        got = bytearray(end - start)

        def sink(offset: int, data: bytes, start=start, got=got) -> None:
            got[offset - start:offset - start + len(data)] = data
        n = await origin.fetch(probe.url, start, end, probe.validator, sink, size=probe.size)
        if n != end - start:
            raise BadMedia(f"{probe.url}: {n} bytes of {end - start} at {start}")
        pieces.append((start, bytes(got)))
    raise BadMedia(f"{probe.url}: no moov after {MAX_MOOV_REQUESTS} requests "
                   f"(boxes between the media data and the moov?)")


def _piece(pieces, box: Box) -> bytes:
    for offset, data in pieces:
        if offset <= box.start and box.end <= offset + len(data):
            return data[box.start - offset:box.end - offset]
    raise MediaError(f"{box.where()}: not fetched")


class Mp4TitleFill(TitleFill):
    """The fill of one MP4 title: see the module's docstring. Made by
    :meth:`create` (with the ``moov`` :func:`fetch_moov` found) or
    :meth:`resume` (a partial MP4 title, its ``moov`` on disk)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._head: Optional[Mp4Head] = None
        self._track_hints: list[GrowingHintFile] = []
        self._counts: list[int] = []        # records per track when the files closed
        self._fed = 0                       # the prefix the index was last told of
        self._last_send: list[Optional[int]] = []   # per track: its last record's send_ns

    @classmethod
    def create(cls, probe: Probe, head: Mp4Head, *, title=None, now: float,
               **kw) -> "Mp4TitleFill":
        """A new fill: the ``moov`` and the probed bytes written and indexed,
        the title entered as ``partial`` with its tracks."""
        fill = cls(url=probe.url, **kw)
        fill._head = head
        with fill._closed_on_failure(probe.url):
            fill._start_copy(probe)
            fill._enter_in_catalog(probe, title, now)
        fill._head = None       # its bytes are in the file now
        return fill

    # -- files and index ---------------------------------------------------------

    def _start_copy(self, probe: Probe) -> None:
        if self._head is None:
            # a restart after the title changed at the origin: its new moov
            # would have to be fetched before anything else
            raise BadMedia(f"{probe.url}: the MP4 changed at the origin during its fill; "
                           f"the next DESCRIBE fetches it again")
        super()._start_copy(probe)

    def _make_index(self) -> None:
        if self._head is not None:
            # the moov (and the probe's head: the boxes before it) first
            for offset, data in self._head.pieces:
                self._store(offset, data)
                if offset:          # the probe's bytes are counted by the probe
                    self.bytes_fetched += len(data)
            moov = self._head.moov
        else:
            moov = self._moov_on_disk()
        self._index = GrowingMp4Index(self._media, self.size, self.name, moov=moov,
                                      sets_from_media=True)
        try:
            self._track_hints = [
                GrowingHintFile(track_hint_path(self.folder, i), t.clock_rate,
                                t.payload_type)
                for i, t in enumerate(self._index.tracks())]
        except BaseException:
            self._index.close()
            raise
        self._hints = self._track_hints[0]
        self._last_send = [None] * len(self._track_hints)
        self._fed = 0

    def _moov_on_disk(self) -> Box:
        """A resumed fill's ``moov``, from the bytes the catalog records."""
        pieces: list[tuple[int, bytes]] = []
        for _ in range(MAX_MOOV_REQUESTS * 2):
            found = locate_moov(pieces, self.size, self.name)
            if isinstance(found, Box):
                return found
            start, end = found
            if end_from(self.held, start) < end:
                raise MoovNotCached(f"{self.name}: bytes {start}-{end - 1} (the moov or a "
                                    f"box header before it) are not among the cached bytes")
            pieces.append((start, self._media[start:end]))
        raise MediaError(f"{self.name}: no moov among the cached bytes")

    def _close_files(self) -> None:
        if self._track_hints:
            self._counts = [h.count for h in self._track_hints]
            for hints in self._track_hints[1:]:
                hints.close()
            self._track_hints = []
        super()._close_files()

    def _want_tail(self) -> None:
        """Nothing: the moov came first, and it gives the duration."""

    def _enter_in_catalog(self, probe: Probe, title, now: float) -> None:
        duration = self._index.duration_ns()
        self.duration_ns = duration
        fields = dict(origin_url=probe.url, size=probe.size, duration_ns=duration,
                      bitrate=probe.size * 8 * 10**9 // duration if duration else None,
                      etag=probe.validator.etag, last_modified=probe.validator.last_modified,
                      media_path=self.media_path, folder=self.folder)
        if title is None:
            self.catalog.add_title(self.name, container="mp4", state="partial", now=now,
                                   tracks=self._track_rows(), **fields)
        else:
            self.catalog.clear_cached_ranges(self.name)
            self.catalog.update_title(self.name, container="mp4", **fields)
            self.catalog.replace_tracks(self.name, self._track_rows())
            self.catalog.set_state(self.name, "partial")

    def _track_rows(self) -> list[dict]:
        return [dict(track_index=i, media_type=t.kind, codec=t.encoding,
                     payload_type=t.payload_type, clock_rate=t.clock_rate, fmtp=t.fmtp,
                     hint_path=track_hint_path(self.folder, i), packets=t.records)
                for i, t in enumerate(self._index.tracks())]

    # -- what streams see ------------------------------------------------------

    def hints(self, track: int = 0) -> HintUpdate:
        """The hint file of ``track`` a new stream opens now."""
        path = track_hint_path(self.folder, track)
        if self.complete:
            return HintUpdate(path, None, False)
        if self._track_hints:
            return HintUpdate(path, self._track_hints[track].count, True)
        return HintUpdate(path, self._counts[track] if track < len(self._counts) else 0, True)

    # -- indexing ----------------------------------------------------------------

    def _index_sync(self) -> None:
        self._fed = self.contiguous()
        self._publish(self._index.feed(self._fed))

    def _kick_index(self) -> None:
        if not self._started or self._quiet:
            return
        if self._indexing is not None:
            self._index_again = True
            return
        upto = self.contiguous()
        if self._index is None or self._index.complete or upto <= self._fed:
            return
        self._fed = upto
        index, generation = self._index, self._generation
        self._indexing = threads.deferToThread(index.feed, upto)
        self._indexing.addCallbacks(lambda new: self._indexed(new, generation),
                                    self._index_failed)
        self._indexing.addBoth(self._index_ended)

    def _publish(self, new: list[bytes]) -> None:
        if not self._track_hints or not any(new):
            return
        try:
            for hints, records in zip(self._track_hints, new):
                if records:
                    self._append_hints(records, hints)
        except OSError as exc:
            self._stop_with(CacheWriteError(f"cannot write the hint files of {self.name}: "
                                            f"{os.strerror(exc.errno)}"))
            return
        for i, records in enumerate(new):
            if records:
                self._last_send[i] = HintRecord.unpack_from(
                    records, len(records) - RECORD_SIZE).send_ns
        # the time every track's records reach: what a viewer can start at
        if all(last is not None for last in self._last_send):
            self._main_last_ns = min(self._last_send)
        for i, records in enumerate(new):
            if records:
                update = self.hints(i)
                for listener in list(self.listeners):
                    listener.hints_grew(update)
        self._progressed()

    # -- seeking -------------------------------------------------------------------

    async def seek(self, npt_ns: int, timeout: float) -> None:
        """Wait (up to ``timeout``) until the fill, front to back, reaches
        ``npt_ns`` on every track: an MP4 has no seek-ahead segments (a
        sample's time is in the moov, but records are only handed out for
        the contiguous prefix)."""
        deadline = self.reactor.seconds() + timeout
        while self._running() and not self.covered(npt_ns):
            if not await self._next_change(deadline):
                return

    # -- the end -------------------------------------------------------------------

    async def _finish(self) -> None:
        if not self._index.complete:
            self._stop_with(BadMedia(f"{self.url}: the whole file is there, but not every "
                                     f"sample its moov (or moofs) lists"))
            self._end(self.error)
            return
        counts = [h.count for h in self._track_hints]
        await threads.deferToThread(self._write_final, counts)
        for hints in self._track_hints:
            hints.close()
        self._track_hints, self._hints = [], None
        self._counts = counts
        duration = max(t.duration_ns for t in self._index.tracks())
        self._complete(duration, self.size * 8 * 10**9 // duration if duration else None,
                       self._track_rows(), len(counts))

    def _write_final(self, counts: list[int]) -> None:
        """In a worker thread: each track's final hint file, the very records
        the streams were given, with a true header (written, renamed)."""
        for i, count in enumerate(counts):
            path = track_hint_path(self.folder, i)
            with open(path, "rb") as f:
                f.seek(HEADER_SIZE)
                records = f.read(count * RECORD_SIZE)
            if len(records) != count * RECORD_SIZE:
                raise MediaError(f"{path}: {len(records) // RECORD_SIZE} records of {count}")
            self._index.write_hints(i, path, records)


__all__ = ["MoovNotCached", "Mp4Head", "Mp4TitleFill", "fetch_moov"]
