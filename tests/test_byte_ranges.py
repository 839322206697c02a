"""Byte range arithmetic against a model (a set of byte offsets), and the
catalog's cache queries on a real in-memory catalog."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import (CatalogError, TitleNotFound, cache_entries, get_meta, keep_cached_below,
                     open_catalog, set_meta)
from catalog import byte_ranges as br

spans = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=8)


def model(ranges) -> set[int]:
    return {b for s, e in ranges for b in range(s, e)}


def well_formed(ranges) -> bool:
    return all(s < e for s, e in ranges) and all(
        a[1] < b[0] for a, b in zip(ranges, ranges[1:]))


@settings(max_examples=200)
@given(a=spans, b=spans, start=st.integers(0, 60), end=st.integers(0, 60), at=st.integers(0, 61))
def test_operations_match_the_set_model(a, b, start, end, at):
    na, nb = br.normalize(a), br.normalize(b)
    assert well_formed(na) and model(na) == model(a)
    assert br.total(na) == len(model(a))
    assert br.union(na, nb) == br.normalize(a + b)
    assert model(br.subtract(na, nb)) == model(a) - model(b)
    assert well_formed(br.subtract(na, nb))
    window = set(range(start, end))
    assert model(br.missing(na, start, end)) == window - model(a)
    assert well_formed(br.missing(na, start, end))
    assert model(br.intersect(na, start, end)) == window & model(a)
    assert br.add(na, start, end) == br.normalize(a + [(start, end)])
    found = br.containing(na, at)
    assert (found is not None) == (at in model(a))
    end_at = br.end_from(na, at)
    assert set(range(at, end_at)) <= model(a) and end_at not in model(a)


def test_examples():
    assert br.normalize([(5, 10), (0, 5), (12, 12), (11, 13)]) == [(0, 10), (11, 13)]
    assert br.missing([(0, 10), (20, 30)], 5, 25) == [(10, 20)]
    assert br.end_from([(0, 10), (10, 20)], 0) == 10  # not normalized: as stored
    assert br.end_from(br.normalize([(0, 10), (10, 20)]), 0) == 20


@pytest.fixture
def cat():
    with open_catalog(None) as c:
        c.add_title("a", container="mpegts", size=1000, state="partial", now=1.0)
        c.add_title("b", container="mpegts", size=500, state="complete", pinned=True, now=2.0)
        c.add_title("r", container="mpegts", state="remote", origin_url="http://o/r", now=3.0)
        yield c


def test_cache_entries_sum_the_ranges(cat):
    cat.add_cached_range("a", 0, 100)
    cat.add_cached_range("a", 500, 600)
    cat.add_cached_range("b", 0, 500)
    cat.record_hit("b", now=9.0)
    entries = {e.name: e for e in cache_entries(cat)}
    assert [e.name for e in cache_entries(cat)] == ["a", "b", "r"]
    assert (entries["a"].cached, entries["a"].percent) == (200, 20.0)
    assert (entries["b"].cached, entries["b"].pinned, entries["b"].hits) == (500, True, 1)
    assert (entries["r"].cached, entries["r"].percent, entries["r"].size) == (0, 0.0, None)
    assert cache_entries(cat, name="b") == [entries["b"]]
    assert cache_entries(cat, name="nope") == []


def test_keep_cached_below_cuts_the_tail(cat):
    cat.add_cached_range("a", 0, 300)
    cat.add_cached_range("a", 500, 1000)
    assert keep_cached_below(cat, "a", 200) == 200
    assert cat.cached_ranges("a") == [(0, 200)]
    assert keep_cached_below(cat, "a", 0) == 0
    assert cat.cached_ranges("a") == []
    with pytest.raises(TitleNotFound):
        keep_cached_below(cat, "nope", 0)
    with pytest.raises(CatalogError):
        keep_cached_below(cat, "a", -1)


def test_meta_values_persist(tmp_path):
    path = tmp_path / "c.db"
    with open_catalog(path) as c:
        assert get_meta(c, "gdsf.inflation", 7.0) == 7.0
        set_meta(c, "gdsf.inflation", 2.5)
        set_meta(c, "gdsf.inflation", 3.5)
    with open_catalog(path) as c:
        assert get_meta(c, "gdsf.inflation") == 3.5
