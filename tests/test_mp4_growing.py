"""The growing MP4 index (rtpengine/index/mp4_growing.py): a file fed front to
back, once its moov is there, gives the whole file's records, each only once
its bytes are there; the moov is located from the bytes known so far."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from rtpengine.hintfile import RECORD_SIZE, REC_BLOB, HintFile, HintRecord
from rtpengine.index import mp4_growing
from rtpengine.index.errors import MediaError
from rtpengine.index.file_reads import FileBytes
from rtpengine.index.mp4 import index_mp4
from rtpengine.index.mp4_boxes import Box
from rtpengine.index.mp4_growing import GrowingMp4Index, locate_moov
from tests.helpers.mp4_sparse import headers_and_moov
from tests.helpers.titles import make_mp4

FRAGMENTED = dict(extra=("-movflags", "frag_keyframe+empty_moov"))
KINDS = {"moov_last": dict(), "moov_first": dict(faststart=True), "fragmented": FRAGMENTED,
         "hevc": dict(video="hevc")}


def whole_records(path: str, tmp_path) -> tuple[list[list[HintRecord]], list[bytes]]:
    """The records of index_mp4 and the blob area of each track."""
    index = index_mp4(path, lambda i: tmp_path / f"whole{i}.hint")
    records, blobs = [], []
    for i in range(len(index.tracks)):
        hints = HintFile(tmp_path / f"whole{i}.hint")
        raw = hints.records_bytes()
        records.append([HintRecord.unpack_from(raw, k) for k in range(0, len(raw), RECORD_SIZE)])
        with open(tmp_path / f"whole{i}.hint", "rb") as f:
            f.seek(hints.header.blob_offset)
            blobs.append(f.read(hints.header.blob_size))
    return records, blobs


def grow(data: bytes, buf, ix: GrowingMp4Index, step: int) -> list[list[HintRecord]]:
    """Feed ``ix`` ``step`` bytes more at a time; every record handed out
    points at bytes there (the prefix, or the moov fetched first)."""
    got: list[list[HintRecord]] = [[] for _ in ix.tracks()]
    upto = 0
    for _ in range(len(data) // step + 2):
        upto = min(len(data), upto + step)
        buf[:upto] = data[:upto]
        for i, new in enumerate(ix.feed(upto)):
            for k in range(0, len(new), RECORD_SIZE):
                rec = HintRecord.unpack_from(new, k)
                assert rec.offset + rec.length <= upto or \
                    ix.moov.start <= rec.offset < ix.moov.end
                got[i].append(rec)
        if ix.complete:
            break
    assert ix.complete
    return got


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_grown_records_are_the_whole_files_with_sets_in_the_media(kind, tmp_path):
    """With sets_from_media, the parameter-set records point at the sets'
    bytes in the moov instead of a blob area: the same bytes go out."""
    path = make_mp4(**KINDS[kind])
    data = open(path, "rb").read()
    want, blobs = whole_records(path, tmp_path)
    buf = headers_and_moov(data)
    with GrowingMp4Index(buf, len(buf), "grow", sets_from_media=True) as ix:
        assert ix.fragmented == (kind == "fragmented")
        got = grow(data, buf, ix, 7919)
        assert [t.records for t in ix.tracks()] == [len(w) for w in want]
    for track, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            assert not a.flags & REC_BLOB
            assert (a.length, a.rtp_ts, a.send_ns, a.flags, a.prefix) == \
                (b.length, b.rtp_ts, b.send_ns, b.flags & ~REC_BLOB, b.prefix)
            src = blobs[track][b.offset:b.offset + b.length] if b.flags & REC_BLOB \
                else data[b.offset:b.offset + b.length]
            assert data[a.offset:a.offset + a.length] == src


def test_a_fragmented_file_grows_as_the_whole_files_index(tmp_path):
    """Fragment by fragment, blob records and all, then the same hint file."""
    path = make_mp4(**FRAGMENTED)
    data = open(path, "rb").read()
    want, _ = whole_records(path, tmp_path)
    buf = headers_and_moov(data)
    with GrowingMp4Index(buf, len(buf), "grow") as ix:
        got = grow(data, buf, ix, 30011)
        assert got == want
        tracks = ix.tracks()
        ix.write_hints(0, tmp_path / "grown.hint",
                       b"".join(r.pack() for r in got[0]))
    assert tracks == list(index_mp4(path, lambda i: tmp_path / f"again{i}.hint").tracks)
    with open(tmp_path / "grown.hint", "rb") as a, open(tmp_path / "whole0.hint", "rb") as b:
        assert a.read() == b.read()


def test_a_small_window_reads_the_file_through_pread(tmp_path, monkeypatch):
    """Read from the file (never mapped) a few pages at a time: the scratch
    window slides, and the records stay the whole file's."""
    monkeypatch.setattr(mp4_growing, "WINDOW", 64 << 10)
    path = make_mp4()
    data = open(path, "rb").read()
    want, _ = whole_records(path, tmp_path)
    sparse = tmp_path / "sparse.mp4"
    sparse.write_bytes(headers_and_moov(data))
    fd = os.open(sparse, os.O_RDWR)
    try:
        class Writer:
            def __setitem__(self, key, value):
                os.pwrite(fd, value, key.start or 0)
        with GrowingMp4Index(FileBytes(fd, str(sparse)), len(data), "pread") as ix:
            assert grow(data, Writer(), ix, 50021) == want
    finally:
        os.close(fd)


def test_a_sample_larger_than_the_window_is_a_media_error(monkeypatch):
    monkeypatch.setattr(mp4_growing, "WINDOW", 4096)
    data = open(make_mp4(), "rb").read()
    buf = headers_and_moov(data)
    with GrowingMp4Index(buf, len(buf), "big") as ix:
        buf[:] = data
        with pytest.raises(MediaError, match="more than 4096 bytes"):
            ix.feed(len(data))


def test_the_moov_is_located_from_the_head_then_the_tail():
    data = open(make_mp4(), "rb").read()
    size = len(data)
    need = locate_moov([(0, data[:4096])], size, "x")
    assert need[0] > 4096 and need[1] == need[0] + 16   # the header after the mdat
    need = locate_moov([(0, data[:4096]), (need[0], data[need[0]:need[0] + 16])], size, "x")
    moov = locate_moov([(0, data[:4096]), (need[0], data[need[0]:need[1]])], size, "x")
    assert isinstance(moov, Box) and moov.type == b"moov" and moov.end == size
    fast = open(make_mp4(faststart=True), "rb").read()
    assert locate_moov([(0, fast[:1 << 20])], len(fast), "x").type == b"moov"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:8] + d[8:].replace(b"moov", b"free"), "no moov"),
    (lambda d: struct.pack(">I", 1 << 31) + d[4:], "runs past"),
    (lambda d: struct.pack(">I", 3) + d[4:], "smaller than its header"),
])
def test_lying_top_level_boxes_are_media_errors(mutate, message):
    data = mutate(open(make_mp4(faststart=True), "rb").read())
    with pytest.raises(MediaError, match=message):
        for _ in range(100):
            found = locate_moov([(0, data)], len(data), "x")
            assert not isinstance(found, Box)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 1 << 40), st.integers(0, 300))
def test_locate_moov_on_random_bytes(head, size, cut):
    """Random heads: a moov box, a range to fetch inside the file, or a
    MediaError; the range always moves past what is known."""
    size = max(size, len(head))
    try:
        found = locate_moov([(0, head[:cut])], size, "rnd")
    except MediaError:
        return
    if isinstance(found, Box):
        assert found.type == b"moov" and found.end <= size
    else:
        start, end = found
        assert 0 <= start < end <= size


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1,
                max_size=8), st.sampled_from(["moov_last", "fragmented"]))
@example([(3, 0)], "moov_last")     # the first box's size 0: "to the end of the file"
@example([(3, 1)], "moov_last")     # size 1: a 64-bit size follows (here a lying one)
def test_flipped_bytes_grow_records_or_media_errors(flips, kind):
    """Byte flips anywhere (moov, moofs, samples): the growing index gives
    records pointing inside the file or a MediaError, never anything else."""
    data = bytearray(open(make_mp4(**KINDS[kind]), "rb").read())
    for at, value in flips:
        data[at % len(data)] = value
    data = bytes(data)
    buf = headers_and_moov(data)
    try:
        with GrowingMp4Index(buf, len(buf), "flip", sets_from_media=True) as ix:
            rng = random.Random(len(data))
            upto = 0
            for _ in range(400):
                upto = min(len(data), upto + rng.randrange(1, 200_000))
                buf[:upto] = data[:upto]
                for new in ix.feed(upto):
                    for k in range(0, len(new), RECORD_SIZE):
                        rec = HintRecord.unpack_from(new, k)
                        assert rec.offset + rec.length <= len(data)
                if ix.complete or upto == len(data):
                    break
    except MediaError:
        pass
