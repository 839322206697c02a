"""Random numbers read from the kernel in bulk (rtpengine.entropy)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpengine import entropy
from rtpengine.rtp import random_seq, random_ssrc, random_ts


@given(st.integers(1, 2**40))
def test_randbelow_stays_below(n):
    assert 0 <= entropy.randbelow(n) < n


def test_randbelow_refuses_an_empty_range():
    with pytest.raises(ValueError):
        entropy.randbelow(0)


def test_randbelow_is_uniform_over_a_range_that_is_no_power_of_two():
    # 3 values over one byte: without rejection 0 would come 86 times in
    # 256, the others 85; chi-square bound loose enough never to flake
    counts = Counter(entropy.randbelow(3) for _ in range(30000))
    assert set(counts) == {0, 1, 2}
    assert all(abs(c - 10000) < 600 for c in counts.values()), counts


def test_bytes_are_never_handed_out_twice():
    seen = {entropy.random_bytes(16) for _ in range(2000)}   # several refills
    assert len(seen) == 2000


def test_a_forked_child_draws_other_numbers_than_its_parent():
    entropy.random_bytes(1)                 # the parent has a buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, entropy.random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != entropy.random_bytes(32)
    assert len(child) == 32


def test_rtp_initial_values_are_in_their_ranges():
    for _ in range(1000):
        assert 1 <= random_ssrc() <= 0xFFFFFFFF
        assert 0 <= random_seq() <= 0xFFFF
        assert 0 <= random_ts() <= 0xFFFFFFFF
