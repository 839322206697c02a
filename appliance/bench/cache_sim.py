"""The eviction policies on a synthetic request trace (pure, deterministic).

A library of titles with sizes, a trace of plays drawn from a Zipf law, a
cache of a given capacity that admits every title played (whole, as a
complete fill would) and evicts with ``eviction.plan``. It reports the byte
hit ratio (bytes served from the cache / bytes played) and the hit ratio
(plays that found the whole title cached). ``kvod bench cache`` prints it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass

from appliance.cache import eviction
@dataclass(frozen=True)
class Library:
    """Title sizes in bytes, most popular first."""

    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)


def make_library(titles: int = 500, seed: int = 1, median_mb: float = 700,
                 sigma: float = 0.8) -> Library:
    """``titles`` sizes drawn from a log-normal law (VoD titles: trailers to
    films), in no relation to popularity."""
    rng = random.Random(seed)
    return Library(tuple(int(median_mb * 2**20 * math.exp(rng.gauss(0, sigma)))
                         for _ in range(titles)))


def zipf_trace(titles: int, requests: int, alpha: float = 0.8, seed: int = 2) -> list[int]:
    """``requests`` title indexes, title k played with probability ~ 1/(k+1)^alpha."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** alpha for k in range(titles)]
    cumulative = list(itertools.accumulate(weights))
    return [bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
            for _ in range(requests)]


@dataclass
class SimResult:
    """What one policy did on one trace."""

    policy: str
    requests: int
    byte_hit_ratio: float
    hit_ratio: float
    evictions: int
    max_used: int
    capacity: int


def simulate(library: Library, trace: list[int], capacity: int, policy: str,
             keep_fraction: float = 0.0) -> SimResult:
    """Play ``trace`` through a cache of ``capacity`` bytes under ``policy``;
    tail eviction keeps ``keep_fraction`` of each title."""
    cached: dict[int, int] = {}
    hits: dict[int, int] = {}
    last: dict[int, float] = {}
    priority: dict[int, float] = {}
    inflation = 0.0
    used = max_used = 0
    hit_bytes = played = whole_hits = evictions = 0
    for now, title in enumerate(trace):
        size = library.sizes[title]
        have = cached.get(title, 0)
        played += size
        hit_bytes += have
        whole_hits += have == size
        hits[title] = hits.get(title, 0) + 1
        last[title] = float(now)
        priority[title] = eviction.gdsf_priority(inflation, hits[title], size)
        need = size - have
        if need <= 0:
            continue
        if size > capacity:
            continue  # never admitted
        free = capacity - used
        if need > free:
            usages = [eviction.Usage(str(t), c, library.sizes[t], hits[t], last[t],
                                     priority[t], busy=t == title,
                                     keep=int(library.sizes[t] * keep_fraction))
                      for t, c in cached.items()]
            cuts, inflation = eviction.plan(usages, need - free, policy, inflation)
            for cut in cuts:
                t = int(cut.name)
                used -= cut.freed
                evictions += 1
                if cut.keep:
                    cached[t] = cut.keep
                else:
                    del cached[t]
            if capacity - used < need:
                continue  # could not make room (everything else busy)
        cached[title] = size
        used += need
        max_used = max(max_used, used)
        assert used <= capacity
    return SimResult(policy, len(trace), hit_bytes / played if played else 0.0,
                     whole_hits / len(trace) if trace else 0.0, evictions, max_used, capacity)


def run(titles: int = 500, requests: int = 20000, alpha: float = 0.8,
        cache_fraction: float = 0.10, keep_fraction: float = 0.0) -> dict:
    """Every policy on one Zipf trace over one library: a dict for JSON."""
    library = make_library(titles)
    trace = zipf_trace(titles, requests, alpha)
    capacity = int(library.total * cache_fraction)
    results = [simulate(library, trace, capacity, p, keep_fraction) for p in eviction.POLICIES]
    return {
        "titles": titles, "requests": requests, "zipf_alpha": alpha,
        "library_bytes": library.total, "capacity_bytes": capacity,
        "cache_fraction": cache_fraction, "keep_fraction": keep_fraction,
        "policies": {r.policy: {"byte_hit_ratio": round(r.byte_hit_ratio, 4),
                                "hit_ratio": round(r.hit_ratio, 4),
                                "evictions": r.evictions, "max_used_bytes": r.max_used}
                     for r in results},
    }
