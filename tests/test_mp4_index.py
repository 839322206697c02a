"""The MP4 indexer against ffprobe's view of the same files: every access
unit the reference packetiser sends, depacketised by the RFCs, equals the
sample ffprobe finds (bytes, order, presentation time, keyframes)."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess

import pytest

from hypothesis import HealthCheck, given, settings, strategies as st

from rtpengine.hintfile import REC_BLOB, REC_KEYFRAME, REC_MARKER, HintFile
from rtpengine.index.errors import MediaError
from rtpengine.index.mp4 import MAX_PAYLOAD, index_mp4
from rtpengine.packetizer import packetize
from tests.helpers.depay import depay_aac, depay_video, split_nals
from tests.helpers.mp4_sparse import headers_and_moov
from tests.helpers.titles import make_mp4

TS0 = 0x7FFF0000        # near a wrap, so timestamp arithmetic must be modular


def probe(path: str) -> dict[int, dict]:
    """Per stream: codec, time base and the packets (pts, pos, size, key)."""
    out = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "stream=index,codec_name,time_base:packet=stream_index,pts,pos,size,flags",
         "-of", "json", path], capture_output=True, text=True, check=True).stdout)
    streams = {s["index"]: {"codec": s["codec_name"],
                            "time_base": tuple(map(int, s["time_base"].split("/"))),
                            "packets": []} for s in out["streams"]}
    for p in out["packets"]:
        streams[p["stream_index"]]["packets"].append(
            (p["pts"], int(p["pos"]), int(p["size"]), p["flags"][0] == "K"))
    return streams


def indexed(path: str, tmp_path):
    index = index_mp4(path, lambda i: tmp_path / f"track{i}.hint")
    return index, [HintFile(tmp_path / f"track{i}.hint") for i in range(len(index.tracks))]


def expected_rtp(pts: int, time_base: tuple[int, int], clock: int) -> int:
    num, den = time_base
    return (TS0 + pts * num * clock // den) & 0xFFFFFFFF


def nal_type(nal: bytes, codec: str) -> int:
    return (nal[0] >> 1) & 0x3F if codec == "hevc" else nal[0] & 0x1F


def in_band_sets(track) -> list[bytes]:
    """The parameter sets the SDP names, in the order they go in band."""
    fmtp = dict(p.split("=", 1) for p in track.fmtp.split(";"))
    keys = ("sprop-vps", "sprop-sps", "sprop-pps") if track.codec == "hevc" else \
        ("sprop-parameter-sets",)
    return [base64.b64decode(v) for k in keys for v in fmtp.get(k, "").split(",") if v]


def check_track(path: str, track, hints: HintFile, stream: dict) -> None:
    with open(path, "rb") as f:
        media = f.read()
    packets = list(packetize(hints, media, ssrc=1, seq0=65530, ts0=TS0))
    records = list(hints)
    assert all(len(p) - 12 <= MAX_PAYLOAD for p in packets)
    sends = [r.send_ns for r in records]
    assert sends == sorted(sends), "records must leave in order"
    samples = stream["packets"]
    if track.kind == "video":
        aus = depay_video(packets, track.codec)
        # the SDP's parameter sets also go in band before each sync sample
        # that lacks its own (players that ignore sprop-* join at keyframes)
        sets = in_band_sets(track)
        assert sets
        want = []
        for _, pos, size, key in samples:
            nals = split_nals(media[pos:pos + size])
            has_sps = any(nal_type(n, track.codec) == (33 if track.codec == "hevc" else 7)
                          for n in nals)
            want.append((sets if key and not has_sps else []) + nals)
        assert [nals for _, nals in aus] == want
    else:
        aus = depay_aac(packets)
        assert [au for _, au in aus] == [media[pos:pos + size] for _, pos, size, _ in samples]
    assert [ts for ts, _ in aus] == [expected_rtp(pts, stream["time_base"], track.clock_rate)
                                     for pts, *_ in samples]
    # a keyframe flag on the first record of exactly the sync samples
    firsts = [0] + [i + 1 for i, r in enumerate(records[:-1]) if r.flags & REC_MARKER]
    assert [bool(records[i].flags & REC_KEYFRAME) for i in firsts] == [k for *_, k in samples]
    assert sum(1 for r in records if r.flags & REC_KEYFRAME) == track.keyframes


FRAGMENTED = ("-movflags", "frag_keyframe+empty_moov")


@pytest.mark.parametrize("kind", ["h264_aac", "h264_faststart", "hevc_aac", "aac_only",
                                  "h264_only", "fragmented", "hevc_fragmented"])
def test_tracks_equal_ffprobe_samples(kind, tmp_path):
    path = {"h264_aac": lambda: make_mp4(),
            "h264_faststart": lambda: make_mp4(faststart=True),
            "hevc_aac": lambda: make_mp4(video="hevc"),
            "aac_only": lambda: make_mp4(video=None),
            "h264_only": lambda: make_mp4(audio=False),
            "fragmented": lambda: make_mp4(extra=FRAGMENTED),
            "hevc_fragmented": lambda: make_mp4(video="hevc", extra=FRAGMENTED)}[kind]()
    index, hints = indexed(path, tmp_path)
    streams = probe(path)
    by_kind = {("video" if s["codec"] in ("h264", "hevc") else "audio"): s
               for s in streams.values()}
    assert [t.kind for t in index.tracks] == [k for k in ("video", "audio") if k in by_kind]
    for track, h in zip(index.tracks, hints):
        assert track.codec == by_kind[track.kind]["codec"].replace("h265", "hevc")
        check_track(path, track, h, by_kind[track.kind])
        assert h.header.payload_type == track.payload_type
        assert h.header.clock_rate == track.clock_rate
    assert abs(index.duration_ns - 4e9) <= 0.1e9


def test_moov_first_and_last_give_the_same_packets(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, last = indexed(make_mp4(), tmp_path / "a")
    _, first = indexed(make_mp4(faststart=True), tmp_path / "b")
    media = {}
    for key, path in (("a", make_mp4()), ("b", make_mp4(faststart=True))):
        with open(path, "rb") as f:
            media[key] = f.read()
    for hl, hf in zip(last, first):
        assert [p for p in packetize(hl, media["a"], ssrc=1, seq0=0, ts0=0)] == \
            [p for p in packetize(hf, media["b"], ssrc=1, seq0=0, ts0=0)]


def test_sdp_parameters(tmp_path):
    index, _ = indexed(make_mp4(), tmp_path)
    video, audio = index.tracks
    assert video.encoding == "H264" and video.clock_rate == 90000
    assert "packetization-mode=1" in video.fmtp
    assert "profile-level-id=640014" in video.fmtp
    assert "sprop-parameter-sets=Z2Q" in video.fmtp
    assert audio.encoding == "MPEG4-GENERIC" and audio.clock_rate == 48000
    assert audio.channels == 2
    assert "mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3" in audio.fmtp
    assert "config=1190" in audio.fmtp
    index, _ = indexed(make_mp4(video="hevc"), tmp_path)
    assert index.tracks[0].encoding == "H265"
    assert all(f"sprop-{k}=" in index.tracks[0].fmtp for k in ("vps", "sps", "pps"))


# -------------------------------------------------------------- hostile ---

def _boxes(data: bytes, path: tuple[bytes, ...]):
    """(offset, size) of the first box at ``path`` (a chain of types)."""
    start, end = 0, len(data)
    for i, kind in enumerate(path):
        pos = start
        while pos < end:
            size, t = struct.unpack_from(">I4s", data, pos)
            if t == kind:
                break
            pos += size
        else:
            raise KeyError(kind)
        if i == len(path) - 1:
            return pos, size
        start, end = pos + 8, pos + size
        if t == b"stsd":
            start += 8
    raise KeyError(path)


STBL = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def _edit(tmp_path, mutate) -> str:
    with open(make_mp4(faststart=True), "rb") as f:
        data = bytearray(f.read())
    mutate(data)
    out = tmp_path / "hostile.mp4"
    out.write_bytes(bytes(data))
    return str(out)


def _set_u32(data, path, at, value):
    pos, _ = _boxes(bytes(data), path)
    struct.pack_into(">I", data, pos + at, value)


@pytest.mark.parametrize("what,mutate,message", [
    ("moov size lies", lambda d: _set_u32(d, (b"moov",), 0, len(d) * 2), "runs past"),
    ("box smaller than header", lambda d: _set_u32(d, STBL + (b"stts",), 0, 3),
     "smaller than its header"),
    ("stsz count absurd", lambda d: _set_u32(d, STBL + (b"stsz",), 16, 0xFFFFFFFF),
     "samples is over the limit"),
    ("stsz count disagrees", lambda d: _set_u32(d, STBL + (b"stsz",), 16, 7),
     "another number of samples"),
    ("stts count lies", lambda d: _set_u32(d, STBL + (b"stts",), 12, 0x10000000),
     "entries need"),
    ("stts total disagrees", lambda d: _set_u32(d, STBL + (b"stts",), 16, 99),
     "stts times another number"),
    ("chunk offset outside", lambda d: _set_u32(d, STBL + (b"stco",), 16, 0xFFFFFF00),
     "outside the file"),
    ("stsc names missing chunks", lambda d: _set_u32(d, STBL + (b"stsc",), 16, 5000),
     "stsc"),
    ("stss out of range", lambda d: _set_u32(d, STBL + (b"stss",), 16, 100000),
     "stss"),
])
def test_hostile_tables_are_media_errors(what, mutate, message, tmp_path):
    path = _edit(tmp_path, mutate)
    with pytest.raises(MediaError, match=message):
        index_mp4(path, lambda i: tmp_path / f"t{i}.hint")


def test_nal_length_past_sample(tmp_path):
    def mutate(d):
        first = _boxes(bytes(d), (b"mdat",))[0] + 8
        struct.pack_into(">I", d, first, 0x00FFFFFF)
    with pytest.raises(MediaError, match="NAL unit length"):
        index_mp4(_edit(tmp_path, mutate), lambda i: tmp_path / f"t{i}.hint")


@pytest.mark.parametrize("cut", [0, 7, 8, 100, 1000, 3000])
def test_truncated_files(cut, tmp_path):
    with open(make_mp4(faststart=True), "rb") as f:
        data = f.read()
    (tmp_path / "cut.mp4").write_bytes(data[:cut])
    with pytest.raises(MediaError):
        index_mp4(tmp_path / "cut.mp4", lambda i: tmp_path / f"t{i}.hint")


def _frag_edit(tmp_path, mutate) -> str:
    with open(make_mp4(extra=FRAGMENTED), "rb") as f:
        data = bytearray(f.read())
    mutate(data, _boxes(bytes(data), (b"moof",))[0])
    out = tmp_path / "hostile-frag.mp4"
    out.write_bytes(bytes(data))
    return str(out)


def _set_tfdt(data, moof, value: int) -> None:
    """The first moof's tfdt base decode time, as a 64-bit (version 1) field."""
    at = bytes(data).index(b"tfdt", moof) - 4
    version = data[at + 8]
    if version == 1:
        struct.pack_into(">Q", data, at + 12, value)
    else:
        struct.pack_into(">I", data, at + 12, value & 0xFFFFFFFF)


def _trun(data, moof) -> int:
    """Offset of the first trun in the first moof."""
    at = bytes(data).index(b"trun", moof) - 4
    return at


@pytest.mark.parametrize("what,mutate,message", [
    ("trun count lies", lambda d, m: struct.pack_into(">I", d, _trun(d, m) + 12, 10**6),
     "samples need"),
    ("trun data offset outside", lambda d, m: struct.pack_into(">i", d, _trun(d, m) + 16,
                                                               2**31 - 1), "outside the file"),
    ("moof size lies", lambda d, m: struct.pack_into(">I", d, m, 2**31), "runs past"),
    # found by the byte-flip fuzzing below: a decode time no timeline holds
    ("tfdt beyond any timeline", lambda d, m: _set_tfdt(d, m, 2**63 + 12345), "beyond any"),
])
def test_hostile_fragments_are_media_errors(what, mutate, message, tmp_path):
    with pytest.raises(MediaError, match=message):
        index_mp4(_frag_edit(tmp_path, mutate), lambda i: tmp_path / f"t{i}.hint")


def index_flipped(source: str, edits, tmp_path_factory) -> None:
    """Index ``source`` with ``edits`` (offset, byte) applied: tracks or a
    MediaError, nothing else."""
    with open(source, "rb") as f:
        data = bytearray(f.read())
    for at, value in edits:
        data[at] = value
    path = tmp_path_factory.mktemp("flip") / "f.mp4"
    path.write_bytes(bytes(data))
    try:
        index_mp4(path, lambda i: path.parent / f"t{i}.hint")
    except MediaError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(0, 2400), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_corrupted_fragmented_moov_and_moof(edits, tmp_path_factory):
    """Byte flips in the moov and first moof of a fragmented file."""
    index_flipped(make_mp4(extra=FRAGMENTED), edits, tmp_path_factory)


def test_no_hint_file_left_by_a_failure(tmp_path):
    path = _edit(tmp_path, lambda d: _set_u32(d, STBL + (b"stts",), 16, 99))
    with pytest.raises(MediaError):
        index_mp4(path, lambda i: tmp_path / f"t{i}.hint")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".hint")]


# ------------------------------------------------------------- hypothesis ---


from rtpengine.index import mp4_boxes as bx  # noqa: E402
from rtpengine._kvod_index import ffi, lib  # noqa: E402

_TYPES = [b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd", b"hdlr", b"minf",
          b"stbl", b"stsd", b"stts", b"ctts", b"stsc", b"stsz", b"stco", b"co64", b"stss",
          b"edts", b"elst", b"mdat", b"free", b"avc1", b"mp4a", b"esds", b"avcC", b"moof"]


def _tree(depth: int):
    leaf = st.tuples(st.sampled_from(_TYPES), st.binary(max_size=40),
                     st.sampled_from([None, None, None, 0, 1, 7, 0xFFFFFFFF]))
    if depth == 0:
        return st.lists(leaf, max_size=4)
    node = st.tuples(st.sampled_from(_TYPES), st.deferred(lambda: _tree(depth - 1)),
                     st.sampled_from([None, None, None, 0, 1, 7, 0xFFFFFFFF]))
    return st.lists(st.one_of(leaf, node), max_size=4)


def _build(tree) -> bytes:
    out = b""
    for kind, body, size in tree:
        payload = body if isinstance(body, bytes) else _build(body)
        if kind == b"stsd" and not isinstance(body, bytes):
            payload = b"\0\0\0\0" + struct.pack(">I", len(body)) + payload
        out += struct.pack(">I4s", len(payload) + 8 if size is None else size, kind) + payload
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=_tree(5))
def test_box_trees_give_tracks_or_media_errors(tree, tmp_path_factory):
    data = _build(tree)
    path = tmp_path_factory.mktemp("tree") / "t.mp4"
    path.write_bytes(data)
    try:
        index_mp4(path, lambda i: path.parent / f"t{i}.hint")
    except MediaError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(0, 4300), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_corrupted_moov_gives_tracks_or_media_errors(edits, tmp_path_factory):
    """Byte flips in a real moov (first 4.3 kB of the faststart file)."""
    index_flipped(make_mp4(faststart=True), edits, tmp_path_factory)


@given(st.binary(max_size=200))
def test_walker_on_random_bytes(data):
    try:
        list(bx.iter_boxes(data, 0, len(data), budget=[bx.MAX_BOXES]))
    except MediaError:
        pass


def test_c_entry_point_refuses_bad_arguments():
    tr = ffi.new("struct kvod_mp4_track *")
    assert lib.kvod_mp4_index(ffi.NULL) == lib.KVOD_MP4_ERR_ARG
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG        # no tables, no media
    media = ffi.new("uint8_t[16]")
    one = ffi.new("uint32_t[3]", [1, 1, 1])
    offs = ffi.new("uint64_t[1]", [0])
    tr.media, tr.media_size = media, 16
    stts = ffi.new("uint32_t[2]", [1, 1])     # kept: the struct only points at it
    tr.stts, tr.stts_count = stts, 1
    tr.stsc, tr.stsc_count, tr.chunk_offsets, tr.chunk_count = one, 1, offs, 1
    tr.sample_size, tr.sample_count = 16, 1
    tr.timescale = tr.clock_rate = 1000
    tr.max_payload = 1400
    tr.codec = 99
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG
    tr.codec, tr.nal_length_size = lib.KVOD_MP4_CODEC_H264, 5
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG
    tr.codec = lib.KVOD_MP4_CODEC_AAC
    tr.param_set_count = 1                      # and no array
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG
    sets = ffi.new("uint32_t[2]", [0, 0])       # an empty parameter set
    tr.param_sets = sets
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG
    tr.param_set_count = 0
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_OK
    assert tr.record_count == 1 and tr.records[0].length == 16
    assert bytes(tr.records[0].prefix[0:4]) == bytes([0, 16, 0, 16 << 3])
    lib.kvod_mp4_free(tr)
    lib.kvod_mp4_free(ffi.NULL)
    tr.sample_count = lib.KVOD_MP4_MAX_SAMPLES + 1
    assert lib.kvod_mp4_index(tr) == lib.KVOD_MP4_ERR_ARG


def test_bench_index_mp4_reports_samples_per_second():
    from rtpengine.bench.index_mp4 import run
    result = run(make_mp4(), runs=1)
    assert result["samples"] == 100 + 189
    assert result["samples_per_s_best"] > 0 and result["tracks"][0]["keyframes"] == 4


# ----------------------------------------------------------- box helpers ---

def _box(kind: bytes, payload: bytes) -> tuple[bytes, "bx.Box"]:
    data = struct.pack(">I4s", 8 + len(payload), kind) + payload
    return data, next(bx.iter_boxes(data, 0, len(data)))


@pytest.mark.parametrize("field,packed,sizes", [
    (4, bytes([0x12, 0x30]), [1, 2, 3]),
    (8, bytes([7, 200, 255]), [7, 200, 255]),
    (16, struct.pack(">3H", 1, 65535, 300), [1, 65535, 300]),
])
def test_stz2_sizes(field, packed, sizes):
    data, box = _box(b"stz2", bytes(7) + bytes([field]) + struct.pack(">I", len(sizes)) + packed)
    assert list(bx.stz2_table(box, data, 0, "t")) == sizes


def test_stz2_count_lies_and_bad_field():
    data, box = _box(b"stz2", bytes(7) + bytes([8]) + struct.pack(">I", 99) + bytes(3))
    with pytest.raises(MediaError, match="need"):
        bx.stz2_table(box, data, 0, "t")
    data, box = _box(b"stz2", bytes(7) + bytes([12]) + struct.pack(">I", 1) + bytes(3))
    with pytest.raises(MediaError, match="field size"):
        bx.stz2_table(box, data, 0, "t")


def test_co64_and_stco_offsets():
    data, box = _box(b"co64", bytes(4) + struct.pack(">IQQ", 2, 1 << 40, 5))
    assert list(bx.u64_table(box, data, 0, "t")) == [1 << 40, 5]
    data, box = _box(b"stco", bytes(4) + struct.pack(">III", 2, 7, 9))
    assert list(bx.u64_table(box, data, 0, "t")) == [7, 9]
    data, box = _box(b"co64", bytes(4) + struct.pack(">IQ", 3, 1))
    with pytest.raises(MediaError, match="offsets need"):
        bx.u64_table(box, data, 0, "t")


def test_esds_descriptors():
    asc = bytes.fromhex("1190")
    dsi = bytes([0x05, len(asc)]) + asc
    dcd = bytes([0x04, 13 + len(dsi), 0x40, 0x15]) + bytes(11) + dsi
    es = bytes([0x03, 3 + len(dcd)]) + b"\0\1\0" + dcd
    assert bx.parse_esds(memoryview(bytes(4) + es), "t") == (0x40, asc)
    # a size that runs past the box, and a truncated one
    with pytest.raises(MediaError):
        bx.parse_esds(memoryview(bytes(4) + bytes([0x03, 0x7F]) + es[2:]), "t")
    with pytest.raises(MediaError):
        bx.parse_esds(memoryview(bytes(4) + bytes([0x03, 0x80, 0x80])), "t")


@given(st.binary(max_size=64))
def test_esds_on_random_bytes(data):
    try:
        bx.parse_esds(memoryview(data), "t")
    except MediaError:
        pass


# ------------------------------------------------------- through the engine ---

@pytest.mark.parametrize("strategy", ["gso", "sendmmsg"])
@pytest.mark.parametrize("kind", ["h264", "hevc"])
def test_engine_sends_the_reference_packets_of_every_track(strategy, kind, tmp_path,
                                                          receivers):
    """The C engine sends exactly the reference packetiser's bytes for MP4
    hints: prefix bytes (FU headers, AU headers) and BLOB records (the
    in-band parameter sets) included."""
    from rtpengine.engine import Engine
    from tests.helpers.engine import check_stream, expected, open_stream, wait_state
    path = make_mp4(video=kind)
    index, hints = indexed(path, tmp_path)
    for h in hints:
        h.close()
    with Engine(strategy=strategy) as engine:
        for i, track in enumerate(index.tracks):
            hint = str(tmp_path / f"track{i}.hint")
            kw = dict(ssrc=0xC0FFEE + i, seq0=65500, ts0=TS0)
            want = expected(hint, path, **kw)
            rx = receivers()
            stream = open_stream(engine, rx.sender(), path, hint, **kw)
            stream.play(unpaced=True)
            got = rx.collect(len(want))
            st_ = wait_state(stream, "ended")
            check_stream(got, want, rx, st_)
            stream.close()


# ----------------------------------------------------------- growing file ---

@pytest.mark.parametrize("kw", [dict(), dict(faststart=True), dict(video="hevc")],
                         ids=["moov_last", "moov_first", "hevc"])
def test_growing_index_equals_the_whole_files(kw, tmp_path):
    """Fed the file front to back (the moov and box headers there first, as a
    fill fetches them), the growing index hands out exactly the records of
    the whole file's index, each only once its bytes are all there."""
    from rtpengine.index.mp4_growing import GrowingMp4Index
    from rtpengine.hintfile import RECORD_SIZE, HintRecord
    path = make_mp4(**kw)
    with open(path, "rb") as f:
        data = f.read()
    index, hints = indexed(path, tmp_path)
    whole = [h.records_bytes() for h in hints]
    buf = headers_and_moov(data)
    got = [b""] * len(whole)
    with GrowingMp4Index(buf, len(buf), "grow") as ix:
        assert [t.codec for t in ix.tracks()] == [t.codec for t in index.tracks]
        upto = 0
        while not ix.complete:
            upto = min(len(data), upto + 7919)
            buf[:upto] = data[:upto]
            for i, new in enumerate(ix.feed(upto)):
                for k in range(0, len(new), RECORD_SIZE):
                    rec = HintRecord.unpack_from(new, k)
                    assert rec.flags & REC_BLOB or rec.offset + rec.length <= upto
                got[i] += new
            assert upto < len(data) or ix.complete
        assert got == whole
        assert ix.tracks() == list(index.tracks)
        ix.write_hints(0, tmp_path / "grown.hint")
    with open(tmp_path / "grown.hint", "rb") as a, open(tmp_path / "track0.hint", "rb") as b:
        assert a.read() == b.read()


def test_growing_index_needs_the_moov(tmp_path):
    from rtpengine.index.mp4_growing import GrowingMp4Index
    with open(make_mp4(), "rb") as f:
        data = f.read()
    buf = bytearray(len(data))
    buf[:4096] = data[:4096]            # the moov is at the end, not there yet
    with pytest.raises(MediaError):
        GrowingMp4Index(buf, len(buf), "grow")
