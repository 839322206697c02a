"""The start of a play from npt 0 is searched once per hint file version:
the next stream of the same title gets it without reading, a replaced or
rewritten hint file is searched again, other times are always searched,
and the memory is bounded."""

from __future__ import annotations

import os
from types import SimpleNamespace

from appliance.media.start_points import StartPoints
from appliance.media.udp import UdpMediaStream
from rtpengine.hintfile import REC_KEYFRAME, HintFile, HintRecord
from tests.helpers.engine import MS, chunk_records, write_hints


class _Stream:
    """What the keyframe lookup reads of a UdpMediaStream: its hints, its
    fill and trick state, and the backend's start points."""

    _keyframe_at_or_before = UdpMediaStream._keyframe_at_or_before
    _search = UdpMediaStream._search

    def __init__(self, path: str, points: StartPoints):
        self.hints = HintFile(path)
        self.fill = self._trick = None
        self.backend = SimpleNamespace(start_points=points)


def _late_keyframe(path) -> str:
    """Three records before the first keyframe, all at time 0."""
    recs = [HintRecord(i * 1316, 1316, 0, 0, REC_KEYFRAME if i == 3 else 0, b"")
            for i in range(4)]
    recs += [HintRecord((4 + i) * 1316, 1316, 0, (i + 1) * 5 * MS, 0, b"") for i in range(20)]
    return write_hints(path, recs)


def test_the_start_is_searched_once_per_hint_file(tmp_path):
    path = _late_keyframe(tmp_path / "t.hint")
    points = StartPoints()
    first = _Stream(path, points)
    assert first._keyframe_at_or_before(0) == (3, 0) == (first.hints.keyframe_at_or_before(0),
                                                         0)
    assert len(points) == 1
    # the next viewer's reader does not search (nor read its records)
    second = _Stream(path, points)
    second.hints.keyframe_at_or_before = None
    second.hints.record = None
    assert second._keyframe_at_or_before(0) == (3, 0)
    # other times are searched by each reader
    assert first._keyframe_at_or_before(10 * MS) == (3, 0)
    assert len(points) == 1


def test_a_replaced_hint_file_is_searched_again(tmp_path):
    path = _late_keyframe(tmp_path / "t.hint")
    points = StartPoints()
    assert _Stream(path, points)._keyframe_at_or_before(0) == (3, 0)
    os.unlink(path)         # a new index of the title (its first record a keyframe)
    write_hints(path, chunk_records(100 * 1316, 0, gap_ns=5 * MS))
    assert _Stream(path, points)._keyframe_at_or_before(0) == (0, 0)
    assert len(points) == 2


def test_start_points_are_bounded():
    points = StartPoints(limit=2)
    points.remember("a", (1, 0))
    points.remember("b", (2, 0))
    assert points.remember("c", (3, 0)) == (3, 0)
    assert len(points) == 1 and points.get("a") is None and points.get("c") == (3, 0)
