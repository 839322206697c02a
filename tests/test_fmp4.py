"""fMP4 for HLS, without a daemon: the box writers read back by kvod's own
box parser, the fragmented copy of real titles read back by the MP4
indexer's fragment path (same samples, same bytes, same timing), the
segment plan's cuts, and damaged files giving a MediaError only."""

from __future__ import annotations

import array
import hashlib
import mmap
import os
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.http.fmp4 import boxes as w
from appliance.http.fmp4.fragments import build_fragment, plan_segments
from appliance.http.fmp4.samples import TrackSamples, expand
from appliance.http.fmp4.title import NotWholeYet, load_title
from rtpengine.index import mp4_boxes as bx
from rtpengine.index.errors import MediaError
from rtpengine.index.mp4 import read_tracks
from tests.helpers.mp4_sparse import top_level_boxes
from tests.helpers.titles import make_mp4

u32 = st.integers(0, 2**32 - 1)


def only_box(data: bytes) -> bx.Box:
    boxes = list(bx.iter_boxes(data, 0, len(data)))
    assert len(boxes) == 1 and boxes[0].end == len(data)
    return boxes[0]


# -- box writers, read back --------------------------------------------------------------


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=300))
def test_a_box_reads_back(kind, payload):
    data = w.box(kind, payload)
    b = only_box(data)
    assert (b.type, bytes(b.data(data))) == (kind, payload)


def test_a_large_mdat_header_has_a_64_bit_size():
    assert only_box(w.mdat_header(100) + bytes(100)).end == 108
    head = w.mdat_header(2**32)
    assert struct.unpack(">I4sQ", head) == (1, b"mdat", 2**32 + 16)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(u32, u32, u32, u32), min_size=0, max_size=40),
       st.integers(-(2**31), 2**31 - 1), st.booleans())
def test_a_trun_reads_back(rows, data_offset, with_cto):
    cols = [array.array("I", (r[i] for r in rows)) for i in range(4)]
    data = w.trun(data_offset, cols[0], cols[1], cols[2], cols[3] if with_cto else None)
    b = only_box(data)
    assert b.type == b"trun"
    head = bx.TRUN_HEADER.parse(bytes(b.data(data)))
    assert head.sample_count == len(rows) and head.data_offset == data_offset
    assert head.first_sample_flags is None
    fields = [f for bit, f in bx.TRUN_SAMPLE_FIELDS if head.flags & bit]
    assert fields == ["duration", "size", "flags"] + (["cto"] if with_cto else [])
    # the version says how to read the offsets: 1 (signed) only for negative ones
    assert head.version == (1 if with_cto and any(r[3] >> 31 for r in rows) else 0)
    table = array.array("I", bytes(b.data(data))[12:])   # after count and offset
    if sys.byteorder == "little":
        table.byteswap()
    assert [tuple(table[i:i + len(fields)]) for i in range(0, len(table), len(fields))] \
        == [r[:len(fields)] for r in rows]


@given(u32, st.integers(0, 2**64 - 1), u32)
def test_tfhd_tfdt_mfhd_trex_read_back(track_id, decode_time, sequence):
    tfhd = w.tfhd(track_id)
    parsed = bx.TFHD.parse(bytes(only_box(tfhd).data(tfhd)))
    assert parsed.track_id == track_id and parsed.flags == bx.TFHD_DEFAULT_BASE_IS_MOOF
    tfdt = w.tfdt(decode_time)
    assert bx.TFDT.parse(bytes(only_box(tfdt).data(tfdt))).base_media_decode_time \
        == decode_time
    mfhd = w.mfhd(sequence)
    assert struct.unpack(">4xI", bytes(only_box(mfhd).data(mfhd))) == (sequence,)
    trex = w.trex(track_id)
    parsed = bx.TREX.parse(bytes(only_box(trex).data(trex)))
    assert (parsed.track_id, parsed.default_sample_description_index) == (track_id, 1)


# -- real titles: the fragmented copy holds the same samples ----------------------------------

TITLES = {"h264+aac": {}, "faststart": dict(faststart=True), "hevc": dict(video="hevc"),
          "audio": dict(video=None), "video": dict(audio=False),
          "fragmented": dict(extra=("-movflags", "frag_keyframe+empty_moov"))}


def fragmented_copy(source: str, target_s: float) -> tuple[bytes, list]:
    """The init segment and every segment of ``source``, bytes filled in
    from the file as the HTTP body would send them; and the plan."""
    title = load_title(source, source, target_s)
    with open(source, "rb") as f:
        data = f.read()
    out = [title.init]
    for k in range(len(title.plans)):
        fragment = title.fragment(k)
        out.append(fragment.head)
        out += [data[p.start:p.end] for p in fragment.parts]
    return b"".join(out), title


def samples_of(data: bytes, name: str) -> list[TrackSamples]:
    mm = mmap.mmap(-1, len(data))
    mm.write(data)
    try:
        _, traks = read_tracks(mm, len(data), name)
        return [expand(t, len(data), name) for t in traks]
    finally:
        mm.close()


def sample_hash(data: bytes, t: TrackSamples) -> str:
    h = hashlib.sha256()
    for offset, size in zip(t.offsets, t.sizes):
        h.update(data[offset:offset + size])
    return h.hexdigest()


@pytest.mark.parametrize("title", TITLES)
def test_the_fragmented_copy_has_the_same_samples(title, tmp_path):
    source = make_mp4(**TITLES[title])
    copy, plan = fragmented_copy(source, 1.0)
    with open(source, "rb") as f:
        original = f.read()
    before, after = samples_of(original, source), samples_of(copy, "copy")
    assert [t.track_id for t in before] == [t.track_id for t in after]
    for a, b in zip(before, after):
        assert (b.kind, b.timescale, b.count) == (a.kind, a.timescale, a.count)
        assert b.sizes == a.sizes and b.durations == a.durations
        assert (b.ctos or array.array("I", [0]) * b.count) == \
            (a.ctos or array.array("I", [0]) * a.count)
        assert (b.sync is None and a.sync is None) or \
            list(b.sync or range(b.count)) == list(a.sync or range(a.count))
        assert sample_hash(copy, b) == sample_hash(original, a)
    assert len(plan.plans) >= 3      # 4 s cut about every second


@pytest.mark.parametrize("title", ["h264+aac", "audio", "hevc"])
def test_segments_start_on_sync_samples_and_tile_the_tracks(title):
    source = make_mp4(**TITLES[title])
    fmp4 = load_title(source, source, 1.0)
    lead = fmp4.tracks[0]
    for i, t in enumerate(fmp4.tracks):
        spans = [p.spans[i] for p in fmp4.plans]
        assert spans[0][0] == 0 and spans[-1][1] == t.count
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for p in fmp4.plans:
        first = p.spans[0][0]
        assert lead.sync is None or first in lead.sync
    assert all(p.duration >= 1.0 - 1e-9 for p in fmp4.plans[:-1])
    total = sum(p.duration for p in fmp4.plans)
    assert total == pytest.approx(max(t.end_time / t.timescale for t in fmp4.tracks))


def test_the_init_segment_keeps_the_codec_configuration():
    source = make_mp4()
    fmp4 = load_title(source, source, 6.0)
    data = fmp4.init
    top = list(bx.iter_boxes(data, 0, len(data)))
    assert [b.type for b in top] == [b"ftyp", b"moov"]
    mm = mmap.mmap(-1, len(data))
    mm.write(data)
    _, traks = read_tracks(mm, len(data), "init")
    mm.close()
    with open(source, "rb") as f:
        original = f.read()
    mm = mmap.mmap(-1, len(original))
    mm.write(original)
    _, source_traks = read_tracks(mm, len(original), source)
    mm.close()
    assert [(t.track_id, t.codec, t.fmtp, t.timescale) for t in traks] == \
        [(t.track_id, t.codec, t.fmtp, t.timescale) for t in source_traks]
    assert all(t.tables["sample_count"] == 0 for t in traks)
    moov = top[1]
    assert bx.find(bx.children(data, moov), b"mvex") is not None


def test_a_segment_of_an_interleaved_file_is_a_few_file_ranges():
    # ffmpeg interleaves a frame of video with two of audio: the runs in
    # file order merge into one sendfile range, or a few around a cut
    source = make_mp4()
    fmp4 = load_title(source, source, 2.0)
    for k in range(len(fmp4.plans)):
        assert len(fmp4.fragment(k).parts) <= 4


# -- plans over made-up tracks -----------------------------------------------------------


def made_track(kind: str, timescale: int, durations: list[int], sync_every: int) -> TrackSamples:
    n = len(durations)
    times = array.array("Q", [0])
    for d in durations[:-1]:
        times.append(times[-1] + d)
    return TrackSamples(1 if kind == "video" else 2, kind, timescale,
                        array.array("Q", range(0, 10 * n, 10)), array.array("I", [10]) * n,
                        times, array.array("I", durations), None,
                        array.array("I", range(0, n, sync_every)) if sync_every > 1 else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=300), st.integers(1, 40),
       st.lists(st.integers(1, 2048), min_size=0, max_size=300), st.floats(0.05, 8))
def test_plans_tile_every_track_and_cut_on_sync(video, sync_every, audio, target):
    tracks = [made_track("video", 90000, video, sync_every)]
    if audio:
        tracks.append(made_track("audio", 48000, audio, 1))
    plans = plan_segments(tracks, target)
    for i, t in enumerate(tracks):
        spans = [p.spans[i] for p in plans]
        assert spans[0][0] == 0 and spans[-1][1] == t.count
        assert all(a[0] <= a[1] == b[0] for a, b in zip(spans, spans[1:]))
    lead = tracks[0]
    for p in plans[1:]:
        assert lead.sync is None or p.spans[0][0] in lead.sync
        assert p.spans[0][0] > 0
    for p in plans[:-1]:
        assert p.duration >= target - 1e-6
    # every fragment's truns say where its samples are in its mdat
    for k, p in enumerate(plans):
        fragment = build_fragment(tracks, p, k + 1)
        assert fragment.size == len(fragment.head) + sum(
            10 * (b - a) for a, b in p.spans)


# -- damaged files ---------------------------------------------------------------------------


def test_a_truncated_file_is_a_media_error(tmp_path):
    source = make_mp4(faststart=True)
    with open(source, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(MediaError, match="truncated|past"):
        load_title(str(cut), "cut", 6.0)


def test_tables_that_disagree_are_a_media_error():
    source = make_mp4()
    fmp4 = load_title(source, source, 6.0)
    t = fmp4.tracks[0]
    with pytest.raises(MediaError, match="holds"):
        expand(_Trak(t, chunk_offsets=array.array("Q", [2**40])), os.path.getsize(source),
               "x")


def test_a_chunk_past_2_64_is_a_media_error():
    source = make_mp4()
    t = load_title(source, source, 6.0).tracks[0]
    with pytest.raises(MediaError, match="2\\^64"):
        expand(_Trak(t, chunk_offsets=array.array("Q", [2**64 - 1])), 2**63, "x")


class _Trak:
    """A read_tracks track with one table replaced."""

    def __init__(self, t: TrackSamples, **tables) -> None:
        self.track_id, self.kind, self.timescale = t.track_id, t.kind, t.timescale
        self.tables = dict(sample_count=t.count, sizes=t.sizes, sample_size=0,
                           chunk_offsets=array.array("Q", [t.offsets[0]]),
                           stsc=array.array("I", [1, t.count, 1]),
                           stts=array.array("I", [t.count, 1]), ctts=None, stss=None)
        self.tables.update(tables)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_flipped_bytes_give_a_media_error_or_a_title(edits, tmp_path_factory):
    with open(make_mp4(faststart=True), "rb") as f:
        data = bytearray(f.read())
    for at, value in edits:
        data[at] = value
    path = tmp_path_factory.mktemp("flip") / "f.mp4"
    path.write_bytes(bytes(data))
    try:
        fmp4 = load_title(str(path), "flipped", 1.0)
    except MediaError:
        return
    for k in range(len(fmp4.plans)):
        fragment = fmp4.fragment(k)
        assert all(0 <= p.start < p.end <= len(data) for p in fragment.parts)


def test_a_segment_too_large_to_address_is_a_media_error():
    # one sync sample, then nothing to cut at: bytes over a trun's reach ...
    big = TrackSamples(1, "video", 90000, array.array("Q", [0, 2**31]),
                       array.array("I", [2**31 - 1, 2**31 - 1]), array.array("Q", [0, 3000]),
                       array.array("I", [3000, 3000]), None, array.array("I", [0]))
    plans = plan_segments([big], 6.0)
    assert len(plans) == 1
    with pytest.raises(MediaError, match="can address"):
        build_fragment([big], plans[0], 1)
    # ... or more samples than a moof built in memory should hold
    n = (1 << 20) + 1
    many = made_track("video", 90000, [1] * n, n)
    with pytest.raises(MediaError, match="samples"):
        build_fragment([many], plan_segments([many], 6.0)[0], 1)


def _sparse_copy(source: str, path) -> None:
    """``source`` as a fill leaves it midway: its box headers and moov
    written, every mdat's body a hole."""
    data = open(source, "rb").read()
    with open(path, "wb") as f:
        f.truncate(len(data))
        for offset, header, size, kind in top_level_boxes(data):
            end = offset + (header if kind == b"mdat" else size)
            f.seek(offset)
            f.write(data[offset:end])


@pytest.mark.parametrize("faststart", [False, True])
def test_a_filling_progressive_mp4_is_cut_as_the_whole_one(tmp_path, faststart):
    """The moov describes every sample: a fill's sparse file, with no sample
    yet, gives the same init segment and segments as the whole file."""
    source = make_mp4(faststart=faststart)
    _sparse_copy(source, tmp_path / "filling.mp4")
    filling = load_title(str(tmp_path / "filling.mp4"), "filling", 1.0, filling=True)
    whole = load_title(source, "whole", 1.0)
    assert filling.init == whole.init and filling.plans == whole.plans
    assert len(filling.plans) >= 3
    assert filling.fragment(1).head == whole.fragment(1).head


def test_a_filling_fragmented_mp4_is_not_whole_yet():
    """Its moov has no sample tables (mvex): whatever fragments have come,
    its segments are not known until the last has."""
    source = make_mp4(extra=("-movflags", "frag_keyframe+empty_moov"))
    with pytest.raises(NotWholeYet, match="fragmented"):
        load_title(source, "filling", 1.0, filling=True)
    assert load_title(source, "whole", 1.0).plans      # whole, it is served
