"""MP4 (ISO BMFF) indexer: a progressive MP4 -> one hint file per track.

Python walks the boxes once (``mp4_boxes``: ``moov`` wherever it lies,
then each ``trak``'s ``mdhd``, ``hdlr``, ``elst``, ``stsd`` and sample
tables) and picks the first H.264 or H.265 track and the first AAC track.
The per-sample work (expanding the tables, checking every sample against
the file, walking NAL units, cutting packets, timing them) runs in C
(``csrc/mp4_index.c``) over a read-only mapping of the file.

Records point at the media bytes themselves: for H.264/H.265 at the NAL
units, skipping their length prefixes; an FU's indicator and header (RFC
6184 FU-A, RFC 7798 FU) and AAC's AU header section (RFC 3640 AAC-hbr) are
record prefix bytes. RTP timestamps are presentation times (decode time +
composition offset - the edit list's start); records leave in decode order,
the packets of a sample spread over its duration. Parameter sets from
``avcC``/``hvcC`` go in the SDP (``sprop-*``).
"""

from __future__ import annotations

import array
import base64
import mmap
import os
import sys
from dataclasses import dataclass
from typing import Callable

from rtpengine.hintfile import RECORD_SIZE, HintHeader, write_hint_file
from rtpengine.index import mp4_boxes as bx
from rtpengine.index.errors import MediaError

try:
    from rtpengine._kvod_index import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError("rtpengine._kvod_index is not built: run "
                      "/usr/bin/python3 -m rtpengine.csrc.build _kvod_index") from exc

VIDEO_CLOCK = 90000
PAYLOAD_TYPES = {"video": 96, "audio": 97}
# RTP payload per packet, prefix included: 1400 + 12 + 8 + 20 (+ 20 for IPv6,
# and room for a tunnel) stays under a 1500-byte MTU
MAX_PAYLOAD = 1400
# a film's moov is a few MB; this bounds what a lying size makes us read
MAX_MOOV = 256 << 20
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
             11025, 8000, 7350)
# the box types an ISO BMFF file may start with
FIRST_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp")
_VIDEO_ENTRIES = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "hevc", b"hev1": "hevc"}
_CODEC_ENUM = {"h264": lib.KVOD_MP4_CODEC_H264, "hevc": lib.KVOD_MP4_CODEC_HEVC,
               "aac": lib.KVOD_MP4_CODEC_AAC}
_ENCODING = {"h264": "H264", "hevc": "H265", "aac": "MPEG4-GENERIC"}
_TABLE_ERRORS = {
    lib.KVOD_MP4_BAD_STSC: "stsc's chunk runs are out of order or name chunks stco lacks",
    lib.KVOD_MP4_BAD_STSC_TOTAL: "stsc describes another number of samples than stsz",
    lib.KVOD_MP4_BAD_STTS_TOTAL: "stts times another number of samples than stsz",
    lib.KVOD_MP4_BAD_CTTS_TOTAL: "ctts offsets another number of samples than stsz",
    lib.KVOD_MP4_BAD_STSS: "stss's sync sample numbers are out of order or range",
    lib.KVOD_MP4_BAD_SIZE: "an empty sample, or samples adding up to more than the file",
    lib.KVOD_MP4_BAD_TIME: "a sample time out of range",
}


@dataclass(frozen=True)
class Mp4Track:
    """One indexed track, as the catalog and the SDP need it."""

    track_id: int
    kind: str                   # video | audio
    codec: str                  # h264 | hevc | aac
    encoding: str               # the rtpmap encoding name
    clock_rate: int
    payload_type: int
    fmtp: str
    channels: int | None
    samples: int
    records: int
    keyframes: int
    duration_ns: int


@dataclass(frozen=True)
class Mp4Index:
    """What indexing an MP4 found; the hint files hold the records."""

    size: int
    duration_ns: int
    bitrate: int
    moov_offset: int
    tracks: tuple[Mp4Track, ...]


@dataclass
class _Trak:
    """What one trak's boxes say, before the samples are indexed."""

    track_id: int
    kind: str
    codec: str
    timescale: int
    shift: int
    clock_rate: int
    fmtp: str
    channels: int | None
    nal_length_size: int
    tables: dict
    param_sets: tuple[bytes, ...] = ()


def looks_like_mp4(head: bytes) -> bool:
    """Whether a file's first bytes are those of an MP4 (ISO BMFF) box."""
    return len(head) >= 8 and head[4:8] in FIRST_BOX_TYPES


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _aac_config(asc: bytes, name: str) -> tuple[int, int, int]:
    """(audio object type, sampling rate, channel configuration) of an
    AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)."""
    bits = int.from_bytes(asc[:8].ljust(8, b"\0"), "big")
    if len(asc) < 2:
        raise MediaError(f"{name}: AudioSpecificConfig of {len(asc)} bytes")
    pos = 64

    def take(n: int) -> int:
        nonlocal pos
        pos -= n
        return bits >> pos & ((1 << n) - 1)
    aot = take(5)
    if aot == 31:
        aot = 32 + take(6)
    index = take(4)
    rate = take(24) if index == 15 else (AAC_RATES[index] if index < len(AAC_RATES) else 0)
    channels = take(4)
    if not rate:
        raise MediaError(f"{name}: AudioSpecificConfig has no valid sampling rate")
    return aot, rate, channels


def _elst_shift(traks: list[bx.Box], buf, base: int, name: str, movie_ts: int,
                media_ts: int) -> int:
    """Media ticks to subtract from composition times: the first edit's start,
    less any empty edit before it (which delays the track)."""
    edts = bx.find(traks, b"edts")
    if edts is None:
        return 0
    elst = bx.find(bx.children(buf, edts, base=base, name=name), b"elst")
    if elst is None:
        return 0
    entries = bx.parse(bx.ELST, elst, buf, base, name).entries
    delay = 0
    for e in entries:
        if e.media_time == -1:
            delay += e.segment_duration
            continue
        if movie_ts == 0:
            raise MediaError(f"{name}: mvhd timescale is 0")
        shift = e.media_time - delay * media_ts // movie_ts
        if abs(shift) > 1 << 40:
            raise MediaError(f"{name}: {elst.where()}: edit of {shift} ticks")
        return shift
    return 0


def _video_config(entry: bx.Box, codec: str, buf, base: int, name: str):
    """(fmtp, NAL length size) from the avcC/hvcC inside a visual sample entry."""
    if entry.end - entry.body < bx.VISUAL_ENTRY_SIZE:
        raise MediaError(f"{name}: {entry.where()}: truncated sample entry")
    kids = bx.children(buf, entry, base=base, name=name, skip=bx.VISUAL_ENTRY_SIZE)
    if codec == "h264":
        box = bx.find(kids, b"avcC")
        if box is None:
            raise MediaError(f"{name}: {entry.where()}: no avcC")
        cfg = bx.parse(bx.AVCC, box, buf, base, name)
        sps, pps = list(cfg.sps), list(cfg.pps)
        plid = bytes(sps[0][1:4]) if sps and len(sps[0]) >= 4 else \
            bytes((cfg.profile, cfg.compatibility, cfg.level))
        fmtp = f"packetization-mode=1;profile-level-id={plid.hex().upper()}"
        sets = [bytes(p) for p in sps + pps if p]
        if sets:
            fmtp += ";sprop-parameter-sets=" + ",".join(_b64(p) for p in sets)
        return fmtp, cfg.length_size_minus_one.value + 1, tuple(sets)
    box = bx.find(kids, b"hvcC")
    if box is None:
        raise MediaError(f"{name}: {entry.where()}: no hvcC")
    cfg = bx.parse(bx.HVCC, box, buf, base, name)
    sets: dict[int, list[bytes]] = {32: [], 33: [], 34: []}
    for arr in cfg.arrays:
        if arr.nal_type in sets:
            sets[arr.nal_type].extend(bytes(n) for n in arr.nalus)
    parts = [f"sprop-{key}={','.join(_b64(n) for n in sets[t])}"
             for key, t in (("vps", 32), ("sps", 33), ("pps", 34)) if sets[t]]
    in_band = tuple(n for t in (32, 33, 34) for n in sets[t] if n)
    return ";".join(parts) or "sprop-vps=", cfg.length_size_minus_one + 1, in_band


def _audio_config(entry: bx.Box, buf, base: int, name: str):
    """(fmtp, clock rate, channels) from an mp4a sample entry's esds."""
    data = entry.data(buf, base)
    if len(data) < bx.AUDIO_ENTRY_SIZE[0]:
        raise MediaError(f"{name}: {entry.where()}: truncated sample entry")
    head = bx.AUDIO_ENTRY.parse(bytes(data[:bx.AUDIO_ENTRY_SIZE[0]]))
    skip = bx.AUDIO_ENTRY_SIZE.get(head.qt_version)
    if skip is None:
        raise MediaError(f"{name}: {entry.where()}: sound entry version {head.qt_version}")
    kids = bx.children(buf, entry, base=base, name=name, skip=skip)
    esds = bx.find(kids, b"esds")
    wave = bx.find(kids, b"wave")
    if esds is None and wave is not None:    # QuickTime puts it one level down
        esds = bx.find(bx.children(buf, wave, base=base, name=name), b"esds")
    if esds is None:
        raise MediaError(f"{name}: {entry.where()}: no esds")
    oti, asc = bx.parse_esds(esds.data(buf, base), name)
    if oti != 0x40 or not asc:
        raise MediaError(f"{name}: audio object type {oti:#x} is not AAC (0x40) with a "
                         f"config")
    aot, rate, chans = _aac_config(asc, name)
    fmtp = (f"streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;"
            f"indexlength=3;indexdeltalength=3;config={asc.hex().upper()}")
    return fmtp, rate, chans or head.channels or None


def _tables(stbl: list[bx.Box], buf, base: int, name: str) -> dict:
    """The sample tables of an stbl, as arrays (still unchecked against each other)."""
    def need(kind: bytes) -> bx.Box:
        box = bx.find(stbl, kind)
        if box is None:
            raise MediaError(f"{name}: stbl has no {kind.decode()}")
        return box
    tables: dict = {}
    stsz = bx.find(stbl, b"stsz")
    if stsz is not None:
        data = stsz.data(buf, base)
        if len(data) < 12:
            raise MediaError(f"{name}: {stsz.where()}: truncated")
        fixed = int.from_bytes(data[4:8], "big")
        count = int.from_bytes(data[8:12], "big")
        if count > lib.KVOD_MP4_MAX_SAMPLES:
            raise MediaError(f"{name}: {stsz.where()}: {count} samples is over the "
                             f"limit of {lib.KVOD_MP4_MAX_SAMPLES}")
        tables["sample_size"] = fixed
        tables["sample_count"] = count
        tables["sizes"] = None if fixed else \
            bx.u32_table(stsz, buf, base, name, columns=1, header=12, count_at=8)
    else:
        stz2 = need(b"stz2")
        sizes = bx.stz2_table(stz2, buf, base, name)
        if len(sizes) > lib.KVOD_MP4_MAX_SAMPLES:
            raise MediaError(f"{name}: {stz2.where()}: {len(sizes)} samples is over "
                             f"the limit")
        tables.update(sample_size=0, sample_count=len(sizes), sizes=sizes)
    co = bx.find(stbl, b"stco") or need(b"co64")
    tables["chunk_offsets"] = bx.u64_table(co, buf, base, name)
    tables["stsc"] = bx.u32_table(need(b"stsc"), buf, base, name, columns=3)
    tables["stts"] = bx.u32_table(need(b"stts"), buf, base, name, columns=2)
    ctts = bx.find(stbl, b"ctts")
    tables["ctts"] = bx.u32_table(ctts, buf, base, name, columns=2) if ctts else None
    stss = bx.find(stbl, b"stss")
    tables["stss"] = bx.u32_table(stss, buf, base, name, columns=1) if stss else None
    return tables


def _read_trak(trak: bx.Box, buf, base: int, name: str, movie_ts: int,
               budget: list[int]) -> _Trak | None:
    """A trak we can serve, or None (other media, other codecs)."""
    kids = bx.children(buf, trak, base=base, name=name, budget=budget)
    tkhd, mdia = bx.find(kids, b"tkhd"), bx.find(kids, b"mdia")
    if tkhd is None or mdia is None:
        raise MediaError(f"{name}: {trak.where()}: no tkhd or mdia")
    track_id = bx.parse(bx.TKHD, tkhd, buf, base, name).track_id
    mkids = bx.children(buf, mdia, base=base, name=name, budget=budget)
    mdhd, hdlr, minf = (bx.find(mkids, k) for k in (b"mdhd", b"hdlr", b"minf"))
    if mdhd is None or hdlr is None or minf is None:
        raise MediaError(f"{name}: {mdia.where()}: no mdhd, hdlr or minf")
    handler = bx.parse(bx.HDLR, hdlr, buf, base, name).handler_type
    if handler not in (b"vide", b"soun"):
        return None
    timescale = bx.parse(bx.MDHD, mdhd, buf, base, name).timescale
    if not timescale:
        raise MediaError(f"{name}: track {track_id}: mdhd timescale is 0")
    stbl_box = bx.find(bx.children(buf, minf, base=base, name=name, budget=budget), b"stbl")
    if stbl_box is None:
        raise MediaError(f"{name}: track {track_id}: no stbl")
    stbl = bx.children(buf, stbl_box, base=base, name=name, budget=budget)
    stsd = bx.find(stbl, b"stsd")
    if stsd is None:
        raise MediaError(f"{name}: track {track_id}: no stsd")
    head = bx.parse(bx.STSD_HEADER, bx.Box(stsd.type, stsd.start, stsd.body,
                                           min(stsd.end, stsd.body + 8)), buf, base, name)
    entries = bx.children(buf, stsd, base=base, name=name, skip=8, budget=budget)
    if head.entry_count != 1 or len(entries) != 1:
        raise MediaError(f"{name}: track {track_id}: {head.entry_count} sample "
                         f"descriptions (kvod serves tracks with exactly one)")
    entry = entries[0]
    channels, nls, param_sets = None, 0, ()
    if handler == b"vide":
        codec = _VIDEO_ENTRIES.get(entry.type)
        if codec is None:
            return None
        fmtp, nls, param_sets = _video_config(entry, codec, buf, base, name)
        clock, kind = VIDEO_CLOCK, "video"
    else:
        if entry.type != b"mp4a":
            return None
        codec, kind = "aac", "audio"
        fmtp, clock, channels = _audio_config(entry, buf, base, name)
    shift = _elst_shift(kids, buf, base, name, movie_ts, timescale)
    return _Trak(track_id, kind, codec, timescale, shift, clock, fmtp, channels, nls,
                 _tables(stbl, buf, base, name), param_sets)


class _CTrack:
    """One track's C indexer state (``struct kvod_mp4_track``) and the arrays
    it points at, kept alive as long as it is; ``free()`` releases its
    records."""

    def __init__(self, t: _Trak, cmedia, size: int, name: str) -> None:
        self.t = t
        self.size = size
        self.where = f"{name}: track {t.track_id} ({t.codec})"
        tb = t.tables
        self._keep: list = []       # the C reads these arrays
        if tb["sizes"] is not None and len(tb["sizes"]) != tb["sample_count"]:
            raise MediaError(f"{name}: track {t.track_id}: stsz lists {len(tb['sizes'])} "
                             f"sizes for {tb['sample_count']} samples")
        tr = self.tr = ffi.new("struct kvod_mp4_track *")
        tr.sizes, _ = self._ptr("uint32_t", tb["sizes"])
        tr.sample_size = tb["sample_size"]
        tr.sample_count = tb["sample_count"]
        tr.chunk_offsets, tr.chunk_count = self._ptr("uint64_t", tb["chunk_offsets"])
        tr.stsc, n = self._ptr("uint32_t", tb["stsc"])
        tr.stsc_count = n // 3
        tr.stts, n = self._ptr("uint32_t", tb["stts"])
        tr.stts_count = n // 2
        tr.ctts, n = self._ptr("uint32_t", tb["ctts"])
        tr.ctts_count = n // 2
        tr.stss, tr.stss_count = self._ptr("uint32_t", tb["stss"])
        tr.timescale = t.timescale
        tr.shift = t.shift
        tr.clock_rate = t.clock_rate
        tr.codec = _CODEC_ENUM[t.codec]
        tr.nal_length_size = t.nal_length_size
        tr.max_payload = MAX_PAYLOAD
        tr.media = cmedia
        tr.media_size = size
        # parameter sets that fit one packet go in band, from the blob area
        sets = [p for p in t.param_sets if len(p) <= MAX_PAYLOAD]
        self.blob = b"".join(sets)
        if sets:
            where_len = []
            at = 0
            for p in sets:
                where_len += [at, len(p)]
                at += len(p)
            tr.param_sets, n = self._ptr("uint32_t", array.array("I", where_len))
            tr.param_set_count = n // 2

    def _ptr(self, ctype: str, table):
        if table is None:
            return ffi.NULL, 0
        if not len(table):
            c = ffi.new(f"{ctype}[1]")   # a valid pointer for an empty table
        else:
            c = ffi.from_buffer(f"{ctype}[]", table)
        self._keep.append(c)
        return c, len(table)

    def run(self, data_limit: int = 0) -> None:
        """Index on (up to samples ending at ``data_limit``; 0: all of them)."""
        tr = self.tr
        tr.data_limit = data_limit
        rc = lib.kvod_mp4_index(tr)
        where = self.where
        if rc == lib.KVOD_MP4_ERR_TABLE:
            raise MediaError(f"{where}: {_TABLE_ERRORS.get(tr.error_what, 'bad tables')} "
                             f"(sample {tr.error_sample})")
        if rc == lib.KVOD_MP4_ERR_RANGE:
            raise MediaError(f"{where}: sample {tr.error_sample} at offset "
                             f"{tr.error_offset} lies outside the file ({self.size} bytes) "
                             f"or is too large")
        if rc == lib.KVOD_MP4_ERR_NAL:
            raise MediaError(f"{where}: sample {tr.error_sample}: a NAL unit length at "
                             f"offset {tr.error_offset} runs past the sample")
        if rc == lib.KVOD_MP4_ERR_LIMIT:
            raise MediaError(f"{where}: more than {lib.KVOD_MP4_MAX_RECORDS} packets")
        if rc == lib.KVOD_MP4_ERR_NOMEM:
            raise MemoryError(f"{where}: out of memory for hint records")
        if rc != lib.KVOD_MP4_OK:
            raise RuntimeError(f"kvod_mp4_index returned {rc}")

    def records(self, start: int = 0) -> bytes:
        """Packed records from ``start`` to the last one made."""
        n = self.tr.record_count
        if n <= start:
            return b""
        return ffi.buffer(self.tr.records + start, (n - start) * RECORD_SIZE)[:]

    @property
    def complete(self) -> bool:
        return self.tr.next_sample == self.tr.sample_count

    def header(self) -> HintHeader:
        """The hint header of what is indexed so far."""
        t = self.t
        return HintHeader(clock_rate=t.clock_rate, payload_type=PAYLOAD_TYPES[t.kind],
                          record_count=self.tr.record_count, duration_ns=self.tr.duration_ns)

    def track(self) -> Mp4Track:
        """What the catalog and the SDP need of the track."""
        t = self.t
        return Mp4Track(track_id=t.track_id, kind=t.kind, codec=t.codec,
                        encoding=_ENCODING[t.codec], clock_rate=t.clock_rate,
                        payload_type=PAYLOAD_TYPES[t.kind], fmtp=t.fmtp,
                        channels=t.channels, samples=t.tables["sample_count"],
                        records=self.tr.record_count, keyframes=self.tr.keyframes,
                        duration_ns=self.tr.duration_ns)

    def free(self) -> None:
        lib.kvod_mp4_free(self.tr)


def _index_trak(t: _Trak, cmedia, size: int, name: str, hint_path) -> Mp4Track:
    """Run the C indexer over one track and write its hint file."""
    ct = _CTrack(t, cmedia, size, name)
    try:
        ct.run()
        if not ct.tr.record_count:
            raise MediaError(f"{ct.where}: no samples")
        write_hint_file(hint_path, ct.header(),
                        ffi.buffer(ct.tr.records, ct.tr.record_count * RECORD_SIZE), ct.blob)
        return ct.track()
    finally:
        ct.free()


def find_moov(mm, size: int, name: str) -> tuple[bx.Box, list[bx.Box]]:
    """The moov box among the file's top-level boxes (first or last), and
    the moof boxes of a fragmented file, in file order."""
    budget = [bx.MAX_BOXES]
    moov = None
    moofs = []
    for box in bx.iter_boxes(mm, 0, size, name=name, budget=budget):
        if box.type == b"moov":
            if moov is not None:
                raise MediaError(f"{name}: two moov boxes (at {moov.start} and {box.start})")
            moov = box
        elif box.type == b"moof":
            moofs.append(box)
    if moov is None:
        raise MediaError(f"{name}: no moov box: not an MP4 kvod can index")
    if moov.end - moov.start > MAX_MOOV:
        raise MediaError(f"{name}: {moov.where()}: {moov.end - moov.start} bytes is over "
                         f"{MAX_MOOV}")
    return moov, moofs


class _FragmentTables:
    """One track's samples gathered from its fragments' truns, as the
    sample tables of a progressive file: each trun becomes a chunk, its
    durations stts runs, its composition offsets ctts runs."""

    def __init__(self) -> None:
        self.sizes = array.array("I")
        self.chunks = array.array("Q")
        self.stsc = array.array("I")
        self.stts = array.array("I")
        self.ctts = array.array("I")
        self.sync = array.array("I")
        self.all_sync = True
        self.count = 0
        self.first_decode_time: int | None = None

    def add_run(self, offset: int, n: int, rows: dict, name: str) -> None:
        if self.count + n > lib.KVOD_MP4_MAX_SAMPLES:
            raise MediaError(f"{name}: fragments hold more than "
                             f"{lib.KVOD_MP4_MAX_SAMPLES} samples of one track")
        self.chunks.append(offset)
        self.stsc.extend((len(self.chunks), n, 1))
        self.sizes.extend(rows["size"])
        pairs = array.array("I", bytes(8 * n))
        pairs[0::2] = array.array("I", [1]) * n
        pairs[1::2] = rows["duration"]
        self.stts.extend(pairs)
        pairs[1::2] = rows["cto"]
        self.ctts.extend(pairs)
        flags = rows["flags"]
        non_sync = [i for i, f in enumerate(flags) if f & bx.SAMPLE_IS_NON_SYNC] \
            if len(set(flags)) > 1 or flags[0] & bx.SAMPLE_IS_NON_SYNC else []
        if non_sync:
            self.all_sync = False
        if non_sync:
            skip = set(non_sync)
            self.sync.extend(self.count + i + 1 for i in range(n) if i not in skip)
        else:
            self.sync.extend(range(self.count + 1, self.count + n + 1))
        self.count += n

    def tables(self) -> dict:
        return dict(sample_size=0, sample_count=self.count, sizes=self.sizes,
                    chunk_offsets=self.chunks, stsc=self.stsc, stts=self.stts,
                    ctts=self.ctts, stss=None if self.all_sync else self.sync)


def _trex_defaults(mvex: bx.Box | None, buf, base: int, name: str) -> dict[int, object]:
    if mvex is None:
        raise MediaError(f"{name}: fragmented, but the moov has no mvex")
    out = {}
    for box in bx.children(buf, mvex, base=base, name=name):
        if box.type == b"trex":
            trex = bx.parse(bx.TREX, box, buf, base, name)
            out[trex.track_id] = trex
    return out


def read_moof(mm, moof: bx.Box, wanted: dict, trex: dict, name: str,
              budget: list[int]) -> None:
    """Add the samples of one ``moof``'s truns to ``wanted`` (track ID ->
    _FragmentTables; other tracks are skipped). ``mm`` holds the file (at
    least the moof) at its offsets; ``budget`` counts boxes across calls."""
    next_base = moof.start
    for traf in bx.children(mm, moof, name=name, budget=budget):
        if traf.type != b"traf":
            continue
        kids = bx.children(mm, traf, name=name, budget=budget)
        tfhd_box = bx.find(kids, b"tfhd")
        if tfhd_box is None:
            raise MediaError(f"{name}: {traf.where()}: no tfhd")
        tfhd = bx.parse(bx.TFHD, tfhd_box, mm, 0, name)
        ft = wanted.get(tfhd.track_id)
        defaults = trex.get(tfhd.track_id)
        if ft is None:
            continue
        if defaults is None:
            raise MediaError(f"{name}: track {tfhd.track_id} has no trex")
        if tfhd.flags & bx.TFHD_BASE_DATA_OFFSET:
            base = tfhd.base_data_offset
        elif tfhd.flags & bx.TFHD_DEFAULT_BASE_IS_MOOF:
            base = moof.start
        else:
            base = next_base
        tfdt = bx.find(kids, b"tfdt")
        if tfdt is not None and ft.first_decode_time is None:
            ft.first_decode_time = bx.parse(bx.TFDT, tfdt, mm, 0, name) \
                .base_media_decode_time
        default = {
            "duration": tfhd.default_sample_duration
            if tfhd.default_sample_duration is not None
            else defaults.default_sample_duration,
            "size": tfhd.default_sample_size if tfhd.default_sample_size is not None
            else defaults.default_sample_size,
            "flags": tfhd.default_sample_flags if tfhd.default_sample_flags is not None
            else defaults.default_sample_flags,
            "cto": 0,
        }
        data_end = base
        for trun in (k for k in kids if k.type == b"trun"):
            # a copy: a view would pin the mapping past an error
            data = bytes(trun.data(mm))
            head = bx.parse(bx.TRUN_HEADER, bx.Box(
                trun.type, trun.start, trun.body,
                min(trun.end, trun.body + 16)), mm, 0, name)
            fields = [f for bit, f in bx.TRUN_SAMPLE_FIELDS if head.flags & bit]
            at = 8 + 4 * ((head.data_offset is not None) +
                          (head.first_sample_flags is not None))
            n = head.sample_count
            if n * 4 * len(fields) > len(data) - at:
                raise MediaError(f"{name}: {trun.where()}: {n} samples need "
                                 f"{n * 4 * len(fields)} bytes, the box holds "
                                 f"{len(data) - at}")
            if n == 0:
                continue
            table = array.array("I")
            table.frombytes(data[at:at + n * 4 * len(fields)])
            if sys.byteorder == "little":
                table.byteswap()
            rows = {f: table[i::len(fields)] for i, f in enumerate(fields)}
            for f, value in default.items():
                if f not in rows:
                    rows[f] = array.array("I", [value]) * n
            if head.first_sample_flags is not None:
                rows["flags"][0] = head.first_sample_flags
            offset = base + head.data_offset if head.data_offset is not None \
                else data_end
            if not 0 <= offset < 1 << 63:
                raise MediaError(f"{name}: {trun.where()}: data offset {offset}")
            ft.add_run(offset, n, rows, name)
            data_end = offset + sum(rows["size"])
        next_base = data_end


def _read_fragments(mm, moofs: list[bx.Box], traks: list[_Trak], trex: dict,
                    name: str) -> None:
    """Replace the (empty) sample tables of ``traks`` with their fragments'."""
    wanted = {t.track_id: _FragmentTables() for t in traks}
    budget = [bx.MAX_BOXES]
    for moof in moofs:
        read_moof(mm, moof, wanted, trex, name, budget)
    for t in traks:
        ft = wanted[t.track_id]
        if t.tables["sample_count"]:
            raise MediaError(f"{name}: track {t.track_id} has samples both in its moov "
                             f"and in fragments (not supported)")
        t.tables = ft.tables()
        # the first fragment's decode time places the track on the timeline
        t.shift -= ft.first_decode_time or 0
        if abs(t.shift) > 1 << 40:
            raise MediaError(f"{name}: track {t.track_id}: its first fragment starts at "
                             f"decode time {ft.first_decode_time}, beyond any timeline")


def read_tracks(mm, size: int, name: str) -> tuple[bx.Box, list[_Trak]]:
    """Parse the moov: the video (H.264/H.265) and audio (AAC) tracks to serve,
    video first, at most one of each; a fragmented file's samples from its
    moofs."""
    moov, moofs = find_moov(mm, size, name)
    buf = bytes(mm[moov.start:moov.end])
    kids, traks = moov_tracks(buf, moov, name)
    if moofs:
        _read_fragments(mm, moofs, traks, fragment_defaults(kids, buf, moov, name), name)
    return moov, traks


def fragment_defaults(kids: list[bx.Box], buf, moov: bx.Box, name: str) -> dict[int, object]:
    """The trex defaults of a fragmented file's tracks, by track ID (``buf``
    holds the moov's bytes, from ``moov.start``)."""
    return _trex_defaults(bx.find(kids, b"mvex"), buf, moov.start, name)


def moov_tracks(buf, moov: bx.Box, name: str) -> tuple[list[bx.Box], list[_Trak]]:
    """Parse the ``moov`` box (``buf`` holds its bytes, from ``moov.start``):
    its child boxes and the video (H.264/H.265) and audio (AAC) tracks to
    serve, video first, at most one of each (a fragmented file's sample
    tables are empty here)."""
    base = moov.start
    budget = [bx.MAX_BOXES]
    kids = bx.children(buf, moov, base=base, name=name, budget=budget)
    mvhd = bx.find(kids, b"mvhd")
    if mvhd is None:
        raise MediaError(f"{name}: moov has no mvhd")
    movie_ts = bx.parse(bx.MVHD, mvhd, buf, base, name).timescale
    chosen: dict[str, _Trak] = {}
    for trak in (k for k in kids if k.type == b"trak"):
        t = _read_trak(trak, buf, base, name, movie_ts, budget)
        if t is not None and t.kind not in chosen:
            chosen[t.kind] = t
    if not chosen:
        raise MediaError(f"{name}: no H.264, H.265 or AAC track")
    return kids, [chosen[k] for k in ("video", "audio") if k in chosen]


def map_mp4(path: str, name: str) -> tuple[mmap.mmap, int]:
    """The MP4 at ``path`` mapped read-only, and its size; MediaError if it
    is too short to be one (``name`` says which title in the message)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise MediaError(f"{name}: {size} bytes is not an MP4")
        return mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ), size


def index_mp4(media_path: str | os.PathLike,
              hint_path_for: Callable[[int], str | os.PathLike]) -> Mp4Index:
    """Index the MP4 at ``media_path``: track ``i`` (video first, then audio)
    gets the hint file ``hint_path_for(i)``, written atomically. MediaError
    if the file is not a progressive MP4 with an H.264/H.265 or AAC track,
    or if its boxes or tables are malformed or disagree."""
    name = os.fspath(media_path)
    mm, size = map_mp4(name, name)
    try:
        moov, traks = read_tracks(mm, size, name)
        tracks = []
        with ffi.from_buffer(mm) as cmedia:
            for i, t in enumerate(traks):
                tracks.append(_index_trak(t, cmedia, size, name, hint_path_for(i)))
    finally:
        mm.close()
    duration = max(t.duration_ns for t in tracks)
    return Mp4Index(size=size, duration_ns=duration,
                    bitrate=size * 8 * 1_000_000_000 // duration if duration else 0,
                    moov_offset=moov.start, tracks=tuple(tracks))
