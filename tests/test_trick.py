"""Trick-play hint files: keyframes only, faster or backwards, from the
title's own bytes (rtpengine.index.trick)."""

from __future__ import annotations

import os

import pytest

from appliance.cache.ingest import ingest_file
from catalog import open_catalog
from rtpengine.hintfile import REC_KEYFRAME, HintFile, HintHeader, HintRecord, write_hint_file
from rtpengine.index.trick import (SCALES, TS_PACKET, TrickError, keyframe_spans, trick_stream,
                                   write_trick_hints)


@pytest.fixture(scope="module")
def title(tmp_path_factory, ts_file):
    folder = tmp_path_factory.mktemp("trick")
    cat = open_catalog(str(folder / "c.db"))
    ingest_file(cat, str(folder), ts_file, "t", now=1.0)
    t = cat.get_title("t")
    cat.close()
    return t.media_path, t.tracks[0].hint_path


@pytest.fixture(scope="module")
def spans(title):
    media, hint = title
    fd = os.open(media, os.O_RDONLY)
    try:
        with HintFile(hint) as hints:
            return keyframe_spans(hints, fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _pusi_pid(data: bytes) -> tuple[bool, int]:
    return bool(data[1] & 0x40), (data[1] & 0x1F) << 8 | data[2]


def test_each_span_is_one_keyframe_access_unit_of_the_video_pid(title, spans):
    media = open(title[0], "rb").read()
    assert len(spans.spans) == 10                  # one keyframe a second, 10 s
    pid = _pusi_pid(media[spans.spans[0].start:])[1]
    for span in spans.spans:
        assert span.start % TS_PACKET == 0 and span.end % TS_PACKET == 0
        assert _pusi_pid(media[span.start:]) == (True, pid)
        # inside: no other PES of the video starts; at its end the next one does
        inner = [_pusi_pid(media[o:]) for o in range(span.start + TS_PACKET, span.end, TS_PACKET)]
        assert (True, pid) not in inner
        assert _pusi_pid(media[span.end:]) == (True, pid)
    assert [s.send_ns for s in spans.spans] == sorted(s.send_ns for s in spans.spans)
    assert spans.head and all(r.offset < spans.spans[0].start for r in spans.head)


@pytest.mark.parametrize("scale", SCALES)
def test_a_trick_stream_sends_every_keyframe_in_play_order_at_the_scale(spans, scale):
    trick = trick_stream(spans, scale)
    sends = [r.send_ns for r in trick.records]
    assert sends == sorted(sends)                   # one schedule, never back
    times = [t for _, t in trick.starts]
    assert times == sorted(times, reverse=scale < 0) and len(times) == len(spans.spans)
    covered = spans.spans[-1].send_ns - spans.spans[0].send_ns
    assert abs(sends[-1] - covered / abs(scale)) < 0.2e9
    for (record, t), nxt in zip(trick.starts, list(trick.starts[1:]) + [(len(sends), None)]):
        span = next(s for s in spans.spans if s.send_ns == t)
        recs = trick.records[record:nxt[0]]
        assert recs[0].offset == span.start and recs[0].flags & REC_KEYFRAME
        assert sum(r.length for r in recs) == span.end - span.start
        assert trick.title_time(record) == t
    # where a PLAY starts: the keyframe at or after (forwards), at or before (backwards)
    record, t = trick.start_for(4_500_000_000, scale)
    assert t == (5_000_000_000 if scale > 0 else 4_000_000_000)


def test_the_file_is_a_hint_file_over_the_same_media(tmp_path, spans, title):
    path = str(tmp_path / "track0.hint.scale4")
    trick = write_trick_hints(path, spans, 4)
    with HintFile(path) as hints:
        assert len(hints) == len(trick.records)
        assert hints.record(0) == trick.records[0]
        assert all(hints.record(i).offset + hints.record(i).length
                   <= os.path.getsize(title[0]) for i in range(len(hints)))


def test_no_keyframes_or_a_bad_scale_is_a_trick_error(tmp_path, spans):
    media = tmp_path / "m.ts"
    media.write_bytes(b"\x47\x00\x00\x10" + bytes(184))       # not a PES start
    hint = tmp_path / "h.hint"
    write_hint_file(hint, HintHeader(90000, 33, 1, 10), HintRecord(0, 188, 0, 0, 0, b"").pack())
    fd = os.open(media, os.O_RDONLY)
    try:
        with HintFile(hint) as hints, pytest.raises(TrickError, match="no keyframes"):
            keyframe_spans(hints, fd, 188)
    finally:
        os.close(fd)
    with pytest.raises(TrickError, match="not one of"):
        trick_stream(spans, 3)
