"""MPEG-TS indexer: a transport stream file -> an RFC 2250 hint file.

Python finds the program once (PAT, then PMT, parsed with construct from
reassembled, CRC-checked sections); the per-packet scan that cuts records,
finds keyframes and times every record from the PCR runs in C
(``csrc/ts_index.c``) over the file read piece by piece with ``pread``.

Not a mapping: touching a mapped page past the end of a file that shrank
under us (an operator's copy still running, a truncate) raises SIGBUS and
kills the process, and Python cannot catch it. A read of a shrunk file
just comes back short, which is an error we can name. The extra copy into
a 4 MB buffer costs less than the scan itself.

Each record is up to 7 whole TS packets taken contiguously from the file
(1316 bytes, RFC 2250); a keyframe on the video PID always starts a record,
so a seek lands exactly on it. Times come from PCR interpolation, relative
to the first PCR, on a timeline kept monotonic across PCR wraps and
discontinuities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import construct as cs

from rtpengine.index.errors import FileChanged, MediaError
from rtpengine.index.file_reads import file_identity, read_exactly
from rtpengine.hintfile import RECORD_SIZE, HintHeader, write_hint_file

try:
    from rtpengine._kvod_index import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError("rtpengine._kvod_index is not built: run "
                      "/usr/bin/python3 -m rtpengine.csrc.build _kvod_index") from exc

PACKET_SIZE = 188
SYNC_BYTE = 0x47
NULL_PID = 0x1FFF
CLOCK_RATE = 90000
PAYLOAD_TYPE_MP2T = 33          # RFC 3551 static payload type
# The PAT must start within this many bytes, and the PMT within as many
# after the PAT: real muxers repeat both every ~100 ms, so a file without
# them this early is not a stream we can serve.
PSI_SEARCH_BYTES = 4 << 20
# find_program() reads no further than this: the PAT within the search
# window, the PMT within one more window after it
HEAD_BYTES = 2 * (PSI_SEARCH_BYTES // 188 * 188)
READ_BYTES = (4 << 20) // 188 * 188    # one pread of the scan, whole packets
MAX_SECTION_LENGTH = 1021       # ISO/IEC 13818-1: PSI section_length bound

STREAM_CODECS = {
    0x01: "mpeg1video", 0x02: "mpeg2video", 0x03: "mp2", 0x04: "mp2",
    0x0F: "aac", 0x11: "aac_latm", 0x1B: "h264", 0x24: "hevc",
    0x81: "ac3", 0x87: "eac3",
}
VIDEO_CODECS = ("h264", "hevc", "mpeg2video", "mpeg1video")
AUDIO_CODECS = ("mp2", "aac", "aac_latm", "ac3", "eac3")
_SCAN_CODEC = {"h264": lib.KVOD_TS_CODEC_H264, "hevc": lib.KVOD_TS_CODEC_HEVC,
               **{codec: lib.KVOD_TS_CODEC_AUDIO for codec in AUDIO_CODECS}}

# PSI sections (ISO/IEC 13818-1 2.4.4). The CRC is checked in C before
# construct sees a section. Every length inside is bounded by the section
# (reads past it fail, Terminated rejects bytes left over), so a section
# whose lengths disagree fails to parse and is skipped like a bad CRC.
_SECTION_LENGTH = cs.BitStruct(
    "section_syntax_indicator" / cs.Flag,
    cs.Padding(3),
    "section_length" / cs.BitsInteger(12),
)
_VERSION = cs.BitStruct(
    cs.Padding(2),
    "version_number" / cs.BitsInteger(5),
    "current_next_indicator" / cs.Flag,
)
PAT_SECTION = cs.Struct(
    "table_id" / cs.Const(0x00, cs.Int8ub),
    "header" / _SECTION_LENGTH,
    "transport_stream_id" / cs.Int16ub,
    "version" / _VERSION,
    "section_number" / cs.Int8ub,
    "last_section_number" / cs.Int8ub,
    "programs" / cs.Array(
        lambda this: (this.header.section_length - 9) // 4,
        cs.BitStruct(
            "program_number" / cs.BitsInteger(16),
            cs.Padding(3),
            "pid" / cs.BitsInteger(13),
        )),
    "crc32" / cs.Int32ub,
    cs.Terminated,
)
_ES_ENTRY = cs.Struct(
    "stream_type" / cs.Int8ub,
    "bits" / cs.BitStruct(
        cs.Padding(3),
        "elementary_pid" / cs.BitsInteger(13),
        cs.Padding(4),
        "es_info_length" / cs.BitsInteger(12),
    ),
    cs.Padding(lambda this: this.bits.es_info_length),     # descriptors skipped
)
PMT_SECTION = cs.Struct(
    "table_id" / cs.Const(0x02, cs.Int8ub),
    "header" / _SECTION_LENGTH,
    "program_number" / cs.Int16ub,
    "version" / _VERSION,
    "section_number" / cs.Int8ub,
    "last_section_number" / cs.Int8ub,
    "bits" / cs.BitStruct(
        cs.Padding(3),
        "pcr_pid" / cs.BitsInteger(13),
        cs.Padding(4),
        "program_info_length" / cs.BitsInteger(12),
    ),
    cs.Padding(lambda this: this.bits.program_info_length),
    "streams" / cs.FixedSized(
        lambda this: this.header.section_length - 13 - this.bits.program_info_length,
        cs.Struct("entries" / cs.GreedyRange(_ES_ENTRY), cs.Terminated)),
    "crc32" / cs.Int32ub,
    cs.Terminated,
)


class TsStream(NamedTuple):
    """One elementary stream of the program, as the PMT lists it."""

    pid: int
    stream_type: int
    codec: str


@dataclass(frozen=True)
class TsProgram:
    """The program the indexer serves: what the PAT and PMT say."""

    program_number: int
    pmt_pid: int
    pcr_pid: int
    streams: tuple[TsStream, ...]
    pmt_offset: int             # packet where the chosen PMT section ended

    @property
    def video(self) -> TsStream | None:
        """The first video stream, whose keyframes become seek points."""
        return next((s for s in self.streams if s.codec in VIDEO_CODECS), None)

    @property
    def seek_stream(self) -> TsStream | None:
        """The stream whose random access points are the title's seek
        points: the first video stream, or in a title without video the
        first audio stream (every audio PES start)."""
        return self.video or next((s for s in self.streams if s.codec in AUDIO_CODECS),
                                  None)


@dataclass(frozen=True)
class TsIndex:
    """What indexing a transport stream found; the hint file holds the rest."""

    size: int                   # bytes
    packets: int                # 188-byte TS packets
    records: int                # hint records written
    duration_ns: int            # time of the end of the file on the PCR timeline
    bitrate: int                # bit/s, from size and duration
    pcr_pid: int
    streams: tuple[TsStream, ...]
    video_pid: int | None
    keyframes: int              # random access points found (video, else audio PID)
    discontinuities: int = 0    # PCR timeline breaks bridged


def stream_codec(stream_type: int) -> str:
    """The codec name for a PMT stream_type ('unknown' if not recognised)."""
    return STREAM_CODECS.get(stream_type, "unknown")


def _sync_error(mm, size: int, offset: int, name: str) -> MediaError:
    """Explain a missing sync byte, naming other TS packet sizes we see."""
    for period, lead, what in (
            (192, 4, "192-byte M2TS packets (4-byte timestamp prefix)"),
            (204, 0, "204-byte packets (16 bytes of Reed-Solomon parity)")):
        positions = range(lead, min(size, lead + 4 * period), period)
        if len(positions) >= 2 and all(mm[p] == SYNC_BYTE for p in positions):
            return MediaError(f"{name}: {what} are not supported; kvod needs "
                              f"188-byte MPEG-TS packets")
    return MediaError(f"{name}: no sync byte (0x47) at offset {offset}: "
                      f"not an MPEG-TS of 188-byte packets")


def _check_framing(mm, size: int, name: str) -> None:
    if mm[0] != SYNC_BYTE:
        raise _sync_error(mm, size, 0, name)
    if size > PACKET_SIZE and mm[PACKET_SIZE] != SYNC_BYTE:
        raise _sync_error(mm, size, PACKET_SIZE, name)
    if size % PACKET_SIZE:
        raise MediaError(f"{name}: truncated: {size % PACKET_SIZE} trailing bytes "
                         f"after {size // PACKET_SIZE} whole packets")


def _split_sections(buf: bytearray) -> tuple[list[bytes], bytearray | None]:
    """Complete sections at the front of ``buf`` and what is left to finish.

    The rest is None when nothing more can follow before the next
    payload_unit_start (stuffing, a finished packet or a bad length).
    """
    done = []
    while buf:
        if buf[0] == 0xFF:      # stuffing up to the end of the packet
            return done, None
        if len(buf) < 3:
            return done, buf
        length = (buf[1] & 0x0F) << 8 | buf[2]
        if length > MAX_SECTION_LENGTH:
            return done, None
        if len(buf) < 3 + length:
            return done, buf
        done.append(bytes(buf[:3 + length]))
        buf = buf[3 + length:]
    return done, None


def psi_sections(mm, cbuf, pid: int, start: int, end: int,
                 name: str) -> Iterator[tuple[int, bytes]]:
    """Reassemble the PSI sections carried on ``pid`` in [start, end).

    Yields (offset of the packet that completed the section, section bytes)
    for every section, CRC not yet checked. Sections split across packets
    are joined following pointer_field; a continuity_counter gap drops the
    section in progress, a repeated packet is skipped.
    """
    info = ffi.new("struct kvod_ts_packet_info *")
    at_p = ffi.new("uint64_t *")
    partial: bytearray | None = None
    last_cc: int | None = None
    off = start
    while off < end:
        rc = lib.kvod_ts_find_pid(cbuf, off, end, pid, at_p)
        if rc == 0:
            return
        at = at_p[0]
        if rc < 0:
            raise _sync_error(mm, len(mm), at, name)
        off = at + PACKET_SIZE
        lib.kvod_ts_packet_info(cbuf + at, PACKET_SIZE, lib.KVOD_TS_CODEC_OTHER, info)
        if info.tei or info.payload_offset >= PACKET_SIZE:
            continue
        if last_cc is not None:
            if info.cc == last_cc:
                continue
            if info.cc != (last_cc + 1) & 0x0F:
                partial = None
        last_cc = info.cc
        payload = mm[at + info.payload_offset:off]
        if info.pusi:
            pointer = payload[0]
            if 1 + pointer > len(payload):
                partial = None
                continue
            if partial is not None:
                partial += payload[1:1 + pointer]
                for section in _split_sections(partial)[0]:
                    yield at, section
            partial = bytearray(payload[1 + pointer:])
        elif partial is not None:
            partial += payload
        else:
            continue
        sections, partial = _split_sections(partial)
        for section in sections:
            yield at, section


def crc_ok(section: bytes) -> bool:
    """True if the section's MPEG-2 CRC32 matches its bytes."""
    return lib.kvod_crc32_mpeg(section, len(section)) == 0


def parse_pat(section: bytes) -> list[tuple[int, int]] | None:
    """(program_number, PMT PID) pairs of a current PAT section, else None."""
    if len(section) < 12 or not crc_ok(section):
        return None
    length = len(section) - 3
    if (length - 9) % 4:
        return None
    try:
        pat = PAT_SECTION.parse(section)
    except cs.ConstructError:
        return None
    if not pat.header.section_syntax_indicator or not pat.version.current_next_indicator:
        return None
    return [(p.program_number, p.pid) for p in pat.programs]


def parse_pmt(section: bytes) -> tuple[int, int, tuple[TsStream, ...]] | None:
    """(program_number, PCR PID, streams) of a current PMT section, else None."""
    if len(section) < 16 or not crc_ok(section):
        return None
    try:
        pmt = PMT_SECTION.parse(section)
    except cs.ConstructError:
        return None
    if not pmt.header.section_syntax_indicator or not pmt.version.current_next_indicator:
        return None
    streams = tuple(TsStream(e.bits.elementary_pid, e.stream_type, stream_codec(e.stream_type))
                    for e in pmt.streams.entries)
    return pmt.program_number, pmt.bits.pcr_pid, streams


def find_program(mm, cbuf, size: int, name: str = "<ts>") -> TsProgram:
    """The first program of the PAT and its PMT, from the start of the file.

    ``mm`` is the file's bytes (any buffer) and ``cbuf`` a cffi pointer to
    the same memory; ``size`` is a multiple of 188.
    """
    end = min(size, PSI_SEARCH_BYTES // PACKET_SIZE * PACKET_SIZE)
    pat_at, programs = None, None
    for at, section in psi_sections(mm, cbuf, 0, 0, end, name):
        if section[0] == 0x00:
            programs = parse_pat(section)
            if programs is not None:
                pat_at = at
                break
    if pat_at is None or programs is None:
        raise MediaError(f"{name}: no valid PAT (PID 0) in the first {end} bytes")
    programs = [p for p in programs if p[0] != 0]    # 0 names the network PID
    if not programs:
        raise MediaError(f"{name}: the PAT at offset {pat_at} lists no program")
    number, pmt_pid = programs[0]
    end = min(size, pat_at + PSI_SEARCH_BYTES // PACKET_SIZE * PACKET_SIZE)
    for at, section in psi_sections(mm, cbuf, pmt_pid, pat_at, end, name):
        if section[0] != 0x02:
            continue
        pmt = parse_pmt(section)
        if pmt is not None and pmt[0] == number:
            _, pcr_pid, streams = pmt
            if pcr_pid == NULL_PID:
                raise MediaError(f"{name}: the PMT at offset {at} has no PCR PID "
                                 f"(0x1FFF): the stream cannot be timed")
            return TsProgram(number, pmt_pid, pcr_pid, streams, at)
    raise MediaError(f"{name}: no valid PMT for program {number} on PID {pmt_pid:#x} "
                     f"within {PSI_SEARCH_BYTES} bytes of the PAT at offset {pat_at}")


class _Scan:
    """The C scan state, freed on every path (a context manager)."""

    def __init__(self, program: TsProgram):
        seek = program.seek_stream or TsStream(NULL_PID, 0, "unknown")
        codec = _SCAN_CODEC.get(seek.codec, lib.KVOD_TS_CODEC_OTHER)
        self.ix = lib.kvod_ts_index_new(program.pcr_pid, seek.pid, codec)
        if self.ix == ffi.NULL:
            raise MemoryError("cannot allocate the TS scan state")

    def __enter__(self) -> "_Scan":
        return self

    def __exit__(self, *exc) -> None:
        lib.kvod_ts_index_free(self.ix)
        self.ix = ffi.NULL

    def scan(self, mm, cbuf, start: int, end: int, name: str, win_start: int = 0) -> None:
        """Scan [start, end) of the file; ``cbuf`` holds its bytes from
        ``win_start`` on, ``mm`` at least its first packets (for errors)."""
        rc = lib.kvod_ts_index_scan_window(self.ix, cbuf, win_start, start, end)
        if rc == lib.KVOD_TS_ERR_SYNC:
            raise _sync_error(mm, len(mm), self.ix.error_offset, name)
        if rc == lib.KVOD_TS_ERR_NOMEM:
            raise MemoryError(f"{name}: out of memory for hint records at offset "
                              f"{self.ix.error_offset}")
        if rc != lib.KVOD_TS_OK:
            raise RuntimeError(f"kvod_ts_index_scan({start}, {end}) returned {rc}")

    def finish(self) -> None:
        lib.kvod_ts_index_finish(self.ix)

    def records(self):
        """The packed records, as a buffer over the C array (no copy)."""
        return ffi.buffer(self.ix.records, self.ix.record_count * RECORD_SIZE)


def finished_index(program: TsProgram, scan: "_Scan", size: int, name: str) -> TsIndex:
    """What a finished scan of the whole file found; MediaError if it cannot be timed."""
    ix = scan.ix
    if not ix.pcr_count:
        raise MediaError(f"{name}: no PCR on the PCR PID {program.pcr_pid:#x}")
    if not ix.end_ticks:
        raise MediaError(f"{name}: the PCR on PID {program.pcr_pid:#x} never "
                         f"advances ({ix.pcr_count} PCRs): the stream cannot be timed")
    video = program.video
    return TsIndex(
        size=size, packets=ix.packets, records=ix.record_count,
        duration_ns=ix.duration_ns,
        bitrate=size * 8 * 1_000_000_000 // ix.duration_ns,
        pcr_pid=program.pcr_pid, streams=program.streams,
        video_pid=video.pid if video else None, keyframes=ix.keyframes,
        discontinuities=ix.discontinuities)


def write_index_hints(scan: "_Scan", hint_path, index: TsIndex) -> None:
    """Write a finished scan's records as the track's hint file (atomically)."""
    header = HintHeader(clock_rate=CLOCK_RATE, payload_type=PAYLOAD_TYPE_MP2T,
                        record_count=index.records, duration_ns=index.duration_ns)
    write_hint_file(hint_path, header, scan.records())


def _index_fd(fd: int, size: int, name: str, hint_path) -> TsIndex:
    head = bytearray(min(size, HEAD_BYTES))
    read_exactly(fd, head, 0, len(head), name)
    _check_framing(head, size, name)
    with ffi.from_buffer(head) as chead:
        program = find_program(head, chead, len(head), name)
    buf = bytearray(min(size, READ_BYTES))
    with _Scan(program) as scan, ffi.from_buffer(buf) as cbuf:
        for start in range(0, size, READ_BYTES):
            end = min(size, start + READ_BYTES)
            read_exactly(fd, buf, start, end - start, name)
            scan.scan(head, cbuf, start, end, name, win_start=start)
        scan.finish()
        index = finished_index(program, scan, size, name)
        write_index_hints(scan, hint_path, index)
        return index


def index_mpegts(media_path: str | os.PathLike, hint_path: str | os.PathLike) -> TsIndex:
    """Index the MPEG-TS at ``media_path``; write its hint file to ``hint_path``.

    The hint file (clock rate 90 kHz, payload type 33) is written
    atomically. Raises MediaError if the file is empty, truncated, not a
    188-byte-packet transport stream, or has no PAT, PMT or PCR to serve
    it by; FileChanged (a MediaError) if it changed while it was read.
    """
    name = os.fspath(media_path)
    with open(name, "rb") as f:
        fd = f.fileno()
        before = file_identity(os.fstat(fd))
        size = before[2]
        if size == 0:
            raise MediaError(f"{name}: empty file (0 bytes)")
        # one pass front to back: read ahead on a cold file, and let the
        # kernel drop what is behind us on a title larger than memory
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        index = _index_fd(fd, size, name, hint_path)
        # a rewrite of the same size reads back whole but mixed: the
        # modification time says the records may not match the bytes
        if file_identity(os.fstat(fd)) != before:
            os.unlink(hint_path)
            raise FileChanged(f"{name}: the file changed while it was indexed")
        return index
