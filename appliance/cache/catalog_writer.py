"""One thread with its own catalog connection, for the writes fills make.

A fill records its durable ranges right after each ``fsync``; doing that
in the same worker thread, on a connection of its own, keeps the reactor
thread off the disk: an SQLite commit can turn into a WAL checkpoint, and a
checkpoint is an fsync that may take long while fills keep the disk busy.
The daemon's own connection leaves checkpoints to this one (``passive``
every ``CHECKPOINT_INTERVAL`` and SQLite's automatic ones here).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from twisted.internet import threads
from twisted.internet.task import LoopingCall
from twisted.python.threadpool import ThreadPool

from catalog import Catalog, open_catalog

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 30.0


class CatalogWriter:
    """Runs ``fn(catalog, *args)`` in its one thread, on its own connection."""

    def __init__(self, reactor, path: str) -> None:
        self.reactor = reactor
        self.path = path
        self._catalog: Optional[Catalog] = None
        self.pool = ThreadPool(1, 1, name="kvod-catalog-writer")
        self.pool.start()
        self._checkpoints = LoopingCall(self._checkpoint)
        self._checkpoints.clock = reactor
        self._checkpoints.start(CHECKPOINT_INTERVAL, now=False)

    def run(self, fn: Callable[..., Any], *args: Any):
        """A Deferred of ``fn(catalog, *args)`` run in the writer thread."""
        return threads.deferToThreadPool(self.reactor, self.pool, self._call, fn, *args)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._catalog is None:
            self._catalog = open_catalog(self.path)
        return fn(self._catalog, *args)

    def _checkpoint(self) -> None:
        d = self.run(lambda catalog: catalog.db.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        d.addErrback(lambda f: log.warning("catalog checkpoint failed: %s",
                                           f.getErrorMessage()))

    def _close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    async def stop(self) -> None:
        """Close the connection (in its thread) and stop the thread."""
        if self._checkpoints.running:
            self._checkpoints.stop()
        try:
            await threads.deferToThreadPool(self.reactor, self.pool, self._close)
        finally:
            self.pool.stop()
