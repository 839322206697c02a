"""The proxy cache when the origin misbehaves: a title that changes
mid-fill, cut bodies, 5xx, a wrong Content-Range, an origin that is gone.

The origin is the small in-test server of ``tests.helpers.origins`` (nginx
cannot make these faults on demand); the daemon and the viewers are real.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.rtp import parse_rtp
from tests.helpers import disks
from tests.helpers.daemon import KvodDaemon, free_tcp_port, tracebacks
from tests.helpers.origins import FaultOrigin
from tests.helpers.players import assert_contiguous, gst_finished, gst_receive, sha256

pytestmark = pytest.mark.integration

FAST_RETRIES = ('retries = 4\nretry_delay = 0.05\nretry_max_delay = 0.2\nread_timeout = 2.0\n'
                'probe_bytes = "32KiB"\ntail_bytes = "16KiB"\nchunk_bytes = "128KiB"\n')


@pytest.fixture(autouse=True)
def no_traceback_in_the_logs():
    """Whatever the origin did, the daemon's log has no Python traceback
    (issue 11): every daemon a test started is scanned after it."""
    KvodDaemon.started.clear()
    yield
    for daemon in KvodDaemon.started:
        found = tracebacks(daemon.log())
        assert not found, "\n\n".join(found)


def daemon_for(tmp_path, base_url: str, cache: str = "") -> KvodDaemon:
    folder = tmp_path / "kvod"
    folder.mkdir()
    return KvodDaemon(str(folder), extra=f'[origin]\nbase_url = "{base_url}"\n{FAST_RETRIES}',
                      cache=cache)


def title_info(daemon: KvodDaemon, name: str) -> dict:
    return json.loads(daemon.kvod("catalog", "show", name, "--json").stdout)


def wait_state(daemon: KvodDaemon, name: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = title_info(daemon, name)
        if info["state"] == state:
            return info
        time.sleep(0.1)
    raise AssertionError(f"{name} never became {state}: {title_info(daemon, name)}\n"
                         f"{daemon.log()}")


def play(daemon: KvodDaemon, name: str, receiver: RtpReceiver) -> RtspClient:
    client = RtspClient("127.0.0.1", daemon.port)
    url = client.url(name)
    resp = client.request("DESCRIBE", url)
    assert resp.status == 200, resp
    session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
    assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
    return client


def wait_bye(receiver: RtpReceiver, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not receiver.got_bye() and time.monotonic() < deadline:
        time.sleep(0.05)
    return receiver.got_bye()


def test_a_title_that_changes_mid_fill_is_discarded_and_filled_again(tmp_path, ts_file,
                                                                      short_ts_file):
    old, new = open(ts_file, "rb").read(), open(short_ts_file, "rb").read()
    # slow bytes, so the change lands while the fill runs
    origin = FaultOrigin({"t.ts": old},
                         fault=lambda path, start, end, n: ("slow", 200_000) if start else None)
    d = daemon_for(tmp_path, origin.base_url)
    receiver = RtpReceiver()
    try:
        d.start()
        client = play(d, "t.ts", receiver)
        time.sleep(0.8)
        origin.change("t.ts", new)
        # the viewer of the old version gets a clean end, not a mix of two files
        assert wait_bye(receiver, 10), d.log()
        data = b"".join(parse_rtp(p)[1] for _, p in receiver.packets)
        assert data == old[:len(data)]
        client.close()
        info = wait_state(d, "t.ts", "complete")
        assert info["size"] == len(new)
        assert sha256(info["media_path"]) == hashlib.sha256(new).hexdigest()
        assert "the title changed" in d.log()
        # every request but the probe of each version carried If-Range
        etags = (FaultOrigin._etag(old), FaultOrigin._etag(new))
        if_ranges = [if_range for _, _, if_range, _ in origin.log]
        assert if_ranges.count("") == 2
        assert all(ir in etags for ir in if_ranges if ir)
        assert if_ranges.count(etags[0]) >= 2
        out = str(tmp_path / "new.ts")
        proc = gst_receive(d.url("t.ts"), out)
        output, _ = proc.communicate(timeout=30)
        assert gst_finished(proc, output), output
        assert sha256(out) == hashlib.sha256(new).hexdigest()
    finally:
        receiver.close()
        origin.stop()
        assert d.stop() == 0, d.log()


def test_cut_bodies_5xx_and_a_wrong_content_range_are_retried(tmp_path, ts_file):
    data = open(ts_file, "rb").read()

    # the fill's first requests each meet one fault, counted apart from the
    # probe and the tail (which go through, asked in either order)
    faults = {1: ("cut", 50_000), 2: ("status", 503), 3: ("content_range", "bytes 0-9/10"),
              4: ("cut", 0), 5: ("status", 500)}
    fill_requests = itertools.count(1)

    def fault(path, start, end, n):
        if start == 0 or end == len(data):
            return None
        return faults.get(next(fill_requests))
    origin = FaultOrigin({"t.ts": data}, fault=fault)
    d = daemon_for(tmp_path, origin.base_url)
    try:
        d.start()
        out = str(tmp_path / "gst.ts")
        proc = gst_receive(d.url("t.ts"), out)
        output, _ = proc.communicate(timeout=40)
        assert gst_finished(proc, output), output
        assert sha256(out) == hashlib.sha256(data).hexdigest()
        info = wait_state(d, "t.ts", "complete")
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        log = d.log()
        for words in ("truncated body", "503", "Content-Range", "500", "retry 1 of 4"):
            assert words in log, words
        # what came before a cut was kept: only the chunk sent under a wrong
        # Content-Range (refused unread) was fetched twice
        assert origin.sent["t.ts"] <= len(data) + 128 * 1024
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_origins_are_tried_in_order_and_an_origin_that_is_down(tmp_path, short_ts_file):
    origin = FaultOrigin({"t.ts": open(short_ts_file, "rb").read()})
    down = f"http://127.0.0.1:{free_tcp_port()}/media/"
    folder = tmp_path / "kvod"
    folder.mkdir()
    d = KvodDaemon(str(folder), extra=f'[origin]\nbase_url = ["{down}", "{origin.base_url}"]\n'
                   f"{FAST_RETRIES}")
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port)
        started = time.monotonic()
        # the first is down, the second has it
        assert client.request("DESCRIBE", client.url("t.ts")).status == 200
        # the second has no such title, but the first could not be asked
        assert client.request("DESCRIBE", client.url("nothing.ts")).status == 504
        assert time.monotonic() - started < 5
        origin.stop()  # now both are down
        assert client.request("DESCRIBE", client.url("other.ts")).status == 504
        assert client.request("OPTIONS", "*").status == 200
        client.close()
        log = d.log()
        assert "probe of " + down + "nothing.ts failed" in log
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_viewer_waiting_for_bytes_that_never_come_gets_a_bye(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    # after the probe the origin only fails (but for the title's tail, which
    # the fill may ask for before or after the front): the fill gives up,
    # the viewer plays what is there, then ends cleanly
    tail = len(data) - 16 * 1024
    origin = FaultOrigin({"t.ts": data}, fault=lambda path, start, end, n:
                         None if n == 1 or start >= tail else ("status", 503))
    d = daemon_for(tmp_path, origin.base_url, cache="stall_timeout = 2.0\n")
    receiver = RtpReceiver()
    try:
        d.start()
        started = time.monotonic()
        client = play(d, "t.ts", receiver)
        assert wait_bye(receiver, 15), d.log()
        assert time.monotonic() - started < 10
        got = [parse_rtp(p) for _, p in receiver.packets]
        assert_contiguous([h.seq for h, _ in got])
        sent = b"".join(p for _, p in got)
        assert 0 < len(sent) <= 32 * 1024 and sent == data[:len(sent)]
        client.close()
        log = d.log()
        assert "giving up after 5 tries" in log
        assert "ending it with BYE" in log
        assert title_info(d, "t.ts")["state"] == "partial"
    finally:
        receiver.close()
        origin.stop()
        assert d.stop() == 0, d.log()


def test_a_viewer_that_seeks_ahead_of_the_fill_gets_that_range_first(tmp_path, ts_file):
    data = open(ts_file, "rb").read()
    # ~120 kB/s from the origin: the fill would reach 8 s of the title in ~10 s
    origin = FaultOrigin({"t.ts": data}, fault=lambda path, start, end, n:
                         ("slow", 80_000) if n > 2 else None)
    d = daemon_for(tmp_path, origin.base_url)
    receiver = RtpReceiver()
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port, timeout=15)
        url = client.url("t.ts")
        assert client.request("DESCRIBE", url).status == 200
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        started = time.monotonic()
        resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=8-")])
        waited = time.monotonic() - started
        assert resp.status == 200, resp
        start_s = float(resp.headers.get("Range").split("=")[1].split("-")[0])
        # the keyframe shortly before 8 s, long before a front-to-back fill got there
        assert 5.0 <= start_s <= 8.0 and waited < 6.0, (start_s, waited, d.log())
        # it plays to the end: on the seek segment's hints, then the fill's own
        assert wait_bye(receiver, 40), d.log()
        got = [parse_rtp(p) for _, p in receiver.packets]
        assert_contiguous([h.seq for h, _ in got])
        sent = b"".join(p for _, p in got)
        at = data.find(sent[:4096])
        assert at >= len(data) * 0.5 and data[at:] == sent
        assert f"seq={got[0][0].seq}" in resp.headers.get("RTP-Info")
        client.request("TEARDOWN", url + "/", [("Session", session)])
        client.close()
        info = wait_state(d, "t.ts", "complete", timeout=60)
        assert sha256(info["media_path"]) == hashlib.sha256(data).hexdigest()
        log = d.log()
        assert "seek to 8.000 s ahead of the fill" in log
        assert "caught up with the fill's main hints" in log
    finally:
        receiver.close()
        origin.stop()
        assert d.stop() == 0, d.log()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs for the cache folder (root only; skipped otherwise)."""
    with disks.small_disk(tmp_path / "kvod" / "cache", "2m") as folder:
        yield folder


def test_a_full_disk_evicts_then_fails_cleanly(tmp_path, ts_file, small_disk):
    data = open(ts_file, "rb").read()  # 1.5 MB: two do not fit in 2 MiB
    origin = FaultOrigin({"a.ts": data, "b.ts": data})
    folder = tmp_path / "kvod"
    d = KvodDaemon(str(folder), extra=f'[origin]\nbase_url = "{origin.base_url}"\n'
                   f"{FAST_RETRIES}")
    try:
        d.start()
        assert d.kvod("cache", "prefetch", "a.ts").returncode == 0
        assert title_info(d, "a.ts")["state"] == "complete"
        # b does not fit: the disk says so, a is evicted, b completes
        assert d.kvod("cache", "prefetch", "b.ts", timeout=60).returncode == 0
        b = title_info(d, "b.ts")
        assert b["state"] == "complete"
        assert sha256(b["media_path"]) == hashlib.sha256(data).hexdigest()
        assert title_info(d, "a.ts")["state"] == "remote"
        assert "the disk is full: evicted" in d.log()
        # b pinned, nothing may go: a clear error, and a holds only good bytes
        # (none at all since issue 11: a fill that cannot fit is refused before
        # it writes, so a has no media file)
        d.kvod("cache", "pin", "b.ts")
        failed = d.kvod("cache", "prefetch", "a.ts", check=False, timeout=60)
        assert failed.returncode == 1 and "No space left on device" in failed.stderr
        from catalog import open_catalog
        with open_catalog(folder / "catalog.db") as cat:
            a = cat.get_title("a.ts")
            ranges = cat.cached_ranges("a.ts")
            with open(a.media_path if ranges else "/dev/null", "rb") as f:
                for start, end in ranges:
                    f.seek(start)
                    assert f.read(end - start) == data[start:end]
        assert title_info(d, "b.ts")["state"] == "complete"
    finally:
        origin.stop()
        assert d.stop() == 0, d.log()
