"""Indexing an MPEG-TS while it is being filled, front to back.

A fill writes a title's bytes into a sparse file; streaming starts before
the fill ends, so hint records are made as the bytes arrive. The C scan
(``csrc/ts_index.c``) already carries its state from one piece to the next;
this module feeds it the whole packets of the contiguous prefix of the file
(the bytes held from offset 0 on, with no hole) and says which records are
final:

- a record is timed only when the PCR after it has arrived (its time is
  interpolated between two PCRs), so records after the last PCR wait;
- the last record may still take packets (up to 7), so it waits too.

Records handed out are never changed afterwards: the final index of the
whole file starts with exactly those records, so a hint file built from
them only ever grows (see ``hintfile.GrowingHintFile``).

Only the contiguous prefix is indexed. Bytes held further on (a viewer's
seek ahead, the tail fetched for the duration) wait until the prefix
reaches them, because a record's time comes from the PCR timeline that
starts at the first PCR of the file and runs through every PCR between.
"""

from __future__ import annotations

import struct
import threading
from typing import Optional

from rtpengine.index.errors import MediaError
from rtpengine.hintfile import RECORD_SIZE
from rtpengine.index.file_reads import FileBytes, read_window
from rtpengine.index.mpegts import (PACKET_SIZE, PSI_SEARCH_BYTES, READ_BYTES, SYNC_BYTE, TsIndex,
                                   TsProgram, _Scan, _check_framing, ffi, find_program,
                                   finished_index, lib, write_index_hints)

_TIMES = struct.Struct("<IQ")     # rtp_ts, send_ns at offset 12 of a record
KEYFRAME = 0x0002

# find_program looks this far for the PAT, then as far again for the PMT.
_PSI_WINDOW = 2 * (PSI_SEARCH_BYTES // PACKET_SIZE * PACKET_SIZE)
_PCR_MODULUS = (1 << 33) * 300
_TICKS_PER_S = 27_000_000


class GrowingTsIndex:
    """The index of one transport stream whose prefix grows.

    ``feed`` scans new bytes; ``ready`` counts the records that are final;
    ``records`` copies them out; ``finish`` ends the scan when the whole
    file is there and writes the final hint file. Not thread-safe: one
    thread feeds it at a time (the scan runs in C without the GIL).
    """

    def __init__(self, name: str = "<ts>", *, start: int = 0,
                 program: Optional[TsProgram] = None, origin_pcr: Optional[int] = None) -> None:
        """An index of the file from offset 0, or (a seek ahead) from packet
        ``start`` on, with the ``program`` found at the front and the
        front's first PCR (``origin_pcr``, 27 MHz): records from ``start``
        are timed from the first PCR at or after it, moved onto the title's
        timeline by that PCR's distance from ``origin_pcr``. A PCR
        discontinuity between the front and ``start`` makes those times
        wrong until the front's index reaches them."""
        self.name = name
        self.program: Optional[TsProgram] = program
        self.start = start
        self.scanned = start
        self._buf: Optional[bytearray] = None   # the scan's read buffer (files only)
        # feed() runs in a worker thread and, for the probe's bytes, in the
        # reactor's: one at a time, or two scans race over the C state
        self._lock = threading.RLock()
        self._origin_pcr = origin_pcr
        self._shift: Optional[int] = 0 if start == 0 else None   # 27 MHz ticks
        self._scan: Optional[_Scan] = None
        self._index: Optional[TsIndex] = None
        if start:
            if program is None or origin_pcr is None or start % PACKET_SIZE:
                raise ValueError("an index from an offset needs the program, the first "
                                 "PCR and a packet boundary")
            self._scan = _Scan(program)
            if lib.kvod_ts_index_start_at(self._scan.ix, start) != lib.KVOD_TS_OK:
                self.close()
                raise ValueError(f"cannot start a scan at {start}")

    def close(self) -> None:
        """Free the C scan state."""
        if self._scan is not None:
            self._scan.__exit__(None, None, None)
            self._scan = None

    def __enter__(self) -> "GrowingTsIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def feed(self, mm, upto: int, *, complete: bool = False) -> int:
        """Scan the file's whole packets below ``upto``; returns ``ready()``.

        Thread-safe: see ``_feed``.
        """
        with self._lock:
            return self._feed(mm, upto, complete=complete)

    def _feed(self, mm, upto: int, *, complete: bool = False) -> int:
        """Scan the file's whole packets below ``upto``; returns ``ready()``.

        ``mm`` is the file from offset 0 holding at least ``upto`` bytes,
        all of them filled: a buffer, or (a fill's own file, never mapped)
        a ``FileBytes``, read a window at a time. ``complete`` says
        ``upto`` is the end of the file. Raises MediaError when the bytes
        cannot be a transport stream kvod serves, as ``index_mpegts``
        would (FileChanged if the file was cut short meanwhile).
        """
        if self._index is not None:
            raise MediaError(f"{self.name}: fed after finish")
        # what _check_framing and its explanations read: the first packets
        head = read_window(mm, 0, min(upto, 1024))
        if complete and upto % PACKET_SIZE:
            _check_framing(head, upto, self.name)
        whole = upto - upto % PACKET_SIZE
        if whole <= self.scanned:
            return self.ready()
        if head[0] != SYNC_BYTE or (whole > PACKET_SIZE and head[PACKET_SIZE] != SYNC_BYTE):
            _check_framing(head, whole, self.name)
        if self._scan is None:
            # find_program reads no further than the PSI window
            psi = read_window(mm, 0, min(whole, _PSI_WINDOW))
            try:
                with ffi.from_buffer(psi) as cpsi:
                    self.program = find_program(psi, cpsi, len(psi), self.name)
            except MediaError:
                # not yet: the PAT or PMT may be in bytes still to come
                if complete or whole >= _PSI_WINDOW:
                    raise
                return 0
            self._scan = _Scan(self.program)
        for start in range(self.scanned, whole, READ_BYTES):
            end = min(whole, start + READ_BYTES)
            window = self._window(mm, start, end - start)
            with ffi.from_buffer(window) as cwin:
                self._scan.scan(head, cwin, start, end, self.name, win_start=start)
            self.scanned = end      # the C state is there: a later feed goes on from it
        if self._shift is None:
            for start in range(self.start, whole, READ_BYTES):
                window = read_window(mm, start, min(whole, start + READ_BYTES) - start)
                first = next(_pcrs(window, self.program.pcr_pid), None)
                if first is not None:
                    self._shift = (first[1] - self._origin_pcr) % _PCR_MODULUS
                    break
        return self.ready()

    def _window(self, src, offset: int, size: int):
        """The bytes to scan: read into one buffer kept for the purpose when
        ``src`` is a file (a fresh 4 MiB buffer per read cost the index
        thread more page faults than the C scan costs time); the C scan
        keeps no pointer into it."""
        if not isinstance(src, FileBytes):
            return read_window(src, offset, size)
        if self._buf is None:
            self._buf = bytearray(READ_BYTES)
        return src.read_into(self._buf, offset, size)

    def ready(self) -> int:
        """How many records are final: timed, and closed to more packets."""
        if self._scan is None or self._shift is None:
            return 0
        ix = self._scan.ix
        if ix.finished:
            return ix.record_count
        return min(ix.timed_records, max(ix.record_count - 1, 0))

    def records(self, start: int, end: int) -> bytes:
        """Packed records ``[start, end)`` (all of them final)."""
        if not 0 <= start <= end <= self.ready():
            raise IndexError(f"records {start}..{end} of {self.ready()} ready")
        if start == end:
            return b""
        packed = bytes(ffi.buffer(self._scan.ix.records + start, (end - start) * RECORD_SIZE))
        if not self._shift:
            return packed
        # onto the title's timeline (a seek-ahead index)
        shift_rtp = self._shift // 300
        shift_ns = self._shift * 1000 // 27
        out = bytearray(packed)
        for at in range(0, len(out), RECORD_SIZE):
            rtp_ts, send_ns = _TIMES.unpack_from(out, at + 12)
            _TIMES.pack_into(out, at + 12, (rtp_ts + shift_rtp) & 0xFFFFFFFF, send_ns + shift_ns)
        return bytes(out)

    def first_keyframe(self) -> Optional[int]:
        """The first record a seek-ahead index can start a viewer at: a
        keyframe timed from a PCR of its own (records before the first PCR
        are all timed at it)."""
        ix = self._scan.ix if self._scan is not None else None
        for k in range(1, self.ready()):
            rec = ix.records[k]
            if rec.flags & KEYFRAME and rec.send_ns > 0:
                return k
        return None

    def finish(self, size: int, hint_path) -> TsIndex:
        """See ``_finish``; one at a time with ``feed``."""
        with self._lock:
            return self._finish(size, hint_path)

    def _finish(self, size: int, hint_path) -> TsIndex:
        """The file is whole (``size`` bytes, all fed): time the last records,
        write the final hint file to ``hint_path`` and return the index."""
        if self._index is not None:
            return self._index
        if self._scan is None or self.scanned != size:
            raise MediaError(f"{self.name}: {self.scanned} of {size} bytes indexed at the end "
                             "(no PAT/PMT, or not all fed)")
        self._scan.finish()
        index = finished_index(self.program, self._scan, size, self.name)
        write_index_hints(self._scan, hint_path, index)
        self._index = index
        return index


def _pcrs(buf, pcr_pid: int):
    """(packet offset, 27 MHz PCR) of every PCR on ``pcr_pid`` in ``buf``,
    which starts at a packet boundary."""
    info = ffi.new("struct kvod_ts_packet_info *")
    for off in range(0, len(buf) - PACKET_SIZE + 1, PACKET_SIZE):
        packet = bytes(buf[off:off + PACKET_SIZE])
        if lib.kvod_ts_packet_info(packet, PACKET_SIZE, lib.KVOD_TS_CODEC_OTHER, info):
            continue
        if info.pid == pcr_pid and info.has_pcr and not info.tei:
            yield off, info.pcr % _PCR_MODULUS


def first_pcr(head, pcr_pid: int) -> Optional[int]:
    """The first PCR (27 MHz) on ``pcr_pid`` in ``head`` (the file's first bytes)."""
    found = next(_pcrs(head, pcr_pid), None)
    return None if found is None else found[1]


def estimate_duration_ns(head: bytes, tail: bytes, tail_offset: int, size: int,
                         pcr_pid: int) -> Optional[int]:
    """The duration of a title from its first bytes and its last ones.

    Used before the whole title is there (to answer DESCRIBE with a range):
    the span from the first PCR of ``head`` to the last PCR of ``tail`` (at
    ``tail_offset`` in the file) plus the bytes after it at the mean rate.
    A PCR discontinuity in between makes it wrong; the index of the whole
    file replaces it. None when either end has no PCR.
    """
    first = next(_pcrs(head, pcr_pid), None)
    skip = (PACKET_SIZE - tail_offset % PACKET_SIZE) % PACKET_SIZE
    last = None
    for last in _pcrs(memoryview(tail)[skip:], pcr_pid):
        pass
    if first is None or last is None:
        return None
    first_off, first_pcr = first
    last_off = tail_offset + skip + last[0]
    if last_off <= first_off:
        return None
    span = (last[1] - first_pcr) % _PCR_MODULUS
    if span == 0:
        return None
    rest = span * (size - last_off) // (last_off - first_off)
    return (span + rest) * 1_000_000_000 // _TICKS_PER_S
