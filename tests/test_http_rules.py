"""The HTTP download's pure rules: Range parsing, multipart layout,
conditional requests (RFC 9110), without a socket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from appliance.http.conditional import (Conditions, evaluate, http_date, if_range_holds,
                                        title_etag)
from appliance.http.ranges import (MAX_RANGES, FilePart, Unsatisfiable, multipart_body,
                                   parse_range, slice_pieces)

ETAG = '"abc"'
MODIFIED = http_date(1_700_000_000)


@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None),
    ("bytes=0-9", 100, [(0, 10)]),
    ("bytes=90-200", 100, [(90, 100)]),
    ("bytes=-10", 100, [(90, 100)]),
    ("bytes=-1000", 100, [(0, 100)]),    # the whole thing, still a 206 for caches
    ("bytes=0-", 100, [(0, 100)]),
    ("bytes=10-", 100, [(10, 100)]),
    ("bytes=0-0,-1", 100, [(0, 1), (99, 100)]),
    ("bytes= 1-2 , 5-6", 100, [(1, 3), (5, 7)]),
    ("bytes=5-1", 100, None),            # invalid: ignored, not 416
    ("items=0-1", 100, None),
    ("bytes=abc", 100, None),
    ("bytes=100-,0-4", 100, [(0, 5)]),   # the unsatisfiable one is dropped
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200,150-", "bytes=-0"])
def test_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_too_many_ranges_are_ignored():
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert parse_range(header, 1000) is None
    assert len(parse_range("bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES)),
                           1000)) == MAX_RANGES


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.integers(1, 10**12))
def test_parse_range_never_raises_anything_else(header, size):
    try:
        ranges = parse_range(header, size)
    except Unsatisfiable:
        return
    if ranges is not None:
        assert 1 <= len(ranges) <= MAX_RANGES
        assert all(0 <= s < e <= size for s, e in ranges)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 6000)),
                                      min_size=1, max_size=5))
def test_ranges_pick_the_bytes_python_slicing_does(size, pairs):
    data = bytes(i % 251 for i in range(size))
    header = "bytes=" + ",".join(f"{a}-{b}" for a, b in pairs)
    try:
        ranges = parse_range(header, size)
    except Unsatisfiable:
        assert all(a >= size for a, b in pairs if a <= b)
        return
    if any(a > b for a, b in pairs):
        assert ranges is None
        return
    expected = [(a, min(b + 1, size)) for a, b in pairs if a < size]
    assert ranges == expected
    for (s, e), (a, b) in zip(ranges, [p for p in pairs if p[0] < size]):
        assert data[s:e] == data[a:b + 1]


def test_multipart_body_length_and_layout():
    pieces, length = multipart_body([(0, 10), (50, 60)], 100, "video/mp2t", "XYZ")
    assert [p for p in pieces if isinstance(p, FilePart)] == [FilePart(0, 10), FilePart(50, 60)]
    data = bytes(range(100))
    body = b"".join(p if isinstance(p, bytes) else data[p.start:p.end] for p in pieces)
    assert len(body) == length
    assert b"Content-Range: bytes 50-59/100\r\n\r\n" + data[50:60] in body
    assert body.endswith(b"\r\n--XYZ--\r\n")


@pytest.mark.parametrize("conditions,expected", [
    (Conditions(), (None, True)),
    (Conditions(if_none_match=ETAG), (304, False)),
    (Conditions(if_none_match='W/"abc"'), (304, False)),      # weak comparison
    (Conditions(if_none_match='"x", "abc"'), (304, False)),
    (Conditions(if_none_match="*"), (304, False)),
    (Conditions(if_none_match='"x"'), (None, True)),
    (Conditions(if_modified_since=MODIFIED), (304, False)),
    (Conditions(if_modified_since=http_date(1_600_000_000)), (None, True)),
    # If-None-Match wins over If-Modified-Since
    (Conditions(if_none_match='"x"', if_modified_since=MODIFIED), (None, True)),
    (Conditions(if_match='"x"'), (412, False)),
    (Conditions(if_match=ETAG), (None, True)),
    (Conditions(if_unmodified_since=http_date(1_600_000_000)), (412, False)),
    (Conditions(if_range=ETAG), (None, True)),
    (Conditions(if_range='"old"'), (None, False)),
    (Conditions(if_range='W/"abc"'), (None, False)),          # strong comparison only
    (Conditions(if_range=MODIFIED), (None, True)),
    (Conditions(if_range=http_date(1_700_000_001)), (None, False)),
])
def test_evaluate(conditions, expected):
    decision = evaluate("GET", conditions, ETAG, MODIFIED)
    assert (decision.status, decision.use_range) == expected


@settings(max_examples=300, deadline=None)
@given(st.builds(Conditions, *[st.one_of(st.none(), st.text(max_size=40),
                                          st.sampled_from([ETAG, "*", MODIFIED, '"x"']))
                               for _ in range(5)]))
def test_evaluate_total(conditions):
    decision = evaluate("GET", conditions, ETAG, MODIFIED)
    assert decision.status in (None, 304, 412)
    assert not (decision.status and decision.use_range)


def test_if_range_without_last_modified():
    assert not if_range_holds(MODIFIED, ETAG, None)


def test_etag_names_the_version():
    a = title_etag("a", 1.0, 100, '"o1"', None)
    assert a.startswith('"') and a.endswith('"') and not a.startswith("W/")
    assert a == title_etag("a", 1.0, 100, '"o1"', None)
    assert a != title_etag("a", 1.0, 100, '"o2"', None)
    assert a != title_etag("a", 2.0, 100, '"o1"', None)


def test_http_config_section():
    from appliance.config import Config, ConfigError
    default = Config()
    assert default.http.listen == "none" and not default.http.enabled
    assert default.http.target_duration == 6.0
    on = Config.from_dict({"http": {"listen": "tcp:8080:interface=127.0.0.1",
                                    "target_duration": 2}})
    assert on.http.enabled and on.http.target_duration == 2.0
    for bad, key in (({"listen": "8080"}, "http.listen"),
                     ({"target_duration": 0.5}, "http.target_duration"),
                     ({"lisen": "none"}, "http.lisen")):
        with pytest.raises(ConfigError) as caught:
            Config.from_dict({"http": bad})
        assert caught.value.key == key


_pieces = st.lists(st.one_of(st.binary(min_size=0, max_size=6),
                             st.tuples(st.integers(0, 40), st.integers(0, 8)).map(
                                 lambda t: FilePart(t[0], t[0] + t[1]))), max_size=8)


@settings(max_examples=300, deadline=None)
@given(_pieces, st.integers(0, 80), st.integers(0, 80))
def test_a_slice_of_pieces_is_that_slice_of_their_bytes(pieces, a, b):
    # a file whose byte at offset i is i: a FilePart's bytes are its offsets
    file = bytes(range(256))

    def flat(ps):
        return b"".join(p if isinstance(p, bytes) else file[p.start:p.end] for p in ps)
    start, end = min(a, b), max(a, b)
    sliced = slice_pieces(pieces, start, end)
    assert flat(sliced) == flat(pieces)[start:end]
    assert all((len(p) if isinstance(p, bytes) else p.end - p.start) > 0 for p in sliced)
