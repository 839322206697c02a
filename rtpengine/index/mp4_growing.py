"""Indexing an MP4 while it is being filled.

A proxy fill fetches an MP4's ``moov`` first (from wherever it lies: the
file's tail for "moov at the end"), then the rest front to back. This
module indexes what has arrived, per track, with the same box parser
(``mp4_boxes``, ``mp4.moov_tracks``) and the same C per-sample code as
:func:`mp4.index_mp4`:

- a progressive file's sample tables are all in its ``moov``: the C
  indexer keeps a cursor per track and stops at the first sample whose
  bytes do not lie wholly inside the contiguous prefix it is told of;
- a fragmented file (``moov`` without samples, then ``moof`` + ``mdat``
  pairs) is indexed fragment by fragment: each ``moof`` that has arrived
  whole gives its samples' tables (``mp4.read_moof``), placed on the
  track's timeline after the fragments before it.

Records handed out are final: a hint file built from them only ever grows,
and none points at a byte beyond the prefix, so a stream never sends a
byte that is not there.

The fill's file is never mapped (a page past the end of a file cut short
under the fill would kill the daemon with SIGBUS). The C walks NAL units,
so it needs the sample bytes in memory at their file offsets: they are
read (``pread``) into a private anonymous mapping of the file's size, a
window of at most :data:`WINDOW` bytes at a time; pages behind the window
are given back, so memory stays bounded whatever the title's size.
"""

from __future__ import annotations

import dataclasses
import mmap
import threading
from typing import Optional

from rtpengine.hintfile import RECORD_SIZE, REC_BLOB, HintHeader, HintRecord, write_hint_file
from rtpengine.index import mp4_boxes as bx
from rtpengine.index.errors import MediaError
from rtpengine.index.file_reads import read_window
from rtpengine.index.mp4 import (_ENCODING, MAX_MOOV, MAX_PAYLOAD, PAYLOAD_TYPES, Mp4Track,
                                 _CTrack, _FragmentTables, _Trak, ffi, find_moov,
                                 fragment_defaults, lib, moov_tracks, read_moof)

# sample bytes held in memory at once (a sample larger than this is refused)
WINDOW = 32 << 20
_PAGE = mmap.PAGESIZE
# Python's mmap module exports MAP_NORESERVE only from 3.13 on (Linux's value):
# the scratch mapping is as large as the title and must not count against
# the commit limit, only the window's pages are ever touched
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_BLOB_FLAG = REC_BLOB


def locate_moov(pieces: list[tuple[int, bytes]], size: int, name: str = "<mp4>",
                ) -> bx.Box | tuple[int, int]:
    """Where a file's ``moov`` is, from the bytes known so far (sans-IO).

    ``pieces`` are (offset, bytes) of the file of ``size`` bytes that are
    known (the probe's head, what was fetched since). Walks the top-level
    boxes from offset 0 by their headers; returns the ``moov`` box once all
    its bytes are in one piece, else the byte range ``[start, end)`` to
    read next: the next box header (16 bytes, fewer at the end of the
    file), or the whole ``moov``. MediaError if the boxes lie or there is
    no ``moov`` before the media fragments or the end.
    """
    budget = [bx.MAX_BOXES]
    pos = 0
    while pos < size:
        header = _known(pieces, pos, min(16, size - pos))
        if header is None:
            return pos, min(size, pos + 16)
        box = next(bx.iter_boxes(header, pos, size, base=pos, name=name, budget=budget))
        if box.type == b"moov":
            if box.end - box.start > MAX_MOOV:
                raise MediaError(f"{name}: {box.where()}: {box.end - box.start} bytes is "
                                 f"over {MAX_MOOV}")
            if _known(pieces, box.start, box.end - box.start) is None:
                return box.start, box.end
            return box
        if box.type == b"moof":
            break
        pos = box.end
    raise MediaError(f"{name}: no moov box before the media data: not an MP4 kvod can "
                     f"index")


def _known(pieces: list[tuple[int, bytes]], start: int, length: int) -> Optional[bytes]:
    """``length`` bytes at ``start`` if one piece holds them all."""
    for offset, data in pieces:
        if offset <= start and start + length <= offset + len(data):
            return data[start - offset:start - offset + length]
    return None


@dataclasses.dataclass
class _Part:
    """The C state of one track over one span of samples: the whole track
    (progressive) or one fragment's run of it."""

    track: int                  # which output track
    ct: _CTrack
    taken: int = 0              # its records handed out so far


class GrowingMp4Index:
    """The index of one MP4 whose bytes arrive front to back, once its
    ``moov`` (and the top-level box headers before it) are there.

    ``src`` is the file from offset 0 at its final size: a buffer or a
    :class:`~rtpengine.index.file_reads.FileBytes`. :meth:`feed` indexes what
    the first ``contiguous`` bytes complete and returns the new records per
    track (video first). ``sets_from_media``: parameter-set records (from
    ``avcC``/``hvcC``, sent before keyframes that lack them) point at the
    sets' bytes inside the ``moov`` instead of a hint file's blob area, so
    a hint file that grows can hold them. Thread-safe (one feed at a time).
    """

    def __init__(self, src, size: int, name: str = "<mp4>", *,
                 moov: Optional[bx.Box] = None, sets_from_media: bool = False) -> None:
        self.name = name
        self.size = size
        self._src = src
        self._lock = threading.RLock()
        if moov is None:
            moov, _ = find_moov(src, size, name)
        self.moov = moov
        moov_bytes = read_window(src, moov.start, moov.end - moov.start)
        kids, traks = moov_tracks(moov_bytes, moov, name)
        self._traks: list[_Trak] = traks
        self.fragmented = all(t.tables["sample_count"] == 0 for t in traks)
        if any(t.tables["sample_count"] == 0 for t in traks) and not self.fragmented:
            raise MediaError(f"{name}: a track without samples beside one with samples")
        self._trex = fragment_defaults(kids, moov_bytes, moov, name) if self.fragmented \
            else {}
        # per track: what is indexed so far
        self._records = [0] * len(traks)
        self._samples = [0] * len(traks)
        self._keyframes = [0] * len(traks)
        self._duration = [0] * len(traks)
        self._decoded = [0] * len(traks)      # a fragmented track's media ticks so far
        self._first_tfdt: list[Optional[int]] = [None] * len(traks)
        self._parts: list[_Part] = []
        self._next_box = moov.end             # a fragmented file's next top-level box
        self._budget = [bx.MAX_BOXES]
        self._blob_to_media: list[dict[int, int]] = [
            _param_set_offsets(t, moov_bytes, moov) if sets_from_media else {}
            for t in traks]
        self._window = (0, 0)
        self._scratch = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
        self._cbuf = ffi.from_buffer(self._scratch)
        try:
            if not self.fragmented:
                for i, t in enumerate(traks):
                    self._parts.append(_Part(i, _CTrack(t, self._cbuf, size, name)))
        except BaseException:
            self.close()
            raise

    # -- what it found ---------------------------------------------------------

    def tracks(self) -> list[Mp4Track]:
        """The tracks (video first), with what is indexed so far."""
        out = []
        for i, t in enumerate(self._traks):
            samples = t.tables["sample_count"] if not self.fragmented else self._samples[i]
            out.append(Mp4Track(
                track_id=t.track_id, kind=t.kind, codec=t.codec,
                encoding=_ENCODING[t.codec], clock_rate=t.clock_rate,
                payload_type=PAYLOAD_TYPES[t.kind], fmtp=t.fmtp, channels=t.channels,
                samples=samples, records=self._records[i], keyframes=self._keyframes[i],
                duration_ns=self._duration[i]))
        return out

    def duration_ns(self) -> Optional[int]:
        """The title's duration from its sample tables (before they are
        indexed), or None (a fragmented file's fragments are still to come)."""
        if self.fragmented:
            return None
        best = 0
        for t in self._traks:
            stts = t.tables["stts"]
            ticks = sum(c * d for c, d in zip(stts[0::2], stts[1::2]))
            best = max(best, ticks * 1_000_000_000 // t.timescale)
        if best >= 1 << 62:
            raise MediaError(f"{self.name}: the sample tables last {best} ns, beyond any "
                             f"timeline")
        return best or None

    @property
    def complete(self) -> bool:
        """Every sample of every track is indexed."""
        if self.fragmented:
            return self._next_box >= self.size and not self._parts
        return all(p.ct.complete for p in self._parts)

    # -- growing ---------------------------------------------------------------

    def feed(self, contiguous: int) -> list[bytes]:
        """Index what the first ``contiguous`` bytes complete: per track, the
        packed records made since the last call. MediaError if the samples
        or fragments are malformed."""
        with self._lock:
            if self._scratch is None:
                raise MediaError(f"{self.name}: fed after close")
            contiguous = min(contiguous, self.size)
            out = [bytearray() for _ in self._traks]
            while True:
                self._run_parts(contiguous, out)
                if not self.fragmented or self._parts or not self._next_fragment(contiguous):
                    break
            return [self._in_media(i, bytes(b)) for i, b in enumerate(out)]

    def _run_parts(self, contiguous: int, out: list[bytearray]) -> None:
        """Run every part's C over the samples wholly below ``contiguous``,
        a window of sample bytes at a time."""
        while self._parts:
            pending = [p for p in self._parts if not p.ct.complete]
            if not pending:
                self._retire(self._parts, out)
                return
            lo = min(_next_offset(p.ct) for p in pending)
            lo -= lo % _PAGE
            hi = min(contiguous, lo + WINDOW)
            if hi <= lo:
                return
            self._load(lo, hi)
            moved = False
            for p in pending:
                before = p.ct.tr.next_sample
                p.ct.run(hi)
                moved |= p.ct.tr.next_sample != before
            self._retire([p for p in self._parts if p.ct.complete], out)
            for p in self._parts:
                self._take(p, out)
            if not moved:
                if hi < contiguous:
                    raise MediaError(f"{self.name}: a sample of more than {WINDOW} bytes "
                                     f"at offset {lo} (or samples out of file order)")
                return

    def _take(self, p: _Part, out: list[bytearray]) -> None:
        """Move a part's new records to its track's output."""
        tr = p.ct.tr
        have = p.taken
        if tr.record_count > have:
            out[p.track] += ffi.buffer(tr.records + have, (tr.record_count - have) * RECORD_SIZE)
            self._records[p.track] += tr.record_count - have
            if self._records[p.track] > lib.KVOD_MP4_MAX_RECORDS:
                raise MediaError(f"{self.name}: more than {lib.KVOD_MP4_MAX_RECORDS} packets "
                                 f"in track {self._traks[p.track].track_id}")
            p.taken = tr.record_count
        self._duration[p.track] = max(self._duration[p.track], tr.duration_ns)
        if not self.fragmented:
            self._keyframes[p.track] = tr.keyframes

    def _retire(self, done: list[_Part], out: list[bytearray]) -> None:
        """Hand out what finished parts made; a fragment's part is freed."""
        for p in done:
            self._take(p, out)
            if self.fragmented:
                self._keyframes[p.track] += p.ct.tr.keyframes
                self._parts.remove(p)
                p.ct.free()

    def _next_fragment(self, contiguous: int) -> bool:
        """Start indexing the next ``moof`` that has arrived whole; False if
        there is none yet (or no more)."""
        while self._next_box < self.size:
            pos = self._next_box
            length = min(16, self.size - pos)
            if pos + length > contiguous:
                return False
            header = read_window(self._src, pos, length)
            box = next(bx.iter_boxes(header, pos, self.size, base=pos, name=self.name,
                                     budget=self._budget))
            if box.type != b"moof":
                self._next_box = box.end        # mdat (already indexed), mfra, free...
                continue
            if box.end - box.start > MAX_MOOV:
                raise MediaError(f"{self.name}: {box.where()}: {box.end - box.start} bytes")
            if box.end > contiguous:
                return False
            self._load(box.start, box.end)
            wanted = {t.track_id: _FragmentTables() for t in self._traks}
            read_moof(self._scratch, box, wanted, self._trex, self.name, self._budget)
            self._next_box = box.end
            for i, t in enumerate(self._traks):
                ft = wanted[t.track_id]
                if not ft.count:
                    continue
                self._add_part(i, t, ft)
            if self._parts:
                return True
        return False

    def _add_part(self, i: int, t: _Trak, ft: _FragmentTables) -> None:
        """A fragment's run of track ``i``, timed after the fragments before
        it, as the whole file's index times it (the first fragment's decode
        time places the track, the durations add up from there)."""
        if self._first_tfdt[i] is None:
            self._first_tfdt[i] = ft.first_decode_time or 0
        shift = t.shift - self._first_tfdt[i] - self._decoded[i]
        if abs(shift) > 1 << 40:
            raise MediaError(f"{self.name}: track {t.track_id}: a fragment at decode time "
                             f"{-shift}, beyond any timeline")
        if self._samples[i] + ft.count > lib.KVOD_MP4_MAX_SAMPLES:
            raise MediaError(f"{self.name}: fragments hold more than "
                             f"{lib.KVOD_MP4_MAX_SAMPLES} samples of one track")
        part_trak = dataclasses.replace(t, tables=ft.tables(), shift=shift)
        self._parts.append(_Part(i, _CTrack(part_trak, self._cbuf, self.size, self.name)))
        self._samples[i] += ft.count
        self._decoded[i] += sum(ft.stts[1::2])

    def _load(self, lo: int, hi: int) -> None:
        """Have the file's bytes ``[lo, hi)`` in the scratch mapping, at their
        offsets; give back the pages of the window before ``lo`` (all of
        them when ``lo`` lies outside it)."""
        a, b = self._window
        lo -= lo % _PAGE
        if a <= lo <= b:
            if lo > a:
                self._scratch.madvise(mmap.MADV_DONTNEED, a, lo - a)
            start = b
        else:
            if b > a:
                self._scratch.madvise(mmap.MADV_DONTNEED, a, b - a)
            start = lo
        for at in range(start, hi, 4 << 20):
            end = min(hi, at + (4 << 20))
            self._scratch[at:end] = read_window(self._src, at, end - at)
        self._window = (lo, max(start, hi))

    def _in_media(self, i: int, records: bytes) -> bytes:
        """With ``sets_from_media``: the BLOB records point at the media."""
        where = self._blob_to_media[i]
        if not where or not records:
            return records
        out = bytearray(records)
        for at in range(0, len(out), RECORD_SIZE):
            rec = HintRecord.unpack_from(out, at)
            if rec.flags & _BLOB_FLAG:
                out[at:at + RECORD_SIZE] = rec._replace(
                    offset=where[rec.offset], flags=rec.flags & ~_BLOB_FLAG).pack()
        return bytes(out)

    # -- the end ---------------------------------------------------------------

    def header(self, i: int) -> HintHeader:
        """The hint header of track ``i`` with what is indexed so far."""
        t = self._traks[i]
        return HintHeader(clock_rate=t.clock_rate, payload_type=PAYLOAD_TYPES[t.kind],
                          record_count=self._records[i], duration_ns=self._duration[i])

    def blob(self, i: int) -> bytes:
        """The blob area of track ``i``'s BLOB records (empty with
        ``sets_from_media``)."""
        if self._blob_to_media[i]:
            return b""
        return b"".join(p for p in self._traks[i].param_sets if len(p) <= MAX_PAYLOAD)

    def write_hints(self, i: int, path, records: Optional[bytes] = None) -> None:
        """Write a complete track's hint file (atomically): ``records`` (what
        :meth:`feed` handed out, in order), or those of a progressive file's
        C state."""
        if not self.complete:
            raise MediaError(f"{self.name}: not indexed to its end yet")
        if records is None:
            part = next(p for p in self._parts if p.track == i)
            records = part.ct.records()
        write_hint_file(path, self.header(i), records, self.blob(i))

    def close(self) -> None:
        """Free the C state and the scratch mapping."""
        with self._lock:
            for p in self._parts:
                p.ct.free()
            self._parts = []
            if self._scratch is not None:
                ffi.release(self._cbuf)
                try:
                    self._scratch.close()
                except BufferError:
                    pass    # a view still held by a traceback: unmapped when it goes
                self._scratch = None

    def __enter__(self) -> "GrowingMp4Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _next_offset(ct: _CTrack) -> int:
    """The file offset of a track's next sample (its first chunk's before
    the C has started)."""
    tr = ct.tr
    if tr.cursor.started:
        return tr.cursor.pos
    offsets = ct.t.tables["chunk_offsets"]
    return min(offsets) if len(offsets) else 0


def _param_set_offsets(t: _Trak, moov_bytes: bytes, moov: bx.Box) -> dict[int, int]:
    """Blob offset -> file offset of each in-band parameter set: the sets
    are the bytes of the track's avcC/hvcC, inside the moov, which a fill
    holds before any sample."""
    where: dict[int, int] = {}
    at = 0
    for p in (p for p in t.param_sets if len(p) <= MAX_PAYLOAD):
        found = moov_bytes.find(p)
        if found < 0:
            raise MediaError(f"parameter set of track {t.track_id} not in the moov")
        where[at] = moov.start + found
        at += len(p)
    return where


__all__ = ["GrowingMp4Index", "WINDOW", "locate_moov"]
