"""A fill's files while it restarts or stops (issue 11): the media mapping
is closed only when no index scan holds a view of it, and no scan starts
once closing has begun. Before, an origin whose ETag changed on every
request ended fills with "internal error: cannot close exported pointers
exist": a scan that ended started another one (its bytes were due) on the
mapping that the restart was about to close.

No network and no running reactor: the scan that must not start would be
handed to the reactor's thread pool, which the test checks was not asked.
"""

from __future__ import annotations

from twisted.internet import defer

from appliance.cache.fill import FillSettings, TitleFill
from appliance.cache.origin import FileOrigin, Probe
from catalog import open_catalog


def test_no_scan_starts_while_the_files_are_being_closed(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    head_bytes = 64 * 1024
    url = f"file://{ts_file}"
    head, size, validator = FileOrigin(None)._read(url, 0, head_bytes, None)
    cat = open_catalog(str(tmp_path / "catalog.db"))
    fill = TitleFill.create(Probe(url, size, validator, head), title=None, now=0.0,
                            reactor=None, catalog=cat, origin=None, name="t.ts",
                            folder=str(tmp_path / "t"), settings=FillSettings())
    try:
        fill._started = True
        # a scan is running, and bytes for another one have come meanwhile
        running: defer.Deferred = defer.Deferred()
        fill._indexing = running
        running.addBoth(fill._index_ended)
        fill._index_again = True
        fill._store(len(head), data[len(head):len(head) + 188 * 700])
        settled = defer.Deferred.fromCoroutine(fill._settle_quietly())
        assert not settled.called
        running.callback(0)   # the running scan ends ...
        # ... and no new one may start: the files are about to close
        assert fill._indexing is None
        assert settled.called
        fill._close_files()   # nothing reads the files any more
        assert fill._media is None
    finally:
        fill._close_files()
        cat.close()
