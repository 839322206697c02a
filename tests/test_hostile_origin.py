"""The proxy cache against hostile or simple-minded origins (issue 11): no
Range support, If-Range ignored, an ETag that changes on every answer, an
origin that trickles, redirects or sends huge headers; many DESCRIBEs of
unknown titles at once; a disk that fills up during a fill.

Each case is bounded: in requests to the origin, in time, and in what the
daemon logs (never a traceback; every daemon's log is scanned after each
test). The origins are the in-test servers of ``tests.helpers.origins``;
the daemon and the viewers are real.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.rtp import parse_rtp
from tests.helpers import disks
from tests.helpers.daemon import KvodDaemon, tracebacks
from tests.helpers.origins import FaultOrigin, PlainOrigin
from tests.helpers.players import assert_contiguous, gst_finished, gst_receive, sha256
from tests.helpers.titles import looped_ts

pytestmark = pytest.mark.integration

FAST = dict(retries="4", retry_delay="0.05", retry_max_delay="0.2", read_timeout="2.0",
            probe_bytes='"32KiB"', tail_bytes='"16KiB"', chunk_bytes='"128KiB"')
LAST_MODIFIED = "Mon, 07 Dec 2026 10:00:00 GMT"


@pytest.fixture(autouse=True)
def no_traceback_in_the_logs():
    """Whatever an origin, a file or a client did, the daemon's log has no
    Python traceback."""
    KvodDaemon.started.clear()
    yield
    for daemon in KvodDaemon.started:
        found = tracebacks(daemon.log())
        assert not found, "\n\n".join(found)


def make_daemon(tmp_path, base_url: str, cache: str = "", **origin: str) -> KvodDaemon:
    """A daemon with fast retries and ``origin`` keys (TOML values) on top."""
    folder = tmp_path / "kvod"
    folder.mkdir(exist_ok=True)
    keys = "".join(f"{k} = {v}\n" for k, v in {**FAST, **origin}.items())
    return KvodDaemon(str(folder), extra=f'[origin]\nbase_url = "{base_url}"\n{keys}',
                      cache=cache)


def cached_bytes(daemon: KvodDaemon, name: str) -> int:
    from catalog import open_catalog
    with open_catalog(os.path.join(daemon.folder, "catalog.db")) as cat:
        return cat.cached_bytes(name)


def title_info(daemon: KvodDaemon, name: str) -> dict:
    return json.loads(daemon.kvod("catalog", "show", name, "--json").stdout)


def wait_state(daemon: KvodDaemon, name: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = title_info(daemon, name)
        if info["state"] == state:
            return info
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {state}: {title_info(daemon, name)}\n"
                         f"{daemon.log()[-6000:]}")


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def wait_bye(receiver: RtpReceiver, timeout: float) -> bool:
    return wait_for(receiver.got_bye, timeout, 0.05)


def play(daemon: KvodDaemon, name: str, receiver: RtpReceiver) -> RtspClient:
    client = RtspClient("127.0.0.1", daemon.port, timeout=15)
    url = client.url(name)
    resp = client.request("DESCRIBE", url)
    assert resp.status == 200, (resp, daemon.log()[-4000:])
    session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
    assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
    return client


def test_the_log_scan_finds_tracebacks():
    assert tracebacks("x\nTraceback (most recent call last):\n  File ...\nValueError: x\n")
    assert tracebacks("2026 CRITICAL twisted: Unhandled error in Deferred:\n")
    assert not tracebacks("2026 ERROR fill t.ts: bytes 0-9: 503 Service Unavailable\n")


# -- Range and If-Range ------------------------------------------------------------------


def test_an_origin_without_range_support_is_read_once_front_to_back(tmp_path, ts_file):
    """Python's http.server: 200 and the whole file to every request."""
    data = open(ts_file, "rb").read()
    root = tmp_path / "root"
    root.mkdir()
    origin = PlainOrigin(str(root))
    origin.publish("t.ts", data)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        out = str(tmp_path / "gst.ts")
        proc = gst_receive(d.url("t.ts"), out)
        output, _ = proc.communicate(timeout=40)
        assert gst_finished(proc, output), (output, d.log()[-4000:])
        assert sha256(out) == hashlib.sha256(data).hexdigest()
        info = wait_state(d, "t.ts", "complete")
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        # the probe (its first bytes only) and one sequential read
        assert len(origin.requests) == 2, origin.requests
        assert "ignores Range requests: the title is read once" in d.log()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_range_less_title_that_changes_length_only_is_filled_again(tmp_path, ts_file,
                                                                     short_ts_file):
    """http.server's only validator is a Last-Modified of one-second
    precision: a file rewritten within it is told apart by its length."""
    old, new = open(ts_file, "rb").read(), open(short_ts_file, "rb").read()
    root = tmp_path / "root"
    root.mkdir()
    path = root / "t.ts"

    def rewrite(_path, count):
        if count == 2:   # after the probe, before the fill's read
            stat = os.stat(path)
            path.write_bytes(new)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    origin = PlainOrigin(str(root), on_request=rewrite)
    origin.publish("t.ts", old)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "t.ts", timeout=60).returncode == 0
        info = wait_state(d, "t.ts", "complete")
        assert info["size"] == len(new)
        assert sha256(info["media_path"]) == hashlib.sha256(new).hexdigest()
        assert f"{len(new)} bytes, not {len(old)}: the title changed" in d.log()
        assert len(origin.requests) <= 5, origin.requests
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_an_empty_title_is_refused_clearly(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    origin = PlainOrigin(str(root))
    origin.publish("t.ts", b"")
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=30)
        assert client.request("DESCRIBE", client.url("t.ts")).status == 502
        client.close()
        assert "empty title" in d.log()
        assert len(origin.requests) == 1
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_an_origin_that_ignores_if_range_is_asked_without_it(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data}, ignore_if_range=True)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "t.ts", timeout=60).returncode == 0
        info = wait_state(d, "t.ts", "complete")
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        chunks = len(data) // (128 << 10) + 1
        # the probe, the tail, the chunks, and the few answered 200 before
        # the fill stopped sending If-Range
        assert origin.requests("t.ts") <= chunks + 6, origin.requests("t.ts")
        assert "ignores If-Range: asking without it" in d.log()
        assert "the title changed" not in d.log()
        # without If-Range, each 206 is still checked against the ETag
        assert all(not ir for _, _, ir, n in origin.log if n > 4)
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_an_origin_that_stops_honouring_range_mid_fill(tmp_path, ts_file):
    """206 for the probe, then 200 and the whole title for everything."""
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data}, fault=lambda p, s, e, n: ("whole",) if n > 1 else None)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "t.ts", timeout=60).returncode == 0
        info = wait_state(d, "t.ts", "complete")
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        assert origin.requests("t.ts") <= 8, origin.requests("t.ts")
        assert "the origin ignores Range: reading the title once" in d.log()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_fill_nobody_watches_stops_and_the_next_describe_resumes_it(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data},
                         fault=lambda p, s, e, n: ("slow", 60_000) if n > 2 else None)
    d = make_daemon(tmp_path, origin.base_url, idle_timeout="1.0")
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=15)
        assert client.request("DESCRIBE", client.url("t.ts")).status == 200
        client.close()   # never set up: nobody watches
        assert wait_for(lambda: "no viewer for" in d.log(), 10), d.log()[-4000:]
        time.sleep(0.5)
        sent = origin.sent["t.ts"]
        time.sleep(2.5)
        # stopped: nothing more fetched for nobody
        assert origin.sent["t.ts"] - sent <= 64 << 10, (sent, origin.sent["t.ts"])
        assert title_info(d, "t.ts")["state"] == "partial"
        assert origin.sent["t.ts"] < len(data)
        # a new viewer: the fill resumes from what it has
        receiver = RtpReceiver()
        try:
            client = play(d, "t.ts", receiver)
            assert wait_for(lambda: "resum" in d.log().split("no viewer for")[-1], 10)
            client.close()
        finally:
            receiver.close()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


# -- validators that do not hold still ----------------------------------------------------


def test_an_etag_that_changes_on_every_answer_gives_up_cleanly(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data}, etag_per_request=True)
    d = make_daemon(tmp_path, origin.base_url, max_changes="3")
    receiver = RtpReceiver()
    try:
        d.start()
        started = time.monotonic()
        client = play(d, "t.ts", receiver)
        assert wait_for(lambda: "is not stable" in d.log(), 20), d.log()[-6000:]
        assert time.monotonic() - started < 20
        # the viewer ends cleanly where the bytes end
        assert wait_bye(receiver, 30), d.log()[-4000:]
        client.close()
        requests = origin.requests("t.ts")
        time.sleep(1.0)
        assert origin.requests("t.ts") == requests <= 30
        log = d.log()
        assert "internal error" not in log and "exported pointers" not in log
    finally:
        receiver.close()
        origin.stop()
        assert d.stop() == 0, d.log()


def test_an_unstable_etag_with_a_steady_last_modified_validates_by_date(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data}, etag_per_request=True, last_modified=LAST_MODIFIED)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "t.ts", timeout=60).returncode == 0
        info = wait_state(d, "t.ts", "complete")
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        assert "validating by Last-Modified" in d.log()
        assert origin.requests("t.ts") <= len(data) // (128 << 10) + 10
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


# -- fill slots --------------------------------------------------------------------------


def test_uncached_describes_queue_under_max_fills(tmp_path, short_ts_file):
    data = open(short_ts_file, "rb").read()
    names = [f"t{i}.ts" for i in range(6)]
    origin = FaultOrigin({n: data for n in names},
                         fault=lambda p, s, e, n: ("slow", 150_000) if n > 1 else None)
    d = make_daemon(tmp_path, origin.base_url, max_fills="2", requests_per_fill="1",
                    queue_timeout="60")
    answers: dict[str, int] = {}
    try:
        d.start()
        def describe(name):
            client = RtspClient("127.0.0.1", d.port, timeout=60)
            try:
                answers[name] = client.request("DESCRIBE", client.url(name)).status
            finally:
                client.close()
        threads = [threading.Thread(target=describe, args=(n,)) for n in names[:5]]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # one more client leaves while its title waits in the queue
        leaver = RtspClient("127.0.0.1", d.port, timeout=60)
        leaver.send_raw(f"DESCRIBE {leaver.url('t5.ts')} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        assert wait_for(lambda: "t5.ts waits for a fill slot" in d.log(), 5)
        leaver.close()
        for t in threads:
            t.join(60)
        assert answers == {n: 200 for n in names[:5]}, (answers, d.log()[-4000:])
        for n in names[:5]:
            wait_state(d, n, "complete", timeout=60)
        # a probe or a fill is one connection each, and never more than the slots
        assert origin.most_at_once() <= 2, origin.spans
        assert origin.most_at_once(titles=True) <= 2
        assert origin.requests("t5.ts") == 0
        assert "left the fill queue" in d.log()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_prefetch_of_more_titles_than_slots_fills_them_all_in_turn(tmp_path, short_ts_file):
    data = open(short_ts_file, "rb").read()
    names = ["a.ts", "b.ts", "c.ts"]
    origin = FaultOrigin({n: data for n in names + ["d.ts"]},
                         fault=lambda p, s, e, n: ("slow", 400_000) if n > 1 else None)
    d = make_daemon(tmp_path, origin.base_url, max_fills="1", queue_timeout="0.5")
    try:
        d.start()
        # one slot, and a queue timeout far shorter than a fill: an operator's
        # list waits its turn instead of failing
        done = d.kvod("cache", "prefetch", *names, check=False, timeout=90)
        assert done.returncode == 0, (done.stderr, d.log()[-4000:])
        for n in names:
            assert title_info(d, n)["state"] == "complete"
        assert origin.most_at_once(titles=True) <= 1, origin.spans
        # a title the origin does not have, queued behind another: a clear error
        failed = d.kvod("cache", "prefetch", "d.ts", "none.ts", check=False, timeout=60)
        assert failed.returncode == 1 and "none.ts" in failed.stderr
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


# -- deadlines ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers_too", [True, False], ids=["headers", "body"])
def test_a_probe_that_trickles_is_answered_504_in_time(tmp_path, short_ts_file, headers_too):
    origin = FaultOrigin({"t.ts": open(short_ts_file, "rb").read()},
                         fault=lambda p, s, e, n: ("trickle", 0.1, headers_too))
    d = make_daemon(tmp_path, origin.base_url, probe_timeout="2.0")
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=30)
        started = time.monotonic()
        assert client.request("DESCRIBE", client.url("t.ts")).status == 504
        assert time.monotonic() - started < 4
        assert client.request("OPTIONS", "*").status == 200
        client.close()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_fill_request_that_trickles_is_given_up_by_its_deadline(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    # the probe is fine; every fill request trickles, a byte every 0.2 s
    # (under read_timeout, so only the whole-body deadline catches it)
    origin = FaultOrigin({"t.ts": data}, fault=lambda p, s, e, n:
                         None if n == 1 else ("trickle", 0.2, False))
    d = make_daemon(tmp_path, origin.base_url, retries="1", min_rate='"64KiB"',
                    requests_per_fill="1")
    try:
        d.start()
        started = time.monotonic()
        failed = d.kvod("cache", "prefetch", "t.ts", check=False, timeout=60)
        assert failed.returncode == 1
        assert time.monotonic() - started < 20
        assert "too slow" in d.log()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


# -- other wrong answers -------------------------------------------------------------------


@pytest.mark.parametrize("fault, status, words, tries", [
    (("redirect", "/media/t.ts"), 502, "redirects are not followed", 1),
    (("status", 403), 502, "403", 1),
    # Twisted's parser drops a header line over 16 KiB: the connection ends
    (("header", 200_000), 504, "connection failed", 2),
], ids=["redirect-loop", "forbidden", "huge-header"])
def test_wrong_probe_answers_are_refused_at_once(tmp_path, short_ts_file, fault, status, words,
                                                 tries):
    origin = FaultOrigin({"t.ts": open(short_ts_file, "rb").read()},
                         fault=lambda p, s, e, n: fault)
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=30)
        started = time.monotonic()
        assert client.request("DESCRIBE", client.url("t.ts")).status == status
        assert time.monotonic() - started < 4
        client.close()
        assert words in d.log()
        assert origin.requests("t.ts") == tries   # no retry when it would answer the same
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_content_length_longer_than_the_body_is_retried_then_given_up(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    origin = FaultOrigin({"t.ts": data}, fault=lambda p, s, e, n:
                         None if n == 1 else ("length", 1000))
    d = make_daemon(tmp_path, origin.base_url, requests_per_fill="1")
    try:
        d.start()
        failed = d.kvod("cache", "prefetch", "t.ts", check=False, timeout=60)
        assert failed.returncode == 1
        assert origin.requests("t.ts") <= 1 + 5
        assert "truncated body" in d.log() or "body longer" in d.log()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_chunked_answer_from_a_near_origin_is_stored_without_its_framing(tmp_path, ts_file):
    """A 206 in chunked coding (no Content-Length) has chunk sizes between
    its bytes on the socket: such a body is read through the HTTP parser,
    never spliced into the file as it is, even when it is long and the
    origin near (it was, before: the copy held the chunk lines)."""
    from appliance.cache.origin import SPLICE_BYTES
    data = open(looped_ts(ts_file, 8), "rb").read()
    assert len(data) > 2 * SPLICE_BYTES
    origin = FaultOrigin({"t.ts": data}, fault=lambda p, s, e, n:
                         ("chunked",) if e - s >= SPLICE_BYTES else None)
    d = make_daemon(tmp_path, origin.base_url, chunk_bytes='"6MiB"')
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "t.ts", timeout=60).returncode == 0
        info = json.loads(d.kvod("catalog", "show", "t.ts", "--json").stdout)
        assert info["state"] == "complete"
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


# -- disk full -----------------------------------------------------------------------------


def test_a_title_larger_than_the_disk_is_refused_before_a_byte_is_written(tmp_path,
                                                                          short_ts_file):
    """The probe's Content-Range claims a petabyte: no sparse file of that
    size, no fill, a 503 with the reason."""
    origin = FaultOrigin({"t.ts": open(short_ts_file, "rb").read()}, fault=lambda p, s, e, n:
                         ("content_range", f"bytes 0-{e - 1}/{10**15}"))
    d = make_daemon(tmp_path, origin.base_url)
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=30)
        assert client.request("DESCRIBE", client.url("t.ts")).status == 503
        client.close()
        assert "No space left on device" in d.log()
        assert origin.requests("t.ts") == 1
        assert not os.path.exists(os.path.join(d.folder, "cache", "titles", "t.ts"))
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()



@pytest.fixture
def small_disk(tmp_path):
    """A 5 MiB tmpfs for the cache folder (root only; skipped otherwise)."""
    with disks.small_disk(tmp_path / "kvod" / "cache", "5m") as folder:
        yield folder


def test_a_disk_that_fills_mid_fill_costs_no_complete_title(tmp_path, ts_file, short_ts_file,
                                                            small_disk):
    data = open(ts_file, "rb").read()   # 1.5 MB
    small = open(short_ts_file, "rb").read()
    assert len(small) < len(data) // 2
    # b comes slowly, so the disk can fill up while it does
    origin = FaultOrigin({"c.ts": small, "b.ts": data}, fault=lambda p, s, e, n:
                         ("slow", 150_000) if p == "b.ts" and n > 2 else None)
    d = make_daemon(tmp_path, origin.base_url)
    receiver = RtpReceiver()
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "c.ts").returncode == 0
        assert title_info(d, "c.ts")["state"] == "complete"
        client = play(d, "b.ts", receiver)
        assert wait_for(lambda: cached_bytes(d, "b.ts") > 200_000, 20)
        # something else takes the disk: what is left, even with c evicted,
        # is not enough for the rest of b (so c must stay)
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * (free - 64 * 1024))
        # b's viewer plays what came and ends cleanly
        assert wait_bye(receiver, 40), d.log()[-6000:]
        client.close()
        got = [parse_rtp(p) for _, p in receiver.packets]
        assert_contiguous([h.seq for h, _ in got])
        sent = b"".join(p for _, p in got)
        assert 0 < len(sent) < len(data) and sent == data[:len(sent)]
        log = d.log()
        assert "No space left on device" in log
        assert "evicting cannot make room" in log
        # c stays complete and plays; b plays what it has, then ends cleanly
        assert title_info(d, "c.ts")["state"] == "complete"
        assert title_info(d, "b.ts")["state"] == "partial"
        for name in ("c.ts", "b.ts"):
            again = RtpReceiver()
            try:
                client = play(d, name, again)
                assert wait_bye(again, 40), (name, d.log()[-6000:])
                client.close()
                assert again.packets
            finally:
                again.close()
        # after a restart too: b cannot resume (some room, not enough for its
        # rest), so its cached bytes are indexed again and served
        os.truncate(small_disk / "filler", os.path.getsize(small_disk / "filler") - (256 << 10))
        assert d.stop() == 0
        d.start()
        again = RtpReceiver()
        try:
            client = play(d, "b.ts", again)
            assert wait_bye(again, 40), d.log()[-6000:]
            client.close()
            got = b"".join(parse_rtp(p)[1] for _, p in again.packets)
            assert 0 < len(got) < len(data) and got == data[:len(got)]
        finally:
            again.close()
        assert "cannot resume the fill of b.ts" in d.log()
        assert title_info(d, "c.ts")["state"] == "complete"
    finally:
        receiver.close()
        origin.stop()
        assert d.stop() == 0, d.log()
