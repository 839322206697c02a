"""fetch_moov (appliance/cache/mp4_fill.py): what a remote MP4's DESCRIBE
asks the origin for before it can answer, against an origin in memory."""

from __future__ import annotations

import struct

import pytest
from twisted.internet import defer

from appliance.cache.fill import BadMedia
from appliance.cache.mp4_fill import fetch_moov
from appliance.cache.origin import Probe, Validator
from tests.helpers.titles import make_mp4


class MemoryOrigin:
    """Range requests answered from ``data``; each is remembered."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[tuple[int, int]] = []

    async def fetch(self, url, start, end, validator, sink, *, size, if_range=True) -> int:
        self.asked.append((start, end))
        sink(start, self.data[start:end])
        return end - start


def run(data: bytes, *, head: int = 32 << 10, tail_bytes: int = 64 << 10,
        ranges: bool = True):
    origin = MemoryOrigin(data)
    probe = Probe("http://o/t.mp4", len(data), Validator('"e"', None), data[:head], ranges)
    d = defer.ensureDeferred(fetch_moov(origin, probe, tail_bytes=tail_bytes))
    result = []
    d.addBoth(result.append)
    assert result, "fetch_moov waited on a memory origin"
    if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0], origin.asked


def test_moov_at_the_end_takes_one_request_from_the_header_after_mdat():
    data = open(make_mp4(), "rb").read()
    head, asked = run(data)
    assert head.moov.type == b"moov" and head.moov.end == len(data)
    assert asked == [(head.moov.start, len(data))]
    assert dict(head.pieces)[head.moov.start] == data[head.moov.start:]


def test_a_moov_larger_than_the_tail_asked_takes_a_second_request():
    data = open(make_mp4(), "rb").read()
    head, asked = run(data, tail_bytes=1024)
    start = head.moov.start
    assert asked == [(start, start + 1024), (start, head.moov.end)]


def test_moov_first_needs_no_request():
    data = open(make_mp4(faststart=True), "rb").read()
    head, asked = run(data, head=64 << 10)
    assert asked == [] and head.moov.start < 64 << 10


def test_an_origin_without_ranges_cannot_give_a_moov_at_the_end():
    data = open(make_mp4(), "rb").read()
    with pytest.raises(BadMedia, match="ignores Range"):
        run(data, ranges=False)


@pytest.mark.parametrize("edit, message", [
    ("stsz", "stsz"), ("size", "runs past"), ("nomoov", "no moov"), ("notrak", "no H.264"),
])
def test_a_lying_moov_is_415_with_the_reason(edit, message):
    data = bytearray(open(make_mp4(), "rb").read())
    at = data.rindex(b"moov") - 4
    if edit == "stsz":
        struct.pack_into(">I", data, data.index(b"stsz", at) + 12, 0x7FFFFFF)
    elif edit == "size":
        struct.pack_into(">I", data, at, len(data) - at + 1)
    elif edit == "nomoov":
        data[at + 4:at + 8] = b"free"
    else:
        for kind in (b"vide", b"soun"):
            data[data.index(kind, at):data.index(kind, at) + 4] = b"text"
    with pytest.raises(BadMedia, match=message) as caught:
        run(bytes(data))
    assert caught.value.status == 415
