"""Which cached bytes to give up when the cache needs room (sans-IO, pure).

Three policies rank the titles that may go; the lowest rank goes first:

- ``lru``: least recently played first (``last_access``);
- ``lfu``: fewest plays first (``hits``), the least recent among equals;
- ``gdsf``: Greedy-Dual-Size-Frequency (Cherkasova 1998) with a cost of 1:
  ``H = L + hits / size``, ``L`` being the H of the last title evicted
  (it ages what stays). Small, popular titles stay; one large title that
  was played once goes first. It maximises the number of plays served from
  the cache more than the bytes.

Pinned titles and titles being streamed (or filled) never go. Eviction
first takes tails: everything of a title beyond its ``keep`` bytes (the
first seconds, so a later viewer starts at once while the rest is fetched
again), in rank order; only when tails are not enough does it take whole
titles, again in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

POLICIES = ("lru", "lfu", "gdsf")
# GDSF's hits/size in plays per MiB, so H values stay readable
_GDSF_UNIT = 1 << 20


@dataclass(frozen=True)
class Usage:
    """One cached title as eviction sees it."""

    name: str
    cached: int              # bytes held now
    size: int                # bytes of the whole title
    hits: int = 0
    last_access: float = 0.0
    priority: float = 0.0    # GDSF's H, set at the title's last hit
    pinned: bool = False
    busy: bool = False       # streamed or filled right now
    keep: int = 0            # bytes at the front that tail eviction keeps


class Eviction(NamedTuple):
    """Cut ``name`` down to its first ``keep`` bytes (0: all of it goes)."""

    name: str
    keep: int
    freed: int


def gdsf_priority(inflation: float, hits: int, size: int) -> float:
    """GDSF's H for a title of ``size`` bytes played ``hits`` times."""
    return inflation + hits * _GDSF_UNIT / max(size, 1)


def rank(policy: str, usage: Usage) -> tuple:
    """The sort key of ``usage`` under ``policy``: lowest goes first."""
    if policy == "lru":
        return (usage.last_access, usage.name)
    if policy == "lfu":
        return (usage.hits, usage.last_access, usage.name)
    if policy == "gdsf":
        return (usage.priority, usage.last_access, usage.name)
    raise ValueError(f"unknown eviction policy {policy!r}; known: {', '.join(POLICIES)}")


def plan(usages: Iterable[Usage], need: int, policy: str,
         inflation: float = 0.0) -> tuple[list[Eviction], float]:
    """Evictions that free at least ``need`` bytes (fewer if that is all
    there is), and GDSF's new inflation value."""
    candidates = sorted((u for u in usages if not u.pinned and not u.busy and u.cached > 0),
                        key=lambda u: rank(policy, u))
    cuts: dict[str, int] = {}
    freed = 0
    for usage in candidates:
        if freed >= need:
            break
        keep = min(usage.keep, usage.cached)
        if usage.cached > keep:
            cuts[usage.name] = keep
            freed += usage.cached - keep
            if policy == "gdsf":
                inflation = max(inflation, usage.priority)
    for usage in candidates:
        if freed >= need:
            break
        kept = cuts.get(usage.name, usage.cached)
        if kept > 0:
            cuts[usage.name] = 0
            freed += kept
            if policy == "gdsf":
                inflation = max(inflation, usage.priority)
    by_name = {u.name: u for u in candidates}
    return ([Eviction(name, keep, by_name[name].cached - keep) for name, keep in cuts.items()],
            inflation)
