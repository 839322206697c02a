"""Summaries the benchmarks print."""

from __future__ import annotations

from typing import Sequence, TypeVar

N = TypeVar("N", int, float)


def percentile(values: Sequence[N], q: float) -> N:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank rule
    (a value that was measured, never an interpolation); 0 when empty."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
