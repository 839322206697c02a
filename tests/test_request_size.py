"""The size of a fill's Range requests follows the origin's rate, within bounds."""

import pytest

from appliance.cache.request_size import RequestSize

MiB = 1 << 20


def test_starts_at_the_chunk():
    assert RequestSize(MiB).next() == MiB


def test_a_fast_origin_gets_larger_requests_up_to_the_most():
    size = RequestSize(MiB, most=16 * MiB, target=0.05)
    size.took(MiB, 0.01)                 # 100 MiB/s: 5 MiB in 50 ms
    assert size.next() == 5 * MiB
    for _ in range(20):
        size.took(16 * MiB, 0.008)       # 2 GiB/s
    assert size.next() == 16 * MiB


def test_a_slow_origin_keeps_the_chunk():
    size = RequestSize(MiB, target=0.05)
    size.took(MiB, 2.0)
    assert size.next() == MiB


def test_one_slow_answer_halves_the_rate_rather_than_resetting_it():
    size = RequestSize(MiB, most=64 * MiB, target=0.05)
    size.took(8 * MiB, 0.025)            # 320 MiB/s: 16 MiB
    assert size.next() == 16 * MiB
    size.took(MiB, 10.0)
    assert 7 * MiB < size.next() < 9 * MiB


def test_short_and_instant_answers_say_nothing():
    size = RequestSize(MiB)
    size.took(64 << 10, 0.0001)          # the tail
    size.took(4 * MiB, 0.0)
    assert size.rate is None and size.next() == MiB


def test_most_below_the_chunk_is_the_chunk():
    assert RequestSize(4 * MiB, most=MiB).most == 4 * MiB
    with pytest.raises(ValueError):
        RequestSize(0)
