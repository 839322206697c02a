"""Which bytes of a title to ask the origin for next (sans-IO, pure).

The fill keeps what the file holds (``held``) and what requests in flight
will bring (``inflight``); the plan never asks for a byte in either, so
however many viewers share a fill, each byte is fetched once. Viewers'
needs come first: ``wants`` lists media offsets, most urgent first (a
viewer that seeked ahead, a viewer waiting at the edge of the fill); the
bytes from each want on are asked for before anything else. The rest is
filled front to back, where the next viewer will start.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from catalog.byte_ranges import Range, missing, normalize


def next_request(size: int, chunk: int, held: Sequence[Range], inflight: Iterable[Range],
                 wants: Sequence[int] = ()) -> Optional[Range]:
    """The next ``[start, end)`` to fetch, at most ``chunk`` bytes, or None
    when every byte is held or on its way."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    taken = normalize([*held, *inflight])
    for want in (*wants, 0):
        if not 0 <= want < size:
            continue
        gaps = missing(taken, want, size)
        if gaps:
            start, end = gaps[0]
            return start, min(end, start + chunk)
    return None


def back_off(failures: int, first: float, most: float) -> float:
    """Seconds to wait before the next try after ``failures`` failures in a
    row: ``first``, doubled each time, at most ``most``."""
    if failures <= 0:
        return 0.0
    return min(first * 2 ** min(failures - 1, 62), most)
