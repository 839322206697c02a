"""The fill planner: every byte asked for exactly once, viewers first."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cache.fill_plan import back_off, next_request
from catalog.byte_ranges import add, normalize, total


@settings(max_examples=200)
@given(size=st.integers(1, 5000), chunk=st.integers(1, 700),
       held=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), max_size=5),
       wants=st.lists(st.integers(-10, 5010), max_size=4),
       workers=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_requests_cover_every_missing_byte_once(size, chunk, held, wants, workers, seed):
    rng = random.Random(seed)
    held = normalize([(s, min(e, size)) for s, e in held if s < size])
    start_held = total(held)
    inflight: list[tuple[int, int]] = []
    asked = 0
    for _ in range(10_000):
        while len(inflight) < workers:
            req = next_request(size, chunk, held, inflight, wants)
            if req is None:
                break
            start, end = req
            assert 0 <= start < end <= size and end - start <= chunk
            for s, e in [*held, *inflight]:
                assert end <= s or start >= e, "asked twice for a byte"
            inflight.append(req)
            asked += end - start
        if not inflight:
            break
        done = inflight.pop(rng.randrange(len(inflight)))
        held = add(held, *done)
    assert held == [(0, size)]
    assert asked == size - start_held


def test_wants_come_first_then_front_to_back():
    held = [(0, 100)]
    assert next_request(1000, 50, held, [], [500]) == (500, 550)
    assert next_request(1000, 50, held, [(500, 550)], [500]) == (550, 600)
    assert next_request(1000, 50, held, [], [50]) == (100, 150)  # the want is held: its gap
    assert next_request(1000, 50, held, []) == (100, 150)
    assert next_request(1000, 50, [(0, 1000)], []) is None
    assert next_request(1000, 50, held, [], [2000, -1]) == (100, 150)  # out of range: ignored
    with pytest.raises(ValueError):
        next_request(10, 0, [], [])


def test_back_off_doubles_up_to_the_most():
    assert [back_off(n, 0.5, 5) for n in range(6)] == [0, 0.5, 1, 2, 4, 5]
    assert back_off(10_000, 0.5, 5) == 5
