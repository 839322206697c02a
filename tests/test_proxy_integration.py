"""The proxy cache for real: nginx as the origin, the real daemon, GStreamer
and ffmpeg as viewers of titles the cache has never seen.

Each test asks for its own title name (a symlink in the origin's folder),
so it starts from a cold cache while the daemon and nginx are shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.rtp import parse_rtp
from tests.helpers.daemon import KvodDaemon
from tests.helpers.origins import NginxOrigin, publish
from tests.helpers.players import assert_contiguous, framemd5, gst_finished, gst_receive, sha256
from tests.helpers.titles import looped_ts


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def origin(tmp_path_factory, ts_file, short_ts_file):
    folder = tmp_path_factory.mktemp("nginx")
    root = folder / "root"
    root.mkdir()
    nginx = NginxOrigin(str(folder), str(root))
    nginx.titles = {"movie": ts_file, "short": short_ts_file}
    nginx.root_path = root
    yield nginx
    nginx.stop()


def origin_config(*base_urls: str, **origin_keys) -> str:
    urls = ", ".join(f'"{u}"' for u in base_urls)
    extra = "".join(f"{k} = {v}\n" for k, v in origin_keys.items())
    return f"[origin]\nbase_url = [{urls}]\n{extra}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, origin):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")),
                   extra="[rtcp]\nsr_interval = 1.0\n" + origin_config(origin.base_url))
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def test_gstreamer_plays_an_uncached_title_byte_identical(daemon, origin, ts_file, tmp_path):
    name = publish(origin, "first/movie.ts", ts_file)
    out = str(tmp_path / "gst.ts")
    proc = gst_receive(daemon.url(name), out)
    output, _ = proc.communicate(timeout=40)
    assert gst_finished(proc, output), output
    assert sha256(out) == sha256(ts_file)
    info = daemon.wait_complete(name)
    assert sha256(info["media_path"]) == sha256(ts_file)
    # every byte once: probe (head + tail) and fill never overlap
    assert origin.bytes_sent(name) == os.path.getsize(ts_file)
    assert "miss first/movie.ts" in daemon.log()


def test_a_long_title_from_a_near_origin_is_spliced_into_the_cache_byte_identical(
        daemon, origin, ts_file, tmp_path):
    """Bodies of SPLICE_BYTES and more from nginx on loopback go from the
    socket to the file in the splice's own thread (each on a connection of
    its own, dropped after the body: its HTTP parser never saw the bytes);
    the copy is the origin's, byte for byte, and indexed."""
    from appliance.cache.origin import SPLICE_BYTES
    source = looped_ts(ts_file, 24)
    size = os.path.getsize(source)
    assert size >= 6 * SPLICE_BYTES
    name = publish(origin, "splice/long.ts", source)
    result = daemon.kvod("cache", "prefetch", name)
    assert result.returncode == 0, result.stderr
    info = daemon.wait_complete(name, timeout=60)
    assert sha256(info["media_path"]) == sha256(source)
    assert origin.bytes_sent(name) == size          # every byte once
    assert info["duration_s"] == pytest.approx(24 * 10, abs=1.5)   # indexed to its end
    sent = [(r[2], c) for r, (_, c) in zip(origin.requests(), origin.connections())
            if r[0] == "/media/" + name]
    assert sum(n >= SPLICE_BYTES for n, _ in sent) >= 2, sent
    for at, (n, c) in enumerate(sent):
        # a spliced body's connection carries no request after it
        if n >= SPLICE_BYTES:
            assert all(c2 != c for _, c2 in sent[at + 1:]), sent


def test_ffmpeg_gets_every_frame_of_an_uncached_title(daemon, origin, short_ts_file):
    name = publish(origin, "ff/short.ts", short_ts_file)
    received = framemd5(daemon.url(name), "-rtsp_transport", "udp", timeout=40)
    assert received == framemd5(short_ts_file)


def test_a_complete_title_is_served_without_the_origin(tmp_path, short_ts_file):
    folder = tmp_path / "o"
    (folder / "root").mkdir(parents=True)
    os.symlink(short_ts_file, folder / "root" / "t.ts")
    nginx = NginxOrigin(str(folder), str(folder / "root"))
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(nginx.base_url))
    try:
        d.start()
        proc = gst_receive(d.url("t.ts"), str(tmp_path / "1.ts"))
        output, _ = proc.communicate(timeout=30)
        assert gst_finished(proc, output), output
        d.wait_complete("t.ts")
        nginx.stop()  # gone: the cached copy must do
        proc = gst_receive(d.url("t.ts"), str(tmp_path / "2.ts"))
        output, _ = proc.communicate(timeout=30)
        assert gst_finished(proc, output), output
        assert sha256(str(tmp_path / "2.ts")) == sha256(short_ts_file)
        # the probe's head and tail were the whole title; nothing since
        assert [r[2] for r in nginx.requests()] == [256 * 1024, os.path.getsize(short_ts_file)
                                                    - 256 * 1024]
    finally:
        nginx.stop()
        assert d.stop() == 0, d.log()


def test_missing_title_is_404_and_no_origin_is_404(daemon, origin):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        assert client.request("DESCRIBE", client.url("no/such.ts")).status == 404
        assert client.request("DESCRIBE", client.url("../etc/passwd")).status == 404
        assert client.request("OPTIONS", "*").status == 200
    finally:
        client.close()


# -- a slow origin: viewers while the fill runs --------------------------------------


@pytest.fixture(scope="module")
def slow_origin(tmp_path_factory, ts_file):
    """nginx sending each request at 100 kB/s."""
    folder = tmp_path_factory.mktemp("slow-nginx")
    root = folder / "root"
    root.mkdir()
    nginx = NginxOrigin(str(folder), str(root), limit_rate="100k")
    nginx.root_path = root
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def slow_daemon(tmp_path_factory, slow_origin):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod-slow")),
                   extra=origin_config(slow_origin.base_url, probe_bytes='"32KiB"',
                                       tail_bytes='"16KiB"', chunk_bytes='"128KiB"',
                                       requests_per_fill=2))
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def test_viewers_share_one_fill_and_a_late_one_joins_mid_fill(slow_daemon, slow_origin,
                                                             ts_file, tmp_path):
    name = publish(slow_origin, "shared.ts", ts_file)
    outs = [str(tmp_path / f"v{i}.ts") for i in range(4)]
    procs = [gst_receive(slow_daemon.url(name), out) for out in outs[:3]]
    time.sleep(2.5)
    info = slow_daemon.title_info(name)
    assert info["state"] == "partial", info  # the fill is still running
    procs.append(gst_receive(slow_daemon.url(name), outs[3]))
    want = sha256(ts_file)
    for proc, out in zip(procs, outs):
        output, _ = proc.communicate(timeout=40)
        assert gst_finished(proc, output), output
        assert sha256(out) == want
    slow_daemon.wait_complete(name)
    # four viewers, one fill: the origin sent each byte once
    assert slow_origin.bytes_sent(name) == os.path.getsize(ts_file)
    assert slow_daemon.log().count(f"miss {name}") == 1


def test_a_viewer_that_catches_up_with_the_fill_waits_and_misses_nothing(
        tmp_path, ts_file):
    # 2 x 40 kB/s from the origin, ~150 kB/s of media: the viewer waits often
    folder = tmp_path / "o"
    (folder / "root").mkdir(parents=True)
    os.symlink(ts_file, folder / "root" / "crawl.ts")
    nginx = NginxOrigin(str(folder), str(folder / "root"), limit_rate="40k")
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(
        nginx.base_url, probe_bytes='"32KiB"', tail_bytes='"16KiB"', chunk_bytes='"64KiB"'))
    media = open(ts_file, "rb").read()
    receiver = RtpReceiver()
    try:
        d.start()
        client = RtspClient("127.0.0.1", d.port)
        url = client.url("crawl.ts")
        assert client.request("DESCRIBE", url).status == 200
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
        time.sleep(4.0)
        client.request("TEARDOWN", url + "/", [("Session", session)])
        client.close()
        time.sleep(0.2)
        got = [parse_rtp(p) for _, p in receiver.packets]
        assert_contiguous([h.seq for h, _ in got])
        data = b"".join(p for _, p in got)
        assert len(data) > 100_000 and data == media[:len(data)]
        # it outran the fill: it sent far less than 4 s of media, and waited
        assert len(data) < 4 * len(media) / 10 * 0.8
        times = [t for t, _ in receiver.packets]
        assert max(b - a for a, b in zip(times, times[1:])) > 150e6
    finally:
        receiver.close()
        nginx.stop()
        assert d.stop() == 0, d.log()


# -- crashes ------------------------------------------------------------------------------


def recorded_bytes_are_the_origins(daemon: KvodDaemon, sources: dict[str, bytes]) -> int:
    """Check every range the catalog records as cached against the origin's
    bytes; returns how many bytes are recorded in all."""
    from catalog import open_catalog
    total = 0
    with open_catalog(os.path.join(daemon.folder, "catalog.db")) as cat:
        for name, data in sources.items():
            title = cat.get_title(name)
            if title is None:
                continue
            with open(title.media_path, "rb") as f:
                for start, end in cat.cached_ranges(name):
                    f.seek(start)
                    assert f.read(end - start) == data[start:end], (name, start, end)
                    total += end - start
    return total


def test_kill_9_during_fills_twenty_times_then_every_title_completes(tmp_path, ts_file,
                                                                      short_ts_file):
    import random
    folder = tmp_path / "o"
    (folder / "root").mkdir(parents=True)
    sources = {}
    for i, src in enumerate([ts_file, ts_file, ts_file, short_ts_file]):
        name = f"crash/t{i}.ts"
        (folder / "root" / "crash").mkdir(exist_ok=True)
        os.symlink(src, folder / "root" / name)
        sources[name] = open(src, "rb").read()
    # slow enough that a round kills fills halfway, and requests halfway
    nginx = NginxOrigin(str(folder), str(folder / "root"), limit_rate="50k")
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(
        nginx.base_url, probe_bytes='"32KiB"', tail_bytes='"16KiB"', chunk_bytes='"256KiB"'))
    rng = random.Random(4)
    progress = []
    try:
        for round_ in range(20):
            d.start()
            if round_ == 0:  # viewers ask once; later rounds resume at start-up
                client = RtspClient("127.0.0.1", d.port)
                for name in sources:
                    assert client.request("DESCRIBE", client.url(name)).status == 200
                client.close()
            time.sleep(rng.uniform(0.05, 0.6))
            d.kill()
            progress.append(recorded_bytes_are_the_origins(d, sources))
        # the kills came while fills ran, and each round kept what it had made durable
        assert len(set(progress)) >= 5 and progress == sorted(progress), progress
        d.start()
        for name, data in sources.items():
            info = d.wait_complete(name, timeout=60)
            with open(info["media_path"], "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert recorded_bytes_are_the_origins(d, sources) == sum(map(len, sources.values()))
        assert "resuming the fill of crash/t0.ts" in d.log()
    finally:
        nginx.stop()
        if d.proc is not None:
            assert d.stop() == 0, d.log()


# -- quota, eviction and the cache commands ---------------------------------------------


def cache_status(daemon: KvodDaemon) -> dict:
    status = json.loads(daemon.kvod("cache", "status", "--json").stdout)
    return {**status, "by_name": {t["name"]: t for t in status["titles"]}}


def test_quota_eviction_and_cache_commands(tmp_path, origin, short_ts_file):
    size = os.path.getsize(short_ts_file)
    names = [publish(origin, f"q/{x}.ts", short_ts_file) for x in "abc"]
    quota = int(size * 2.5)
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(origin.base_url),
                   cache=f"max_bytes = {quota}\npolicy = \"lru\"\nkeep_prefix_seconds = 1.0\n")
    try:
        d.start()
        out = d.kvod("catalog", "add", origin.base_url + names[0]).stdout
        assert f"added {names[0]}: remote" in out
        status = cache_status(d)
        assert status["daemon"] and status["quota_bytes"] == quota
        assert status["by_name"][names[0]]["state"] == "remote"
        assert "pinned q/a.ts" in d.kvod("cache", "pin", names[0]).stdout

        result = d.kvod("cache", "prefetch", names[0])
        assert f"prefetched {names[0]}" in result.stdout, result.stderr
        proc = gst_receive(d.url(names[1]), str(tmp_path / "b.ts"))
        output = proc.communicate(timeout=30)[0]
        assert gst_finished(proc, output), output
        d.wait_complete(names[1])
        before = cache_status(d)
        assert before["used_bytes"] == 2 * size

        # c does not fit: b (least recently used, a is pinned) loses its tail
        assert d.kvod("cache", "prefetch", names[2]).returncode == 0
        status = cache_status(d)
        assert status["used_bytes"] <= quota
        a, b, c = (status["by_name"][n] for n in names)
        assert (a["state"], a["percent"], c["state"]) == ("complete", 100.0, "complete")
        assert b["state"] == "partial" and 0 < b["cached_bytes"] < size
        prefix = b["cached_bytes"]
        assert f"evicted {names[1]}" in d.log()

        # b plays at once from its prefix, and what was evicted is fetched again
        sent_before = origin.bytes_sent(names[1])
        out = str(tmp_path / "b2.ts")
        proc = gst_receive(d.url(names[1]), out)
        output, _ = proc.communicate(timeout=30)
        assert gst_finished(proc, output), output
        assert sha256(out) == sha256(short_ts_file)
        d.wait_complete(names[1])
        assert origin.bytes_sent(names[1]) - sent_before == size - prefix
        assert cache_status(d)["used_bytes"] <= quota

        refused = d.kvod("cache", "evict", names[0], check=False)
        assert refused.returncode == 1 and "pinned" in refused.stderr
        d.kvod("cache", "unpin", names[0])
        assert "evicted q/a.ts" in d.kvod("cache", "evict", names[0]).stdout
        status = cache_status(d)
        assert status["by_name"][names[0]]["state"] == "remote"
        assert status["by_name"][names[0]]["cached_bytes"] == 0
        text = d.kvod("cache", "status").stdout
        assert "policy lru" in text and "q/c.ts" in text
    finally:
        assert d.stop() == 0, d.log()


def test_cache_commands_without_a_daemon(tmp_path, origin, short_ts_file):
    name = publish(origin, "nodaemon/t.ts", short_ts_file)
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(origin.base_url))  # never started
    result = d.kvod("cache", "prefetch", name)
    assert f"prefetched {name}" in result.stdout, result.stderr
    status = cache_status(d)
    assert not status["daemon"]
    assert status["by_name"][name]["state"] == "complete"
    with open(d.title_info(name)["media_path"], "rb") as f:
        assert f.read() == open(short_ts_file, "rb").read()
    assert "evicted" in d.kvod("cache", "evict", name).stdout
    assert cache_status(d)["used_bytes"] == 0
    missing = d.kvod("cache", "prefetch", "nodaemon/none.ts", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr
    assert d.kvod("cache", "pin", "nope", check=False).returncode == 1
    url = "https://example.invalid/lib/film.ts"
    assert "added film.ts: remote" in d.kvod("catalog", "add", url).stdout


def test_a_file_origin(tmp_path, short_ts_file):
    library = tmp_path / "library"
    library.mkdir()
    os.symlink(short_ts_file, library / "local.ts")
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(f"file://{library}"))
    try:
        d.start()
        out = str(tmp_path / "out.ts")
        proc = gst_receive(d.url("local.ts"), out)
        output, _ = proc.communicate(timeout=30)
        assert gst_finished(proc, output), output
        assert sha256(out) == sha256(short_ts_file)
        info = d.wait_complete("local.ts")
        assert info["origin_url"] == f"file://{library}/local.ts"
        client = RtspClient("127.0.0.1", d.port)
        assert client.request("DESCRIBE", client.url("absent.ts")).status == 404
        client.close()
    finally:
        assert d.stop() == 0, d.log()
