"""Fill slots and shared waits (issue 11: uncached DESCRIBEs ignored
``origin.max_fills``), on a task.Clock: no network, no reactor."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from appliance.cache.fill_slots import FillsBusy, FillSlots, SharedWait


def take(slots: FillSlots, name: str) -> defer.Deferred:
    return defer.Deferred.fromCoroutine(slots.take(name))


def test_slots_are_handed_out_first_come_first_served_under_the_limit():
    clock = task.Clock()
    running = [1]   # one fill runs already
    slots = FillSlots(clock, limit=3, queue_timeout=10, running=lambda: running[0])
    a, b, c, d = (take(slots, n) for n in "abcd")
    assert a.called and b.called and not c.called and not d.called
    assert slots.in_use() == 3
    slots.release()            # a's probe ended without a fill
    assert c.called and not d.called
    running[0] = 0             # the old fill ended
    slots.grant()
    assert d.called and slots.in_use() == 3


def test_a_wait_that_is_cancelled_leaves_the_queue():
    clock = task.Clock()
    slots = FillSlots(clock, limit=1, queue_timeout=10)
    first, gone, next_one = take(slots, "a"), take(slots, "b"), take(slots, "c")
    gone.cancel()
    gone.addErrback(lambda f: f.trap(defer.CancelledError))
    assert [n for n, _ in slots.queue] == ["c"]
    slots.release()
    assert first.called and next_one.called and slots.taken == 1


def test_a_queued_title_gets_fills_busy_after_the_queue_timeout():
    clock = task.Clock()
    slots = FillSlots(clock, limit=1, queue_timeout=15)
    take(slots, "a")
    late = take(slots, "b")
    clock.advance(14.9)
    assert not late.called
    clock.advance(0.2)
    failure = []
    late.addErrback(failure.append)
    assert failure and failure[0].check(FillsBusy)
    assert failure[0].value.status == 503 and "max_fills" in str(failure[0].value)
    assert not slots.queue and not clock.getDelayedCalls()


def test_a_shared_wait_is_cancelled_when_its_last_waiter_leaves():
    work: defer.Deferred = defer.Deferred()
    cancelled = []
    work.addErrback(lambda f: cancelled.append(f.check(defer.CancelledError)))
    shared = SharedWait(work)
    one, two = shared.wait(), shared.wait()
    for d in (one, two):
        d.addErrback(lambda f: f.trap(defer.CancelledError))
    one.cancel()
    assert not work.called       # another client still waits for it
    two.cancel()
    assert work.called and cancelled == [defer.CancelledError]


@pytest.mark.parametrize("fails", [False, True])
def test_every_waiter_of_a_shared_wait_gets_its_result(fails):
    work: defer.Deferred = defer.Deferred()
    shared = SharedWait(work)
    got = []
    for _ in range(2):
        shared.wait().addBoth(got.append)
    (work.errback(ValueError("x")) if fails else work.callback("ok"))
    late = []
    shared.wait().addBoth(late.append)
    for result in got + late:
        assert (getattr(result, "value", None).__class__ is ValueError) if fails \
            else result == "ok"
    assert len(got) == 2 and len(late) == 1
