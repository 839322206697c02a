"""Eviction policies, pure: who goes first, what never goes, and the policies
on a synthetic Zipf trace."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.bench import cache_sim
from appliance.cache.eviction import POLICIES, Eviction, Usage, gdsf_priority, plan

MB = 1 << 20


def names(cuts: list[Eviction]) -> list[str]:
    return [c.name for c in cuts]


def test_lru_evicts_the_least_recently_played():
    usages = [Usage("a", 10, 10, hits=9, last_access=3.0), Usage("b", 10, 10, hits=1,
              last_access=5.0), Usage("c", 10, 10, hits=5, last_access=1.0)]
    assert names(plan(usages, 15, "lru")[0]) == ["c", "a"]


def test_lfu_evicts_the_least_played_then_the_least_recent():
    usages = [Usage("a", 10, 10, hits=9, last_access=3.0), Usage("b", 10, 10, hits=1,
              last_access=5.0), Usage("c", 10, 10, hits=1, last_access=1.0)]
    assert names(plan(usages, 15, "lfu")[0]) == ["c", "b"]


def test_gdsf_keeps_small_popular_titles_and_ages_with_inflation():
    big_once = Usage("big", 4000 * MB, 4000 * MB, hits=1, last_access=9.0,
                     priority=gdsf_priority(0, 1, 4000 * MB))
    small_hot = Usage("small", 100 * MB, 100 * MB, hits=3, last_access=1.0,
                      priority=gdsf_priority(0, 3, 100 * MB))
    cuts, inflation = plan([big_once, small_hot], 50 * MB, "gdsf")
    assert names(cuts) == ["big"]  # LRU would take "small"
    assert names(plan([big_once, small_hot], 50 * MB, "lru")[0]) == ["small"]
    assert inflation == big_once.priority > 0
    # a title played after that starts above what was evicted
    assert gdsf_priority(inflation, 1, 4000 * MB) > big_once.priority


@pytest.mark.parametrize("policy", POLICIES)
def test_pinned_and_busy_titles_never_go(policy):
    usages = [Usage("pinned", 100, 100, pinned=True), Usage("busy", 100, 100, busy=True),
              Usage("free", 100, 100)]
    cuts, _ = plan(usages, 1000, policy)
    assert cuts == [Eviction("free", 0, 100)]  # all it can, short of the need


@pytest.mark.parametrize("policy", POLICIES)
def test_tails_go_before_whole_titles(policy):
    usages = [Usage("a", 100, 100, last_access=1, keep=20),
              Usage("b", 100, 100, last_access=2, keep=30),
              Usage("c", 15, 100, last_access=0, keep=20)]  # only its prefix is held
    cuts, _ = plan(usages, 150, policy)
    assert sorted(cuts) == [("a", 20, 80), ("b", 30, 70)]
    cuts, _ = plan(usages, 170, policy)  # tails free 150: then whole titles
    freed = sum(c.freed for c in cuts)
    assert freed >= 170 and any(c.keep == 0 for c in cuts)


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown eviction policy"):
        plan([Usage("a", 1, 1)], 1, "random")


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICIES),
       sizes=st.lists(st.integers(1, 100), min_size=1, max_size=12),
       trace=st.lists(st.integers(0, 11), min_size=1, max_size=80),
       capacity=st.integers(50, 400), keep=st.sampled_from([0.0, 0.1, 0.5]))
def test_simulated_cache_never_exceeds_its_capacity(policy, sizes, trace, capacity, keep):
    library = cache_sim.Library(tuple(sizes))
    trace = [t % len(sizes) for t in trace]
    result = cache_sim.simulate(library, trace, capacity, policy, keep)
    assert result.max_used <= capacity
    assert 0 <= result.hit_ratio <= result.byte_hit_ratio + 1 and 0 <= result.byte_hit_ratio <= 1


def test_policies_on_a_zipf_trace_behave_as_documented():
    """Zipf(0.8), 500 titles, the cache at 10% of the library."""
    result = cache_sim.run(titles=500, requests=6000)
    p = result["policies"]
    # a static popularity law: frequency beats recency, in bytes and in plays
    assert p["lfu"]["byte_hit_ratio"] > p["lru"]["byte_hit_ratio"]
    assert p["lfu"]["hit_ratio"] > p["lru"]["hit_ratio"]
    # size-aware: the most plays served whole, not the most bytes
    assert p["gdsf"]["hit_ratio"] >= max(p["lru"]["hit_ratio"], p["lfu"]["hit_ratio"]) - 0.01
    assert p["gdsf"]["byte_hit_ratio"] < p["lfu"]["byte_hit_ratio"]
    for figures in p.values():
        assert figures["max_used_bytes"] <= result["capacity_bytes"]
        assert 0.2 < figures["byte_hit_ratio"] < 0.8


# -- the quota on a real catalog (issue 11) -------------------------------------------------


def _catalog_with(tmp_path, titles: dict[str, int]):
    from catalog import open_catalog
    cat = open_catalog(str(tmp_path / "catalog.db"))
    for i, (name, size) in enumerate(titles.items()):
        cat.add_title(name, container="mpegts", state="complete", now=float(i), size=size,
                      media_path=None, folder=None, tracks=[])
        cat.add_cached_range(name, 0, size)
    return cat


@pytest.mark.parametrize("ignore_quota", [False, True], ids=["quota", "disk-full"])
def test_make_room_evicts_nothing_when_eviction_cannot_make_enough(tmp_path, ignore_quota):
    from appliance.cache.quota import CacheFull, CacheQuota
    cat = _catalog_with(tmp_path, {"a": 3 * MB, "b": 3 * MB})
    cat.set_pinned("b", True)
    quota = CacheQuota(cat, max_bytes=8 * MB)
    # quota: 6 MiB more needs 4 freed; disk: 5 MiB to free. Only a (3 MiB)
    # may go, which is not enough: a stays
    with pytest.raises(CacheFull, match="nothing was evicted"):
        quota.make_room(5 * MB if ignore_quota else 6 * MB, ignore_quota=ignore_quota)
    assert cat.cached_bytes("a") == 3 * MB and cat.get_title("a").state == "complete"
    # enough with a gone: a goes, as it must
    assert quota.make_room(2 * MB if ignore_quota else 4 * MB,
                           ignore_quota=ignore_quota) == 3 * MB
    assert cat.cached_bytes("a") == 0
    cat.close()


def test_make_room_never_gives_up_the_bytes_of_the_title_it_is_for(tmp_path):
    from appliance.cache.quota import CacheQuota
    # b, partial, is the least recently played: LRU would take it first
    cat = _catalog_with(tmp_path, {"b": 1 * MB, "a": 3 * MB})
    cat.set_state("b", "partial")
    cat.record_hit("b", now=10.0)
    cat.record_hit("a", now=20.0)
    quota = CacheQuota(cat, max_bytes=5 * MB)
    # room for b's other 2 MiB: 1 MiB must go, and it must not be b's own
    assert quota.make_room(2 * MB, for_title="b") == 3 * MB
    assert cat.cached_bytes("b") == 1 * MB and cat.cached_bytes("a") == 0
    cat.close()


def test_plays_are_counted_in_memory_and_written_before_eviction_ranks_them(tmp_path):
    from appliance.cache.quota import HIT_FLUSH_SECONDS, CacheQuota
    cat = _catalog_with(tmp_path, {"a": 3 * MB, "b": 3 * MB})
    scheduled = []
    quota = CacheQuota(cat, max_bytes=7 * MB,
                       schedule=lambda delay, call: scheduled.append((delay, call)))
    quota.on_hit("a", 30.0)
    quota.on_hit("a", 40.0)
    # one timer for the batch; nothing written yet (a DESCRIBE writes nothing)
    assert [d for d, _ in scheduled] == [HIT_FLUSH_SECONDS]
    assert cat.get_title("a").hits == 0
    # eviction ranks with them: b, never played, is the least recent and goes
    assert quota.make_room(2 * MB) == 3 * MB
    assert cat.cached_bytes("b") == 0
    assert (cat.get_title("a").hits, cat.get_title("a").last_access) == (2, 40.0)
    quota.on_hit("a", 50.0)
    scheduled[0][1]()                       # the timer writes the rest
    assert (cat.get_title("a").hits, cat.get_title("a").last_access) == (3, 50.0)
    cat.close()


def test_plays_of_a_title_removed_meanwhile_are_dropped(tmp_path):
    from appliance.cache.quota import CacheQuota
    cat = _catalog_with(tmp_path, {"a": MB})
    quota = CacheQuota(cat, schedule=lambda delay, call: None)
    quota.on_hit("a", 1.0)
    quota.on_hit("gone", 1.0)
    quota.flush_hits()
    assert cat.get_title("a").hits == 1
    cat.close()
