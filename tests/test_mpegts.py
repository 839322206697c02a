"""The MPEG-TS indexer: real ffmpeg titles, synthetic streams, hostile files.

Synthetic streams are built here byte by byte (with an independent Python
CRC) so that timing, PCR wrap, discontinuities and keyframe rules can be
checked against exact expected values; real titles are cross-checked with
ffprobe and with a slow Python reference model of the records.
"""

from __future__ import annotations

import glob
import os
import random
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.titles import MEDIA_DIR, ROOT, make_ts


def _ensure_built() -> None:
    """Rebuild rtpengine._kvod_index if its C is newer than the module."""
    here = os.path.join(ROOT, "rtpengine")
    built = glob.glob(os.path.join(here, "_kvod_index.*.so"))
    sources = [os.path.join(here, "csrc", n) for n in
               ("ts_index.c", "ts_index.h", "kvod_types.h", "kvod_types_check.h")]
    sources.append(os.path.join(ROOT, "kernel", "uapi", "krtp.h"))
    if not built or max(map(os.path.getmtime, sources)) > os.path.getmtime(built[0]):
        from rtpengine.csrc import build as build_engine
        build_engine.build("_kvod_index")


_ensure_built()

from rtpengine.index.errors import MediaError  # noqa: E402
from rtpengine.hintfile import (REC_BLOB, REC_DISCONTINUITY, REC_KEYFRAME,  # noqa: E402
                                REC_MARKER, HintFile, HintHeader)
from rtpengine.index.mpegts import (TsIndex, index_mpegts, parse_pat, parse_pmt,  # noqa: E402
                              stream_codec)
from rtpengine._kvod_index import ffi, lib  # noqa: E402

PKT = 188
PCR_MOD = (1 << 33) * 300
VPID, APID, PMT_PID = 0x100, 0x101, 0x1000
RATE = 1000                 # synthetic streams: PCR ticks per packet
PCR0 = 27_000_000           # synthetic streams: PCR at packet 0 (extrapolated)


# --- an independent TS writer -------------------------------------------------

def crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2, bit by bit: the reference the C is checked against."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def section(table_id: int, ext: int, body: bytes, *, bad_crc: bool = False,
            current: bool = True) -> bytes:
    length = 5 + len(body) + 4
    data = (bytes([table_id, 0xB0 | length >> 8, length & 0xFF]) + struct.pack(">H", ext)
            + bytes([0xC0 | current, 0, 0]) + body)
    return data + struct.pack(">I", crc32_mpeg(data) ^ bad_crc)


def pat(programs, **kw) -> bytes:
    return section(0x00, 1, b"".join(struct.pack(">HH", n, 0xE000 | p) for n, p in programs), **kw)


def pmt(program: int, pcr_pid: int, streams, program_info: bytes = b"", **kw) -> bytes:
    body = struct.pack(">HH", 0xE000 | pcr_pid, 0xF000 | len(program_info)) + program_info
    for stype, pid, info in streams:
        body += bytes([stype]) + struct.pack(">HH", 0xE000 | pid, 0xF000 | len(info)) + info
    return section(0x02, program, body, **kw)


def ts_packet(pid: int, payload: bytes = b"", *, pusi: bool = False, cc: int = 0,
              af: bytes | None = None, tei: bool = False) -> bytes:
    """One packet; an adaptation field pads whatever the payload leaves."""
    assert len(payload) <= 184
    room = 184 - len(payload)
    head = bytes([0x47, tei << 7 | pusi << 6 | pid >> 8, pid & 0xFF])
    if af is None and room == 0:
        return head + bytes([0x10 | cc & 0xF]) + payload
    n = room - 1
    content = b"" if n == 0 else (af or b"\x00")
    assert len(content) <= n
    afc = 0x30 if payload else 0x20
    return head + bytes([afc | cc & 0xF, n]) + content + b"\xFF" * (n - len(content)) + payload


def psi_packets(pid: int, sections, cc: int = 0) -> list[bytes]:
    """Sections back to back on ``pid``, with pointer_field where one starts."""
    data = b"".join(sections)
    starts, pos = [], 0
    for s in sections:
        starts.append(pos)
        pos += len(s)
    out, pos = [], 0
    while pos < len(data):
        first = next((s for s in starts if pos <= s < pos + 183), None)
        if first is None:
            chunk, payload, pusi = data[pos:pos + 184], None, False
        else:
            chunk = data[pos:pos + 183]
            payload, pusi = bytes([first - pos]) + chunk, True
        payload = (payload if payload is not None else chunk).ljust(184, b"\xFF")
        out.append(ts_packet(pid, payload, pusi=pusi, cc=cc))
        pos += len(chunk)
        cc += 1
    return out


def pcr_field(pcr: int, *, rai: bool = False, disc: bool = False) -> bytes:
    base, ext = pcr // 300 % (1 << 33), pcr % 300
    return bytes([disc << 7 | rai << 6 | 0x10, base >> 25 & 0xFF, base >> 17 & 0xFF,
                  base >> 9 & 0xFF, base >> 1 & 0xFF, (base & 1) << 7 | 0x7E | ext >> 8,
                  ext & 0xFF])


def pes(es: bytes, stream_id: int = 0xE0) -> bytes:
    """A PES start with a PTS (the optional header video streams carry)."""
    return b"\x00\x00\x01" + bytes([stream_id]) + b"\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01" + es


def access_unit(*nal_headers: int) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + bytes([h]) + b"\x80\x80\x80" for h in nal_headers)


def linear_pcr(k: int) -> int | None:
    return PCR0 + k * RATE if k % 5 == 0 else None


IDR_AU = access_unit(0x09, 0x67, 0x68, 0x65)     # AUD SPS PPS IDR


def synth(n: int = 300, *, pcr=linear_pcr, key=(), key_au: bytes = IDR_AU,
          rai=(), disc=(), tei=(), stream_type: int = 0x1B, pcr_pid: int = VPID,
          head: list[bytes] | None = None) -> bytes:
    """PAT, PMT, then video packets 2..n-1 (k counts from the file start).

    ``pcr(k)`` gives the PCR of packet k or None; packets in ``key`` start a
    PES holding ``key_au``; ``rai``/``disc``/``tei`` set those bits. With a
    separate ``pcr_pid`` the PCRs travel in adaptation-only packets there.
    """
    streams = [(stream_type, VPID, b"")]
    out = head if head is not None else [
        *psi_packets(0, [pat([(1, PMT_PID)])]),
        *psi_packets(PMT_PID, [pmt(1, pcr_pid, streams)])]
    cc = {VPID: 0, pcr_pid: 0}
    for k in range(len(out), n):
        value = pcr(k)
        flags = (0x40 if k in rai else 0) | (0x80 if k in disc else 0)
        if value is not None and pcr_pid != VPID:
            out.append(ts_packet(pcr_pid, af=pcr_field(value, disc=k in disc)))
            continue
        af = pcr_field(value, rai=k in rai, disc=k in disc) if value is not None else (
            bytes([flags]) if flags else None)
        payload = pes(key_au) if k in key else b"\xAA" * 150
        out.append(ts_packet(VPID, payload, pusi=k in key, cc=cc[VPID], af=af, tei=k in tei))
        cc[VPID] += 1
    return b"".join(out)


# --- helpers ------------------------------------------------------------------

def index_bytes(tmp_path, data: bytes, name: str = "t.ts") -> tuple[TsIndex, str]:
    path = os.path.join(tmp_path, name)
    with open(path, "wb") as f:
        f.write(data)
    hint = path + ".hint"
    return index_mpegts(path, hint), hint


def records(hint: str):
    with HintFile(hint) as h:
        return list(h)


def check_consistent(ix: TsIndex, hint: str) -> list:
    """The invariants every index must hold; returns the records."""
    with HintFile(hint) as h:
        assert h.header.clock_rate == 90000 and h.header.payload_type == 33
        assert h.header.record_count == ix.records == len(h)
        assert h.header.duration_ns == ix.duration_ns > 0
        recs = list(h)
    pos = 0
    for r in recs:
        assert r.offset == pos
        assert r.length % PKT == 0 and PKT <= r.length <= 7 * PKT
        assert not r.flags & (REC_MARKER | REC_BLOB) and r.prefix == b""
        pos += r.length
    assert pos == ix.size == ix.packets * PKT
    assert recs[0].flags & REC_KEYFRAME
    sends = [r.send_ns for r in recs]
    assert sends == sorted(sends) and sends[-1] <= ix.duration_ns
    for r in recs:
        assert ((r.send_ns * 90_000 // 10**9) - r.rtp_ts + 1) % 2**32 <= 2
    key_records = sum(1 for r in recs if r.flags & REC_KEYFRAME)
    assert key_records - ix.keyframes in (0, 1)
    assert ix.bitrate == ix.size * 8 * 10**9 // ix.duration_ns
    return recs


def expected_ns(ticks: int) -> int:
    return ticks * 1000 // 27


def linear_times(recs) -> list[int]:
    """send_ns of synth()'s default PCR: 0 up to packet 5, then RATE a packet."""
    return [expected_ns(max(0, r.offset // PKT - 5) * RATE) for r in recs]


def ffprobe_keyframes(path: str) -> list[tuple[float, int]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                          "packet=pts_time,pos,flags", "-of", "csv=p=0", path],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    keys = []
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2].startswith("K"):
            keys.append((float(fields[0]), int(fields[1])))
    return keys


def ffprobe_format(path: str) -> tuple[float, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration,bit_rate",
                          "-of", "csv=p=0", path],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    duration, bitrate = out.strip().split(",")
    return float(duration), int(bitrate)


def make_other(name: str, video: list[str], audio: list[str], seconds: float = 2) -> str:
    """A title with other codecs than make_ts offers, cached beside its titles."""
    path = os.path.join(MEDIA_DIR, name)
    if not os.path.exists(path):
        os.makedirs(MEDIA_DIR, exist_ok=True)
        tmp = path + f".tmp{os.getpid()}.ts"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(seconds), *video, *audio, "-f", "mpegts", tmp],
                       check=True, timeout=120)
        os.replace(tmp, path)
    return path


class Packet:
    """Slow Python parse of one packet, for the reference model."""

    def __init__(self, b: bytes):
        self.pid = (b[1] & 0x1F) << 8 | b[2]
        self.pusi, self.tei = bool(b[1] & 0x40), bool(b[1] & 0x80)
        afc, pos = b[3] >> 4 & 3, 4
        self.rai, self.pcr = False, None
        if afc & 2:
            n = b[4]
            if n >= 1:
                self.rai = bool(b[5] & 0x40)
                if b[5] & 0x10 and n >= 7:
                    base = int.from_bytes(b[6:11], "big") >> 7
                    self.pcr = base * 300 + ((b[10] & 1) << 8 | b[11])
            pos = 5 + n
        self.payload = b[pos:] if afc & 1 else b""


def has_keyframe_nal(payload: bytes, hevc: bool = False) -> bool:
    if payload[:3] != b"\x00\x00\x01" or len(payload) < 9:
        return False
    es = payload[9 + payload[8]:] if payload[6] & 0xC0 == 0x80 else payload[6:]
    i = es.find(b"\x00\x00\x01")
    while 0 <= i < len(es) - 3:
        h = es[i + 3]
        t = (h >> 1) & 0x3F if hevc else h & 0x1F
        if (16 <= t <= 21 or t == 32) if hevc else t in (5, 7):
            return True
        i = es.find(b"\x00\x00\x01", i + 1)
    return False


def reference_records(data: bytes, video_pid: int, pcr_pid: int) -> bytes:
    """Records of a clean stream (no PCR breaks), computed packet by packet."""
    starts, flags, pcrs = [], [], []
    run = 0
    for k in range(len(data) // PKT):
        p = Packet(data[k * PKT:(k + 1) * PKT])
        key = (p.pid == video_pid and not p.tei and
               (p.rai or (p.pusi and has_keyframe_nal(p.payload))))
        if p.pid == pcr_pid and not p.tei and p.pcr is not None:
            pcrs.append((k, p.pcr))
        if not starts or run == 7 or key:
            starts.append(k)
            flags.append(REC_KEYFRAME if key or not starts[:-1] else 0)
            run = 0
        run += 1
    timeline = [(pcrs[0][0], 0)]
    for (k0, p0), (k1, p1) in zip(pcrs, pcrs[1:]):
        step = (p1 - p0) % PCR_MOD
        assert step <= 27_000_000, "the reference model only knows clean streams"
        timeline.append((k1, timeline[-1][1] + step))

    def at(k: int) -> int:
        if k <= timeline[0][0]:
            return 0
        for (k0, t0), (k1, t1) in zip(timeline, timeline[1:]):
            if k <= k1:
                return t0 + (k - k0) * (t1 - t0) // (k1 - k0)
        (k0, t0), (k1, t1) = timeline[-2], timeline[-1]
        return t1 + (k - k1) * (t1 - t0) // (k1 - k0)

    out = b""
    ends = starts[1:] + [len(data) // PKT]
    for s, e, f in zip(starts, ends, flags):
        t = at(s)
        out += struct.pack("<QIIQHB5s", s * PKT, (e - s) * PKT, t // 300 % 2**32,
                           expected_ns(t), f, 0, b"")
    return out


# --- real titles ----------------------------------------------------------------

def test_real_title(ts_file, tmp_path):
    ix = index_mpegts(ts_file, tmp_path / "t.hint")
    recs = check_consistent(ix, tmp_path / "t.hint")
    assert ix.size == os.path.getsize(ts_file)
    assert [(s.pid, s.stream_type, s.codec) for s in ix.streams] == [
        (0x100, 0x1B, "h264"), (0x101, 0x0F, "aac")]
    assert ix.video_pid == 0x100 and ix.pcr_pid == 0x100
    assert ix.discontinuities == 0
    assert not any(r.flags & REC_DISCONTINUITY for r in recs)
    duration, bitrate = ffprobe_format(ts_file)
    assert abs(ix.duration_ns / 1e9 - duration) < 0.1
    assert 0.95 < ix.bitrate / bitrate < 1.05
    assert 1.0e6 < ix.bitrate < 1.5e6      # 1M video + 96k audio + TS overhead


def test_keyframes_match_ffprobe(ts_file, tmp_path):
    ix = index_mpegts(ts_file, tmp_path / "t.hint")
    recs = records(tmp_path / "t.hint")
    keys = ffprobe_keyframes(ts_file)
    assert len(keys) == ix.keyframes == 10
    # a keyframe record starts exactly where ffprobe says the keyframe's PES is
    key_recs = [r for r in recs if r.flags & REC_KEYFRAME and r.offset > 0]
    assert [r.offset for r in key_recs] == [pos for _, pos in keys]
    with open(ts_file, "rb") as f:
        data = f.read()
    for r in key_recs:
        p = Packet(data[r.offset:r.offset + PKT])
        assert p.pid == ix.video_pid and p.pusi and has_keyframe_nal(p.payload)
    # PCR time and PTS run in step up to the mux delay's jitter
    t0, s0 = keys[0][0], key_recs[0].send_ns
    for (pts, _), r in zip(keys, key_recs):
        assert abs((r.send_ns - s0) / 1e9 - (pts - t0)) < 0.1


def test_records_equal_reference_model(short_ts_file, tmp_path):
    ix = index_mpegts(short_ts_file, tmp_path / "t.hint")
    with open(short_ts_file, "rb") as f:
        data = f.read()
    with HintFile(tmp_path / "t.hint") as h:
        assert h.records_bytes() == reference_records(data, ix.video_pid, ix.pcr_pid)
    duration, _ = ffprobe_format(short_ts_file)
    assert abs(ix.duration_ns / 1e9 - duration) < 0.1


def test_hint_file_round_trip(short_ts_file, tmp_path):
    hint = tmp_path / "t.hint"
    ix = index_mpegts(short_ts_file, hint)
    raw = hint.read_bytes()
    assert HintHeader.parse(raw[:64]).pack() == raw[:64]
    with HintFile(hint) as h:
        recs = list(h)
        assert b"".join(r.pack() for r in recs) == h.records_bytes() == raw[64:]
    assert len(raw) == 64 + 32 * ix.records
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]
    # indexing again gives the same bytes (atomic replace of the old hint)
    index_mpegts(short_ts_file, hint)
    assert hint.read_bytes() == raw


@pytest.mark.parametrize("kw, gop_frames", [
    (dict(seconds=4, audio=False), 25),
    (dict(seconds=4, gop=12, size="320x240", video_bitrate="400k"), 12),
])
def test_variants(kw, gop_frames, tmp_path):
    path = make_ts(**kw)
    ix = index_mpegts(path, tmp_path / "t.hint")
    check_consistent(ix, tmp_path / "t.hint")
    frames = 4 * 25
    assert ix.keyframes == len(ffprobe_keyframes(path)) == -(-frames // gop_frames)
    codecs = ["h264", "aac"] if kw.get("audio", True) else ["h264"]
    assert [s.codec for s in ix.streams] == codecs
    duration, _ = ffprobe_format(path)
    assert abs(ix.duration_ns / 1e9 - duration) < 0.1


def test_hevc_and_other_audio(tmp_path):
    x265 = "log-level=error:keyint=25:min-keyint=25:scenecut=0"
    hevc = make_other("hevc-ac3.ts", ["-c:v", "libx265", "-preset", "ultrafast",
                                      "-x265-params", x265], ["-c:a", "ac3"])
    ix = index_mpegts(hevc, tmp_path / "h.hint")
    recs = check_consistent(ix, tmp_path / "h.hint")
    assert [s.codec for s in ix.streams] == ["hevc", "ac3"]
    keys = ffprobe_keyframes(hevc)
    assert ix.keyframes == len(keys) == 2
    assert [r.offset for r in recs if r.flags & REC_KEYFRAME and r.offset] == [p for _, p in keys]
    mp2 = make_other("h264-mp2.ts", ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"],
                     ["-c:a", "mp2"])
    ix = index_mpegts(mp2, tmp_path / "m.hint")
    check_consistent(ix, tmp_path / "m.hint")
    assert [s.codec for s in ix.streams] == ["h264", "mp2"]
    assert stream_codec(0x99) == "unknown"


def test_concatenated_titles_bridge_the_pcr_jump(ts_file, short_ts_file, tmp_path):
    a, b = open(ts_file, "rb").read(), open(short_ts_file, "rb").read()
    ix_a = index_mpegts(ts_file, tmp_path / "a.hint")
    ix_b = index_mpegts(short_ts_file, tmp_path / "b.hint")
    ix, hint = index_bytes(tmp_path, a + b)
    recs = check_consistent(ix, hint)
    # b's PCR starts back near a's first PCR: one break, at b's first PCR packet
    assert ix.discontinuities == 1
    breaks = [r for r in recs if r.flags & REC_DISCONTINUITY]
    first_pcr_b = next(k for k in range(len(b) // PKT)
                       if Packet(b[k * PKT:(k + 1) * PKT]).pcr is not None)
    assert [r.offset for r in breaks] == [len(a) + first_pcr_b * PKT]
    assert abs(ix.duration_ns - ix_a.duration_ns - ix_b.duration_ns) < 0.1e9
    assert ix.keyframes == ix_a.keyframes + ix_b.keyframes


def test_pcr_wrap_in_a_real_title(short_ts_file, tmp_path):
    data = bytearray(open(short_ts_file, "rb").read())
    ix0 = index_mpegts(short_ts_file, tmp_path / "0.hint")
    pcr_packets = [k for k in range(len(data) // PKT)
                   if Packet(bytes(data[k * PKT:(k + 1) * PKT])).pcr is not None]
    first = Packet(bytes(data[pcr_packets[0] * PKT:][:PKT])).pcr
    # move the time base so the 33-bit base wraps a second into the title
    shift = PCR_MOD - first - 27_000_000
    for k in pcr_packets:
        p = Packet(bytes(data[k * PKT:(k + 1) * PKT]))
        data[k * PKT + 6:k * PKT + 12] = pcr_field((p.pcr + shift) % PCR_MOD)[1:]
    ix, hint = index_bytes(tmp_path, bytes(data))
    assert ix.discontinuities == 0
    assert records(hint) == records(tmp_path / "0.hint")
    assert ix.duration_ns == ix0.duration_ns


# --- synthetic streams: exact timing ------------------------------------------------

def test_synthetic_linear_timing(tmp_path):
    ix, hint = index_bytes(tmp_path, synth(300))
    recs = check_consistent(ix, hint)
    # first PCR at packet 5: earlier records at 0, then RATE ticks per packet
    for r in recs:
        k = r.offset // PKT
        assert r.send_ns == expected_ns(max(0, k - 5) * RATE)
        assert r.rtp_ts == max(0, k - 5) * RATE // 300
        assert r.length == 7 * PKT or r is recs[-1]
    assert ix.duration_ns == expected_ns((300 - 5) * RATE)
    assert ix.keyframes == 0 and ix.pcr_pid == VPID and ix.video_pid == VPID


def test_extrapolation_after_last_pcr(tmp_path):
    ix, hint = index_bytes(tmp_path, synth(300, pcr=lambda k: linear_pcr(k) if k < 100 else None))
    recs = check_consistent(ix, hint)
    assert [r.send_ns for r in recs] == linear_times(recs)
    assert ix.duration_ns == expected_ns(295 * RATE)


@pytest.mark.parametrize("new_base", [0, PCR0 + 200 * RATE + 10 * 27_000_000, PCR0 - 27_000_000])
def test_pcr_jump_is_bridged(tmp_path, new_base):
    """A backward or far forward PCR jump at packet 200: same times, one break."""
    def pcr(k: int) -> int | None:
        return None if k % 5 else (PCR0 if k < 200 else new_base) + k * RATE

    ix, hint = index_bytes(tmp_path, synth(300, pcr=pcr))
    recs = check_consistent(ix, hint)
    assert [r.send_ns for r in recs] == linear_times(recs)
    assert [r.offset for r in recs if r.flags & REC_DISCONTINUITY] == [200 * PKT]
    assert ix.discontinuities == 1


def test_discontinuity_indicator(tmp_path):
    # the step looks regular, but the indicator says the time base changed
    ix, hint = index_bytes(tmp_path, synth(300, disc={150}))
    recs = check_consistent(ix, hint)
    assert [r.offset for r in recs if r.flags & REC_DISCONTINUITY] == [150 * PKT]
    # an indicator without a PCR marks the next PCR (packet 155)
    ix, hint = index_bytes(tmp_path, synth(300, disc={151}), "b.ts")
    assert [r.offset for r in records(hint) if r.flags & REC_DISCONTINUITY] == [155 * PKT]
    assert [r.send_ns for r in records(hint)] == linear_times(records(hint))
    # before and at the first PCR there is no time base to break
    ix, hint = index_bytes(tmp_path, synth(300, disc={3, 5}), "c.ts")
    assert ix.discontinuities == 0
    assert not [r for r in records(hint) if r.flags & REC_DISCONTINUITY]


def test_pcr_wrap_synthetic(tmp_path):
    start = PCR_MOD - 100 * RATE
    ix, hint = index_bytes(tmp_path, synth(
        300, pcr=lambda k: None if k % 5 else (start + k * RATE) % PCR_MOD))
    recs = check_consistent(ix, hint)
    assert ix.discontinuities == 0
    assert [r.send_ns for r in recs] == linear_times(recs)


def test_rtp_ts_wraps_at_32_bits(tmp_path):
    # 2^32 ticks of 90 kHz is 13.25 h: one PCR a packet, each a step of
    # just under a second, for 50000 packets (13.4 h)
    step = 26_000_000
    ix, hint = index_bytes(tmp_path, synth(50_000, pcr=lambda k: (PCR0 + k * step) % PCR_MOD))
    recs = check_consistent(ix, hint)
    assert ix.discontinuities == 0
    for r in recs:
        ticks = max(0, r.offset // PKT - 2) * step
        assert r.rtp_ts == ticks // 300 % 2**32 and r.send_ns == expected_ns(ticks)
    assert recs[-1].rtp_ts < recs[len(recs) // 2].rtp_ts       # it wrapped


@pytest.mark.parametrize("stream_type, au, is_key", [
    (0x1B, access_unit(0x09, 0x67, 0x68, 0x65), True),     # AUD SPS PPS IDR
    (0x1B, access_unit(0x09, 0x65), True),                 # IDR alone
    (0x1B, access_unit(0x09, 0x67, 0x68), True),           # SPS alone
    (0x1B, access_unit(0x09, 0x41), False),                # non-IDR slice
    (0x24, access_unit(0x46, 0x40, 0x26), True),           # AUD VPS IDR_W_RADL
    (0x24, access_unit(0x46, 0x2A), True),                 # CRA
    (0x24, access_unit(0x46, 0x40), True),                 # VPS alone
    (0x24, access_unit(0x46, 0x28, 0x2C), True),           # BLA_W_LP, type 21
    (0x24, access_unit(0x46, 0x2C + 2), False),            # type 23, reserved
    (0x24, access_unit(0x46, 0x02), False),                # TRAIL_R
    (0x02, access_unit(0x65), False),                      # MPEG-2: only RAI counts
])
def test_keyframe_nal_rules(tmp_path, stream_type, au, is_key):
    ix, hint = index_bytes(tmp_path, synth(200, key={40, 90}, key_au=au, stream_type=stream_type))
    recs = check_consistent(ix, hint)
    starts = [r.offset // PKT for r in recs if r.flags & REC_KEYFRAME]
    assert starts == ([0, 40, 90] if is_key else [0])
    assert ix.keyframes == (2 if is_key else 0)


def test_rai_starts_a_record_and_tei_is_ignored(tmp_path):
    ix, hint = index_bytes(tmp_path, synth(200, rai={33, 34, 120}, key={60}, tei={60, 120}))
    recs = check_consistent(ix, hint)
    assert [r.offset // PKT for r in recs if r.flags & REC_KEYFRAME] == [0, 33, 34]
    assert recs[[r.offset for r in recs].index(33 * PKT)].length == PKT


def test_separate_pcr_pid_in_adaptation_only_packets(tmp_path):
    ix, hint = index_bytes(tmp_path, synth(300, pcr_pid=0x1FF, key={51}))
    recs = check_consistent(ix, hint)
    assert ix.pcr_pid == 0x1FF and ix.keyframes == 1
    assert [r.send_ns for r in recs] == linear_times(recs)


# --- PSI ---------------------------------------------------------------------------

def test_psi_split_across_packets_and_pointer_field(tmp_path):
    """A PMT of three packets, copies packed back to back mid-packet."""
    streams = [(0x1B, VPID, b"\x0A\x04eng\x00" * 40), (0x0F, APID, b"\x52\x01\x01" * 30),
               (0x81, 0x102, b""), (0x06, 0x103, b"\x59" + bytes(60))]
    big = pmt(1, VPID, streams, program_info=b"\x05\x04CUEI" * 5)
    assert len(big) > 2 * 184
    head = [*psi_packets(0, [pat([(0, 0x10), (1, PMT_PID)])] * 2),
            # a bad copy first, then good ones sharing packets
            *psi_packets(PMT_PID, [pmt(1, VPID, streams[:1], bad_crc=True), big, big])]
    ix, hint = index_bytes(tmp_path, synth(200, head=head))
    check_consistent(ix, hint)
    assert [(s.pid, s.stream_type, s.codec) for s in ix.streams] == [
        (VPID, 0x1B, "h264"), (APID, 0x0F, "aac"), (0x102, 0x81, "ac3"), (0x103, 0x06, "unknown")]


def test_psi_skips_bad_crc_not_current_and_cc_gaps(tmp_path):
    good = psi_packets(PMT_PID, [pmt(1, VPID, [(0x1B, VPID, b"")])])
    long = pmt(1, 0x1FE, [(0x1B, VPID, b"\x00" * 400)])
    torn = psi_packets(PMT_PID, [long], cc=3)
    assert len(torn) == 3
    head = [*psi_packets(0, [pat([(1, PMT_PID)], bad_crc=True)]),
            *psi_packets(0, [pat([(1, 0x999)], current=False)], cc=1),
            *psi_packets(0, [pat([(1, PMT_PID)])], cc=2),
            torn[0], torn[2],           # a continuity gap: this PMT is dropped
            *psi_packets(PMT_PID, [pmt(1, 0x1FE, [], bad_crc=True)], cc=6),
            *[p[:3] + bytes([p[3] & 0xF0 | 7]) + p[4:] for p in good]]
    ix, hint = index_bytes(tmp_path, synth(200, head=head))
    assert ix.pcr_pid == VPID and [s.pid for s in ix.streams] == [VPID]


@settings(max_examples=300)
@given(table_id=st.sampled_from([0x00, 0x02]), body=st.binary(max_size=300),
       lengths=st.lists(st.integers(0, 0xFFF), max_size=4),
       where=st.lists(st.integers(0, 299), max_size=4))
def test_psi_parsers_on_random_sections_with_a_good_crc(table_id, body, lengths, where):
    """The CRC is no shield: a section with valid CRC and absurd lengths."""
    body = bytearray(struct.pack(">HBBB", 1, 0xC1, 0, 0) + body)
    for n, at in zip(lengths, where):           # plant 12-bit lengths anywhere
        if at + 1 < len(body):
            body[at:at + 2] = struct.pack(">H", 0xF000 | n)
    length = len(body) + 4
    data = bytes([table_id, 0xB0 | length >> 8 & 0x0F, length & 0xFF]) + bytes(body)
    data += struct.pack(">I", crc32_mpeg(data))
    result = parse_pat(data) if table_id == 0 else parse_pmt(data)
    assert result is None or isinstance(result, (list, tuple))


# --- hostile files ------------------------------------------------------------------

HOSTILE = {
    "empty": (b"", "empty file"),
    "one byte": (b"\x47", "truncated: 1 trailing bytes"),
    "one zero byte": (b"\x00", "no sync byte (0x47) at offset 0"),
    "187 bytes": (b"\x47" + bytes(186), "truncated: 187 trailing bytes"),
    "garbage": (random.Random(7).randbytes(50_000), "offset 0"),
    "sync but no PAT": (b"".join(ts_packet(VPID, b"\x00" * 184, cc=i) for i in range(100)),
                        "no valid PAT"),
    "null packet only": (ts_packet(0x1FFF, b"\xFF" * 184), "no valid PAT"),
    "one valid PAT packet": (psi_packets(0, [pat([(1, PMT_PID)])])[0], "no valid PMT"),
    "PAT without PMT": (b"".join(psi_packets(0, [pat([(1, PMT_PID)])]) * 50), "no valid PMT"),
    "PAT without programs": (b"".join(psi_packets(0, [pat([(0, 0x10)])])), "lists no program"),
    "PMT without PCR PID": (synth(50, head=[
        *psi_packets(0, [pat([(1, PMT_PID)])]),
        *psi_packets(PMT_PID, [pmt(1, 0x1FFF, [(0x1B, VPID, b"")])])]), "no PCR PID"),
    "no PCR on PCR PID": (synth(100, pcr=lambda k: None), "no PCR on the PCR PID 0x100"),
    "one PCR": (synth(100, pcr=lambda k: PCR0 if k == 10 else None), "never advances"),
    "every packet adaptation-only": (b"".join(ts_packet(0, af=b"\x00") for _ in range(50)),
                                     "no valid PAT"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files(tmp_path, name):
    data, message = HOSTILE[name]
    with pytest.raises(MediaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        index_bytes(tmp_path, data)
    assert not os.path.exists(os.path.join(tmp_path, "t.ts.hint"))


def test_truncated_and_broken_real_title(short_ts_file, tmp_path):
    data = open(short_ts_file, "rb").read()
    with pytest.raises(MediaError, match="truncated: 88 trailing bytes"):
        index_bytes(tmp_path, data[:-100])
    broken = bytearray(data)
    broken[300 * PKT] = 0x48
    with pytest.raises(MediaError, match=f"no sync byte \\(0x47\\) at offset {300 * PKT}"):
        index_bytes(tmp_path, bytes(broken))


def test_other_packet_sizes_are_named(short_ts_file, tmp_path):
    data = open(short_ts_file, "rb").read()[:PKT * 500]
    packets = [data[i:i + PKT] for i in range(0, len(data), PKT)]
    m2ts = b"".join(b"\x00\x00\x12\x34" + p for p in packets)
    with pytest.raises(MediaError, match="192-byte M2TS packets .* not supported"):
        index_bytes(tmp_path, m2ts)
    dvb = b"".join(p + bytes(16) for p in packets)
    with pytest.raises(MediaError, match="204-byte packets .* not supported"):
        index_bytes(tmp_path, dvb)


def test_absurd_adaptation_field_lengths(tmp_path):
    """Lengths past the packet on PCR and video packets are ignored, not read."""
    data = bytearray(synth(300, key={50, 100}))
    for k in range(2, 300, 3):
        data[k * PKT + 3] |= 0x20
        data[k * PKT + 4] = 184 + k % 72       # 184..255
    ix, hint = index_bytes(tmp_path, bytes(data))
    check_consistent(ix, hint)
    every = bytearray(synth(100))
    for k in range(2, 100):
        every[k * PKT + 3] |= 0x20
        every[k * PKT + 4] = 255
    with pytest.raises(MediaError, match="no PCR"):
        index_bytes(tmp_path, bytes(every), "b.ts")


@pytest.fixture(scope="module")
def mutation_seed(tmp_path_factory):
    data = open(make_ts(seconds=3, size="320x240", video_bitrate="500k"), "rb").read()
    return data[:PKT * 400], str(tmp_path_factory.mktemp("mutations"))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 399),
                                # mostly headers, adaptation fields and PES starts
                                st.one_of(st.integers(1, 20), st.integers(0, PKT - 1)),
                                st.integers(0, 255)), max_size=20),
       cut=st.one_of(st.integers(0, 400).map(lambda n: n * PKT), st.integers(0, PKT * 400)))
def test_mutated_prefix_indexes_or_raises(mutation_seed, flips, cut):
    seed, workdir = mutation_seed
    data = bytearray(seed)
    for packet, pos, value in flips:
        data[packet * PKT + pos] = value
    path = os.path.join(workdir, "m.ts")
    with open(path, "wb") as f:
        f.write(bytes(data[:cut]))
    try:
        ix = index_mpegts(path, path + ".hint")
    except MediaError as exc:
        assert path in str(exc)
        return
    check_consistent(ix, path + ".hint")


# --- the C entry points, called directly ------------------------------------------------

@pytest.fixture(scope="module")
def guarded():
    """Place bytes so they end right before an inaccessible page.

    A read one byte past the end then crashes the test run instead of
    passing unnoticed.
    """
    import cffi
    c = cffi.FFI()
    c.cdef("void *mmap(void *, size_t, int, int, int, long);"
           "int munmap(void *, size_t); int mprotect(void *, size_t, int);")
    libc = c.dlopen(None)
    page = os.sysconf("SC_PAGESIZE")
    size = 1024 * page
    base = libc.mmap(c.NULL, size + page, 3, 0x22, -1, 0)     # RW, private|anonymous
    assert int(c.cast("intptr_t", base)) != -1
    assert libc.mprotect(c.cast("char *", base) + size, page, 0) == 0

    def place(data: bytes):
        assert len(data) <= size
        start = c.cast("char *", base) + size - len(data)
        c.memmove(start, data, len(data))
        return ffi.cast("uint8_t *", int(c.cast("uintptr_t", start)))

    yield place
    libc.munmap(base, size + page)


def info_of(place, pkt: bytes, codec: int = lib.KVOD_TS_CODEC_H264):
    info = ffi.new("struct kvod_ts_packet_info *")
    assert lib.kvod_ts_packet_info(place(pkt), len(pkt), codec, info) == lib.KVOD_TS_OK
    return info


def test_c_crc32_mpeg():
    assert lib.kvod_crc32_mpeg(b"123456789", 9) == 0x0376E6E7     # the catalogue check value
    assert lib.kvod_crc32_mpeg(b"", 0) == 0xFFFFFFFF
    assert lib.kvod_crc32_mpeg(ffi.NULL, 5) == 0xFFFFFFFF
    s = pat([(1, PMT_PID)])
    assert lib.kvod_crc32_mpeg(s, len(s)) == 0


@given(st.binary(max_size=600))
def test_c_crc32_matches_reference(data):
    assert lib.kvod_crc32_mpeg(data, len(data)) == crc32_mpeg(data)


def test_c_packet_info_fields(guarded):
    pkt = ts_packet(0x1ABC, pes(access_unit(0x09, 0x67)), pusi=True, cc=9,
                    af=pcr_field(PCR_MOD - 1, rai=True, disc=True))
    info = info_of(guarded, pkt)
    assert (info.pid, info.pusi, info.tei, info.cc) == (0x1ABC, 1, 0, 9)
    assert (info.has_af, info.bad_af, info.discontinuity, info.random_access) == (1, 0, 1, 1)
    assert info.has_pcr and info.pcr == PCR_MOD - 1
    assert info.keyframe_nal and info.payload_offset == PKT - len(pes(access_unit(0x09, 0x67)))
    assert not info_of(guarded, pkt, lib.KVOD_TS_CODEC_OTHER).keyframe_nal
    assert not info_of(guarded, pkt, lib.KVOD_TS_CODEC_HEVC).keyframe_nal   # 0x67 is HEVC type 51
    # audio: any PES start is a way in; a continuation is not
    audio = ts_packet(0x101, pes(b"\xff\xf1" + b"\x00" * 100), pusi=True)
    assert info_of(guarded, audio, lib.KVOD_TS_CODEC_AUDIO).keyframe_nal
    assert not info_of(guarded, audio, lib.KVOD_TS_CODEC_OTHER).keyframe_nal
    assert not info_of(guarded, ts_packet(0x101, b"\x00" * 184),
                       lib.KVOD_TS_CODEC_AUDIO).keyframe_nal
    # an extension past 299 is still read (and reduced by the scan)
    raw = bytearray(pkt)
    raw[11] = 0xFF
    assert info_of(guarded, bytes(raw)).pcr == (PCR_MOD - 1) // 300 * 300 + 0x1FF


def test_c_packet_info_arguments(guarded):
    info = ffi.new("struct kvod_ts_packet_info *")
    pkt = ts_packet(1, b"\x00" * 184)
    assert lib.kvod_ts_packet_info(guarded(pkt[:187]), 187, 0, info) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_packet_info(guarded(b""), 0, 0, info) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_packet_info(ffi.NULL, PKT, 0, info) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_packet_info(guarded(pkt), PKT, 0, ffi.NULL) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_packet_info(guarded(b"\x46" + pkt[1:]), PKT, 0, info) == lib.KVOD_TS_ERR_SYNC


@pytest.mark.parametrize("afc", [2, 3])
def test_c_packet_info_every_af_length(guarded, afc):
    for n in range(256):
        pkt = bytes([0x47, 0x41, 0x00, afc << 4, n, 0x10]) + b"\x00\x00\x01" * 60 + b"\x00\x00"
        assert len(pkt) == PKT
        info = info_of(guarded, pkt)
        assert info.bad_af == (5 + n > PKT) and info.has_af == (5 + n <= PKT)
        assert info.has_pcr == (5 + n <= PKT and n >= 7)
        if info.bad_af or afc == 2:
            assert info.payload_offset == PKT
        else:
            assert info.payload_offset == 5 + n


@settings(max_examples=300)
@given(body=st.binary(min_size=187, max_size=187), codec=st.integers(-1, 3))
def test_c_packet_info_random_packets(guarded, body, codec):
    info = info_of(guarded, b"\x47" + body, codec)
    assert 4 <= info.payload_offset <= PKT
    assert not (info.keyframe_nal and not info.pusi)


def test_c_keyframe_nal_bounded_by_packet(guarded):
    """PES headers whose lengths point past the packet find nothing."""
    for hdr_len in (0, 160, 170, 175, 176, 200, 255):
        es_start = b"\x00\x00\x01\xE0\x00\x00\x80\x80" + bytes([hdr_len])
        payload = (es_start + b"\x00\x00\x01\x65" * 50)[:184]
        info = info_of(guarded, ts_packet(VPID, payload, pusi=True))
        assert info.keyframe_nal == has_keyframe_nal(payload) == (hdr_len in (0, 160))
    # a start code cut by the packet end is not read past it
    payload = b"\xAA" * 181 + b"\x00\x00\x01"
    payload = pes(b"")[:14] + payload[14:]
    assert not info_of(guarded, ts_packet(VPID, payload, pusi=True)).keyframe_nal


def test_c_find_pid(guarded):
    data = b"".join(ts_packet(pid, b"\x00" * 184) for pid in (0, 0x100, 0x1FFF, 0x100))
    buf = guarded(data)
    at = ffi.new("uint64_t *")
    assert lib.kvod_ts_find_pid(buf, 0, len(data), 0x100, at) == 1 and at[0] == PKT
    assert lib.kvod_ts_find_pid(buf, 2 * PKT, len(data), 0x100, at) == 1 and at[0] == 3 * PKT
    assert lib.kvod_ts_find_pid(buf, 0, len(data), 0x1234, at) == 0
    assert lib.kvod_ts_find_pid(buf, PKT, PKT, 0x100, at) == 0                  # length 0
    assert lib.kvod_ts_find_pid(ffi.NULL, 0, 0, 0x100, at) == 0
    assert lib.kvod_ts_find_pid(ffi.NULL, 0, PKT, 0x100, at) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_find_pid(buf, 0, len(data) - 1, 0x100, at) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_find_pid(buf, PKT, 0, 0x100, at) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_find_pid(buf, 0, PKT, 0x100, ffi.NULL) == lib.KVOD_TS_ERR_ARG
    bad = guarded(data[:2 * PKT] + b"\x00" + data[2 * PKT + 1:])
    assert lib.kvod_ts_find_pid(bad, 0, len(data), 0x1234, at) == lib.KVOD_TS_ERR_SYNC
    assert at[0] == 2 * PKT


def new_scan(pcr_pid: int = VPID, video_pid: int = VPID, codec: int = lib.KVOD_TS_CODEC_H264):
    ix = lib.kvod_ts_index_new(pcr_pid, video_pid, codec)
    assert ix != ffi.NULL
    return ffi.gc(ix, lib.kvod_ts_index_free)


def test_c_index_lifecycle(guarded):
    assert lib.kvod_ts_index_new(0x2000, VPID, 0) == ffi.NULL
    assert lib.kvod_ts_index_new(VPID, 0x2000, 0) == ffi.NULL
    lib.kvod_ts_index_free(ffi.NULL)
    ix = new_scan()
    assert lib.kvod_ts_index_scan(ix, ffi.NULL, 0, 0) == lib.KVOD_TS_OK        # length 0
    assert lib.kvod_ts_index_finish(ix) == lib.KVOD_TS_OK
    assert (ix.record_count, ix.packets, ix.pcr_count, ix.end_ticks) == (0, 0, 0, 0)
    assert lib.kvod_ts_index_scan(ix, ffi.NULL, 0, 0) == lib.KVOD_TS_ERR_ARG   # finished
    assert lib.kvod_ts_index_finish(ffi.NULL) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_index_scan(ffi.NULL, ffi.NULL, 0, 0) == lib.KVOD_TS_ERR_ARG
    data = synth(40)
    buf = guarded(data)
    ix = new_scan()
    # not at next_offset, not whole packets, no buffer
    assert lib.kvod_ts_index_scan(ix, buf, PKT, 2 * PKT) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_index_scan(ix, buf, 0, PKT + 1) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_index_scan(ix, ffi.NULL, 0, PKT) == lib.KVOD_TS_ERR_ARG
    assert lib.kvod_ts_index_scan(ix, buf, 0, len(data)) == lib.KVOD_TS_OK
    assert lib.kvod_ts_index_finish(ix) == lib.KVOD_TS_OK
    assert ix.packets == 40 and ix.record_count == 6 and ix.pcr_count == 7
    assert ix.end_ticks == 35 * RATE and ix.duration_ns == expected_ns(35 * RATE)


def test_c_scan_stops_at_a_missing_sync_byte(guarded):
    data = bytearray(synth(60))
    data[30 * PKT] = 0
    ix = new_scan()
    assert lib.kvod_ts_index_scan(ix, guarded(bytes(data)), 0, len(data)) == lib.KVOD_TS_ERR_SYNC
    assert ix.error_offset == ix.next_offset == 30 * PKT and ix.packets == 30
    assert sum(ix.records[i].length for i in range(ix.record_count)) == 30 * PKT


def scan_records(data: bytes, cuts, place) -> bytes:
    ix = new_scan()
    buf = place(data)
    start = 0
    for cut in sorted(cuts) + [len(data) // PKT]:
        assert lib.kvod_ts_index_scan(ix, buf, start, cut * PKT) == lib.KVOD_TS_OK
        start = cut * PKT
    assert ix.next_offset == len(data)
    lib.kvod_ts_index_finish(ix)
    return bytes(ffi.buffer(ix.records, ix.record_count * 32))


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 1500), max_size=12))
def test_c_scan_in_pieces_equals_one_scan(guarded, cuts):
    """Carried state: a file scanned in pieces (as a growing file will be)."""
    data = synth(1500, key={100, 101, 700}, disc={400}, rai={1200},
                 pcr=lambda k: None if k % 5 else (PCR0 + k * RATE if k < 900 else k * RATE))
    assert scan_records(data, cuts, guarded) == scan_records(data, [], guarded)


def scan_windows(data: bytes, cuts, place) -> bytes:
    """Each piece from its own buffer (the file read piece by piece)."""
    ix = new_scan()
    start = 0
    for cut in sorted(set(cuts)) + [len(data) // PKT]:
        end = max(start, cut * PKT)
        win = place(data[start:end]) if end > start else ffi.NULL
        assert lib.kvod_ts_index_scan_window(ix, win, start, start, end) == lib.KVOD_TS_OK
        start = end
    lib.kvod_ts_index_finish(ix)
    return bytes(ffi.buffer(ix.records, ix.record_count * 32))


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 1500), max_size=12))
def test_c_scan_of_windows_equals_one_scan(guarded, cuts):
    data = synth(1500, key={100, 101, 700}, disc={400}, rai={1200},
                 pcr=lambda k: None if k % 5 else (PCR0 + k * RATE if k < 900 else k * RATE))
    assert scan_windows(data, cuts, guarded) == scan_records(data, [], guarded)


def test_c_scan_window_checks_its_range(guarded):
    data = synth(40)
    ix = new_scan()
    assert lib.kvod_ts_index_scan_window(ix, guarded(data[:10 * PKT]), 0, 0, 10 * PKT) == 0
    # a window that starts after what is to be scanned cannot hold it
    win = guarded(data[20 * PKT:])
    assert lib.kvod_ts_index_scan_window(ix, win, 20 * PKT, 10 * PKT, 40 * PKT) == \
        lib.KVOD_TS_ERR_ARG
    data2 = bytearray(data)
    data2[12 * PKT] = 0
    win = guarded(bytes(data2[10 * PKT:]))
    assert lib.kvod_ts_index_scan_window(ix, win, 10 * PKT, 10 * PKT, 40 * PKT) == \
        lib.KVOD_TS_ERR_SYNC
    assert ix.error_offset == 12 * PKT      # a file offset, not a window one


def test_c_records_grow_past_first_allocation(guarded):
    # every video packet a keyframe: a record each, past the first 1024
    data = synth(3000, rai=set(range(2, 3000)))
    ix = new_scan()
    assert lib.kvod_ts_index_scan(ix, guarded(data), 0, len(data)) == lib.KVOD_TS_OK
    assert ix.record_count == 2999 and ix.keyframes == 2998
    assert ix.records[0].length == 2 * PKT        # PAT and PMT
    assert all(ix.records[i].offset == (i + 1) * PKT for i in range(1, 2999))


def test_audio_only_titles_can_be_entered_at_every_audio_pes(tmp_path):
    """Without video, seek points are the audio stream's PES starts (an
    audio frame decodes on its own), not record 0 alone."""
    path = make_other("audio-only-aac.ts", ["-vn"], ["-c:a", "aac"], seconds=6)
    ix = index_mpegts(path, tmp_path / "a.hint")
    recs = check_consistent(ix, tmp_path / "a.hint")
    assert [s.codec for s in ix.streams] == ["aac"]
    audio_pid = ix.streams[0].pid
    data = open(path, "rb").read()
    keys = [r for r in recs if r.flags & REC_KEYFRAME]
    # every key record but the title's first starts an audio PES
    for r in keys[1:]:
        p = Packet(data[r.offset:r.offset + 188])
        assert p.pid == audio_pid and p.pusi
    # and a seek anywhere lands within a second before the time asked
    times = [r.send_ns for r in keys]
    for second in range(1, 6):
        at = max(t for t in times if t <= second * 10**9)
        assert second * 10**9 - at < 10**9, (second, at)
    # the count is of the audio PES starts: record 0 is the title's start
    assert keys[0].offset == 0 and ix.keyframes == len(keys) - 1 >= 15
