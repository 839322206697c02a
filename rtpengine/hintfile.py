"""Hint files: the packetisation of one track, computed once at ingest.

The layout is fixed in ``kernel/uapi/krtp.h`` (shared with the C engine and
the kernel module); ``tests/test_hintfile.py`` checks this module against
that header. The header is parsed once per open with construct; records are
fixed-size and read with ``struct`` because there is one per packet.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import os
import struct
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import construct as cs

MAGIC = b"KVODHINT"
VERSION = 1
HEADER_SIZE = 64
RECORD_SIZE = 32
PREFIX_MAX = 5

REC_MARKER = 0x0001
REC_KEYFRAME = 0x0002
REC_BLOB = 0x0004
REC_DISCONTINUITY = 0x0008
_KNOWN_FLAGS = REC_MARKER | REC_KEYFRAME | REC_BLOB | REC_DISCONTINUITY

# Upper bound on a hint file we agree to map: 2**32 records is 128 GiB of
# hints, far beyond any title; a larger count is a corrupt or hostile file.
MAX_RECORDS = 2**32

HINT_HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int16ul,
    "header_size" / cs.Int16ul,
    "record_size" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "clock_rate" / cs.Int32ul,
    "payload_type" / cs.Int8ul,
    "pad" / cs.Padding(3),
    "record_count" / cs.Int64ul,
    "duration_ns" / cs.Int64ul,
    "blob_offset" / cs.Int64ul,
    "blob_size" / cs.Int64ul,
    "reserved" / cs.Padding(8),
)
assert HINT_HEADER.sizeof() == HEADER_SIZE

# offset, length, rtp_ts, send_ns, flags, prefix_len, prefix[5]
RECORD = struct.Struct("<QIIQHB5s")
assert RECORD.size == RECORD_SIZE


class HintError(ValueError):
    """A hint file is malformed, truncated or inconsistent."""


class HintRecord(NamedTuple):
    """One RTP packet of a track: where its payload is and when it leaves."""

    offset: int
    length: int
    rtp_ts: int
    send_ns: int
    flags: int
    prefix: bytes

    def pack(self) -> bytes:
        """Serialise to the 32-byte on-disk record."""
        if len(self.prefix) > PREFIX_MAX:
            raise HintError(f"prefix of {len(self.prefix)} bytes exceeds {PREFIX_MAX}")
        return RECORD.pack(self.offset, self.length, self.rtp_ts, self.send_ns,
                           self.flags, len(self.prefix), self.prefix)

    @classmethod
    def unpack_from(cls, buf, offset: int = 0) -> "HintRecord":
        """Parse the 32-byte record at ``offset`` of ``buf``."""
        off, length, rtp_ts, send_ns, flags, plen, prefix = RECORD.unpack_from(buf, offset)
        if plen > PREFIX_MAX:
            raise HintError(f"record prefix_len {plen} exceeds {PREFIX_MAX}")
        return cls(off, length, rtp_ts, send_ns, flags, prefix[:plen])


@dataclass(frozen=True)
class HintHeader:
    """The fields of a hint file header that describe the track."""

    clock_rate: int
    payload_type: int
    record_count: int
    duration_ns: int
    flags: int = 0
    blob_offset: int = 0
    blob_size: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.clock_rate < 2**32:
            raise HintError(f"clock rate {self.clock_rate} out of range")
        if not 0 <= self.payload_type < 128:
            raise HintError(f"payload type {self.payload_type} out of range")
        if not 0 <= self.record_count < MAX_RECORDS:
            raise HintError(f"record count {self.record_count} out of range")

    def pack(self) -> bytes:
        """Serialise to the 64-byte on-disk header."""
        return HINT_HEADER.build(dict(
            version=VERSION, header_size=HEADER_SIZE, record_size=RECORD_SIZE,
            flags=self.flags, clock_rate=self.clock_rate,
            payload_type=self.payload_type, record_count=self.record_count,
            duration_ns=self.duration_ns, blob_offset=self.blob_offset,
            blob_size=self.blob_size))

    @classmethod
    def parse(cls, data: bytes) -> "HintHeader":
        """Parse and validate a 64-byte header."""
        if len(data) < HEADER_SIZE:
            raise HintError(f"hint header truncated: {len(data)} of {HEADER_SIZE} bytes")
        try:
            h = HINT_HEADER.parse(data[:HEADER_SIZE])
        except cs.ConstError as exc:
            raise HintError("not a hint file (bad magic)") from exc
        if h.version != VERSION:
            raise HintError(f"hint file version {h.version} is not supported (want {VERSION})")
        if h.header_size != HEADER_SIZE or h.record_size != RECORD_SIZE:
            raise HintError(f"hint layout {h.header_size}/{h.record_size} is not "
                            f"{HEADER_SIZE}/{RECORD_SIZE}")
        return cls(clock_rate=h.clock_rate, payload_type=h.payload_type,
                   record_count=h.record_count, duration_ns=h.duration_ns,
                   flags=h.flags, blob_offset=h.blob_offset, blob_size=h.blob_size)


@functools.lru_cache(maxsize=1024)
def _parse_header(data: bytes) -> HintHeader:
    """:meth:`HintHeader.parse`, remembered by the header's bytes: every
    SETUP opens its track's hint file, and construct takes 0.1 ms to parse
    the 64 bytes it parsed for the last viewer (a header that fails raises
    and is not remembered)."""
    return HintHeader.parse(data)


def write_hint_file(path: str | os.PathLike, header: HintHeader, records: bytes,
                    blob: bytes = b"") -> None:
    """Write a hint file atomically: temporary name, fsync, rename, fsync dir.

    ``records`` is the concatenation of packed records (as the C indexer
    returns them); its length must match ``header.record_count``. ``blob``
    (bytes that BLOB records point into) follows the records, and the
    header's blob fields are set to say where.
    """
    if len(records) != header.record_count * RECORD_SIZE:
        raise HintError(f"{len(records)} record bytes for {header.record_count} records")
    if blob:
        header = dataclasses.replace(header, blob_offset=HEADER_SIZE + len(records),
                                     blob_size=len(blob))
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(header.pack())
            f.write(records)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class GrowingHintFile:
    """A hint file a fill extends while streams read it: records are only
    ever appended, never rewritten, so a mapping of an earlier size stays
    valid.

    Its header says 0 records (a reader that does not know better sees an
    empty track); readers are told the count: ``HintFile(path,
    record_count=n)`` and ``Stream.set_hints(fd, n)``. When the track is
    complete, :func:`write_hint_file` replaces it (a new file, renamed over
    this one) with the true header. It is not fsync'd: after a crash it is
    rebuilt from the media bytes known to be on disk.
    """

    def __init__(self, path: str | os.PathLike, clock_rate: int, payload_type: int) -> None:
        self.path = os.fspath(path)
        self.count = 0
        header = HintHeader(clock_rate=clock_rate, payload_type=payload_type,
                            record_count=0, duration_ns=0)
        # complete before it is visible under its name
        tmp = f"{self.path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o644)
        try:
            os.write(fd, header.pack())
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._fd: int | None = fd

    def append(self, records: bytes) -> int:
        """Add packed records at the end; returns the record count now.

        All or nothing: a write that fails halfway (a full disk) is cut
        back, so the file never holds part of a record and a later append
        lands where the next record belongs."""
        if len(records) % RECORD_SIZE:
            raise HintError(f"{len(records)} bytes are not whole {RECORD_SIZE}-byte records")
        if self._fd is None:
            raise HintError(f"{self.path}: closed")
        view = memoryview(records)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            os.ftruncate(self._fd, HEADER_SIZE + self.count * RECORD_SIZE)
            raise
        self.count += len(records) // RECORD_SIZE
        return self.count

    def close(self) -> None:
        """Stop appending (the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "GrowingHintFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HintFile:
    """A read-only hint file, validated on open.

    Records are read lazily, a block at a time; seeking is a binary search
    on ``send_ns`` so opening a long title costs nothing per packet.
    ``record_count`` overrides the header's count (a
    :class:`GrowingHintFile` whose appender knows the count).

    Read with ``pread``, not mapped: the daemon holds this open while it
    streams, and a mapped page past the end of a file cut short meanwhile
    would kill it with SIGBUS; a short read is a :class:`HintError`.
    """

    BLOCK = 256 * RECORD_SIZE       # records read at once (8 KiB)

    def __init__(self, path: str | os.PathLike, record_count: int | None = None):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._block: tuple[int, bytes] = (-1, b"")
        try:
            size = os.fstat(self._fd).st_size
            if size < HEADER_SIZE:
                raise HintError(f"{self.path}: hint file truncated ({size} bytes)")
            self.header = _parse_header(self._pread(0, HEADER_SIZE))
            if record_count is not None:
                self.header = dataclasses.replace(self.header, record_count=record_count)
            want = HEADER_SIZE + self.header.record_count * RECORD_SIZE
            if size < want:
                raise HintError(f"{self.path}: {size} bytes, header promises {want}")
        except BaseException:
            self.close()
            raise

    def _pread(self, offset: int, size: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        if len(data) < size:
            raise HintError(f"{self.path}: the hint file was cut short: it ends before "
                            f"byte {offset + size}")
        return data

    def read_bytes(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the file at ``offset`` (fewer at its end)."""
        return os.pread(self._fd, size, offset)

    def _record_bytes(self, index: int) -> bytes:
        """The 32 bytes of record ``index``, from the block that holds it."""
        first = index - index % (self.BLOCK // RECORD_SIZE)
        if self._block[0] != first:
            count = min(self.BLOCK // RECORD_SIZE, self.header.record_count - first)
            self._block = (first, self._pread(HEADER_SIZE + first * RECORD_SIZE,
                                              count * RECORD_SIZE))
        at = (index - first) * RECORD_SIZE
        return self._block[1][at:at + RECORD_SIZE]

    def identity(self) -> tuple[int, int, int, int]:
        """(device, inode, size, mtime in ns) of the open file: changes when
        the file is replaced, rewritten or cut short (a cache key)."""
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def close(self) -> None:
        """Close the file (twice is fine)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "HintFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.header.record_count

    def record(self, index: int) -> HintRecord:
        """Return record ``index`` (0-based)."""
        if not 0 <= index < self.header.record_count:
            raise IndexError(index)
        return HintRecord.unpack_from(self._record_bytes(index))

    def __iter__(self) -> Iterator[HintRecord]:
        for i in range(self.header.record_count):
            yield self.record(i)

    def records_bytes(self) -> bytes:
        """All records as one bytes object (for tests and tools)."""
        return self._pread(HEADER_SIZE, self.header.record_count * RECORD_SIZE)

    def _send_ns(self, index: int) -> int:
        first, block = self._block
        if first <= index < first + len(block) // RECORD_SIZE:
            return struct.unpack_from("<Q", block, (index - first) * RECORD_SIZE + 16)[0]
        # a binary search's probes are far apart: 8 bytes each, not a block each
        return struct.unpack("<Q", self._pread(HEADER_SIZE + index * RECORD_SIZE + 16, 8))[0]

    def index_at(self, send_ns: int) -> int:
        """Index of the last record whose send time is at or before ``send_ns``."""
        n = self.header.record_count
        if n == 0:
            raise HintError(f"{self.path}: no records")
        # most plays start at the beginning: the first block's records are
        # searched in memory, one read instead of a search's twenty probes
        self._record_bytes(0)
        in_block = len(self._block[1]) // RECORD_SIZE
        if in_block == n or self._send_ns(in_block - 1) > send_ns:
            n = in_block
        i = bisect.bisect_right(range(n), send_ns, key=self._send_ns)
        return max(i - 1, 0)

    def keyframe_at_or_before(self, send_ns: int) -> int:
        """Index of the keyframe record at or before ``send_ns`` (0 if none).

        Scans backwards from the time's position; keyframes come every few
        seconds, so this reads a few thousand records at most.
        """
        i = self.index_at(send_ns)
        while i > 0 and not self._flags(i) & REC_KEYFRAME:
            i -= 1
        # Records sharing a send time leave together: start at the first
        # keyframe of the group (record 0 holds PAT/PMT at the same time as
        # the first IDR, and a player needs both).
        while i > 0 and self._flags(i - 1) & REC_KEYFRAME and \
                self._send_ns(i - 1) == self._send_ns(i):
            i -= 1
        return i

    def _flags(self, index: int) -> int:
        return struct.unpack_from("<H", self._record_bytes(index), 24)[0]
