"""Who may talk to the origin now: fill slots, their queue, and waits that
several clients share.

``origin.max_fills`` bounds the titles probed or filled at once (a probe is
a connection too). :class:`FillSlots` hands out slots in arrival order; a
title beyond the limit waits in a FIFO queue for ``queue_timeout`` seconds
(then :class:`FillsBusy`, answered 503). A wait that is cancelled (its
client left) leaves the queue. :class:`SharedWait` lets several clients
wait for one title's preparation; when the last of them leaves, the work
itself is cancelled, so a title nobody waits for takes no slot.

Time comes from the reactor given (``callLater``): tests use task.Clock.
"""

from __future__ import annotations

import logging
from typing import Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from appliance.cache.origin import OriginError

log = logging.getLogger(__name__)


class FillsBusy(OriginError):
    """Every fill slot (``origin.max_fills``) stayed taken while a title
    waited its turn (``origin.queue_timeout``)."""

    status = 503
    retryable = False


class FillSlots:
    """``limit`` slots shared by probes (taken here) and running fills
    (counted by ``running()``)."""

    def __init__(self, reactor, *, limit: int, queue_timeout: float,
                 running: Callable[[], int] = lambda: 0) -> None:
        self.reactor = reactor
        self.limit = limit
        self.queue_timeout = queue_timeout
        self.running = running
        self.taken = 0   # slots held by probes and fill starts
        self.queue: list[tuple[str, defer.Deferred]] = []

    def free(self) -> bool:
        """Whether a slot is free now."""
        return self.running() + self.taken < self.limit

    def in_use(self) -> int:
        """Slots taken by probes and by running fills."""
        return self.running() + self.taken

    async def take(self, name: str, *, patient: bool = False) -> None:
        """Wait for a slot for ``name`` (FIFO); FillsBusy after the queue
        timeout (``patient``: no time limit); cancelled: out of the queue.
        Give it back with :meth:`release` (a fill that started counts in
        ``running()`` then)."""
        if not self.queue and self.free():
            self.taken += 1
            return
        entry: tuple[str, defer.Deferred] = (name, defer.Deferred(
            lambda _d: self._leave(entry)))
        self.queue.append(entry)
        log.info("%s waits for a fill slot (%d in use, %d queued, origin.max_fills %d)",
                 name, self.in_use(), len(self.queue), self.limit)
        timer = None if patient else self.reactor.callLater(self.queue_timeout,
                                                            self._timed_out, entry)
        try:
            await entry[1]
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    def _leave(self, entry) -> None:
        if entry in self.queue:
            self.queue.remove(entry)
            log.info("%s left the fill queue: nobody waits for it any more", entry[0])

    def _timed_out(self, entry) -> None:
        if entry in self.queue:
            self.queue.remove(entry)
            entry[1].errback(FillsBusy(
                f"{entry[0]}: all {self.limit} fill slots stayed busy for "
                f"{self.queue_timeout:g} s (origin.max_fills)"))

    def release(self) -> None:
        """Give back a slot :meth:`take` gave, and hand free slots on."""
        self.taken -= 1
        self.grant()

    def grant(self) -> None:
        """Hand free slots to the queue, first come first served (call it
        when a fill ends, too)."""
        while self.queue and self.free():
            _name, d = self.queue.pop(0)
            self.taken += 1
            d.callback(None)

    def cancel_all(self) -> None:
        """Call off every wait (shutdown)."""
        for _name, d in list(self.queue):
            d.cancel()


class SharedWait:
    """One piece of work several callers await; a caller that goes away (its
    Deferred cancelled) stops waiting, and when the last one has gone the
    work is cancelled (a title nobody waits for leaves the fill queue, or
    its probe stops)."""

    def __init__(self, work: defer.Deferred) -> None:
        self.waiters: list[defer.Deferred] = []
        self.result = None
        self.done = False
        self.work = work
        work.addBoth(self._fire)

    def _fire(self, result):
        self.done, self.result = True, result
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            (waiter.errback if isinstance(result, Failure) else waiter.callback)(result)
        return None  # the waiters have it; nothing is left unhandled

    def wait(self) -> defer.Deferred:
        """A Deferred for this caller; cancel it to stop waiting."""
        if self.done:
            return defer.fail(self.result) if isinstance(self.result, Failure) \
                else defer.succeed(self.result)
        waiter: defer.Deferred = defer.Deferred(self._left)
        self.waiters.append(waiter)
        return waiter

    def _left(self, waiter: defer.Deferred) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        if not self.waiters and not self.done:
            self.work.cancel()
