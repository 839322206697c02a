"""Arithmetic on sets of byte ranges, as the catalog stores them.

A range set is a sorted list of disjoint, non-adjacent ``(start, end)``
pairs, end exclusive (what ``Catalog.cached_ranges`` returns). Pure
functions: the fill planner, the cache and the catalog share them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

Range = tuple[int, int]


def normalize(ranges: Iterable[Range]) -> list[Range]:
    """Sort ``ranges``, drop empty ones, and merge those that overlap or touch."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def add(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """``ranges`` with ``[start, end)`` added."""
    return normalize([*ranges, (start, end)])


def union(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Every byte in ``a`` or ``b``."""
    return normalize([*a, *b])


def missing(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """The parts of ``[start, end)`` that ``ranges`` (normalized) does not hold."""
    out: list[Range] = []
    at = start
    for r_start, r_end in ranges:
        if r_end <= at:
            continue
        if r_start >= end:
            break
        if r_start > at:
            out.append((at, r_start))
        at = max(at, r_end)
        if at >= end:
            break
    if at < end:
        out.append((at, end))
    return out


def subtract(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """The bytes of ``a`` that are not in ``b`` (both normalized)."""
    out: list[Range] = []
    for start, end in a:
        out.extend(missing(b, start, end))
    return out


def intersect(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """The parts of ``ranges`` inside ``[start, end)``."""
    return [(max(s, start), min(e, end)) for s, e in ranges if s < end and e > start]


def containing(ranges: Sequence[Range], offset: int) -> Range | None:
    """The range that holds byte ``offset``, or None."""
    for start, end in ranges:
        if start <= offset < end:
            return (start, end)
        if start > offset:
            break
    return None


def end_from(ranges: Sequence[Range], offset: int) -> int:
    """Where the bytes held contiguously from ``offset`` end (``offset`` if none)."""
    found = containing(ranges, offset)
    return found[1] if found else offset


def total(ranges: Iterable[Range]) -> int:
    """How many bytes ``ranges`` (normalized) hold."""
    return sum(end - start for start, end in ranges)
