"""The proxy cache measured against a local nginx origin (``kvod bench proxy``).

Runs nginx (Debian's nginx-light) and ``kvod serve`` as child processes on
loopback, in a temporary folder, and measures:

- miss -> first packet: DESCRIBE of a title the cache has never seen
  (probe, catalog entry, fill start) through SETUP and PLAY to the first
  RTP packet, over ``misses`` distinct titles; the same for hits;
- origin bytes per title byte: ``viewers`` viewers of one uncached title
  at once, bytes the origin sent (its access log) over the title's size;
- fill throughput: a large title prefetched through the daemon (written,
  fsync'ed, indexed), against a plain HTTP read of the same file from the
  same origin: Python's HTTP client reading the body 1 MiB at a time and
  dropping it (what ``curl -o /dev/null`` does: one copy out of the socket,
  no disk); and, for the disk's share, the same client writing the body
  to a file on the cache's file system, fsync'ed at the end. They alternate
  ``fill_rounds`` times, each fill a new name for the same file, and the
  medians are compared: on a shared machine the load changes from one
  second to the next;
- the control plane while filling: RTSP OPTIONS round trips from a client
  that asks every few milliseconds during the fills, against the same
  client on the idle daemon before them. A fill's bytes that the reactor
  moved itself would keep every viewer's request waiting meanwhile.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from typing import Callable, Optional

from appliance.bench.daemon import ServeProcess, free_tcp_port, loopback_config, rtp_port_config
from appliance.bench.latency import _one_session
from appliance.bench.nginx_origin import NginxOrigin
from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.bench.stats import percentile


class _ProxyDaemon:
    """kvod serve with an origin, in ``folder``."""

    def __init__(self, folder: str, base_url: str, max_fills: int = 4) -> None:
        self.port = free_tcp_port()
        self.admin_port = free_tcp_port()
        config = os.path.join(folder, "kvod.toml")
        with open(config, "w") as f:
            f.write(loopback_config(self.port, self.admin_port,
                                    rtsp=rtp_port_config(1000),
                                    # the miss path is measured, not the fill
                                    # queue: every miss gets its fill at once and
                                    # runs on after its viewer leaves
                                    sections=f'[origin]\nbase_url = "{base_url}"\n'
                                             f'max_fills = {max_fills}\nidle_timeout = 3600\n'
                                             f'[cache]\ndir = "cache"\n'))
        self.catalog_path = os.path.join(folder, "catalog.db")
        self.serve = ServeProcess(config, self.port, os.path.join(folder, "kvod.log"))
        self.serve.start()

    def admin(self, method: str, path: str) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def wait_complete(self, name: str, timeout: float = 600) -> float:
        """Seconds until ``name`` is complete."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            titles = {t["name"]: t for t in self.admin("GET", "/cache")["titles"]}
            if titles.get(name, {}).get("state") == "complete":
                return time.monotonic() - started
            time.sleep(0.02)
        raise RuntimeError(f"{name} not complete after {timeout} s")

    def wait_complete_in_catalog(self, name: str, timeout: float = 600) -> float:
        """Seconds until the catalog says ``name`` is complete: read from the
        catalog file here, not asked of the daemon, whose reactor would
        answer each poll (about half a millisecond each) instead of filling."""
        started = time.monotonic()
        db = sqlite3.connect(self.catalog_path, timeout=5)
        try:
            while time.monotonic() - started < timeout:
                row = db.execute("SELECT state FROM titles WHERE name = ?", (name,)).fetchone()
                if row is not None and row[0] == "complete":
                    return time.monotonic() - started
                time.sleep(0.002)
        finally:
            db.close()
        raise RuntimeError(f"{name} not complete after {timeout} s")

    def close(self) -> None:
        try:
            self.serve.stop(15)
        except TimeoutError:
            pass  # killed; a benchmark has nothing more to say about it


def _viewer(port: int, name: str, seconds: float, out: list) -> None:
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", port)
    try:
        url = client.url(name)
        client.request("DESCRIBE", url)
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        client.request("PLAY", url + "/", [("Session", session)])
        time.sleep(seconds)
        client.request("TEARDOWN", url + "/", [("Session", session)])
        out.append(len(receiver.packets))
    finally:
        client.close()
        receiver.close()


def _read_all(url: str) -> tuple[int, float]:
    started = time.monotonic()
    n = 0
    with urllib.request.urlopen(url, timeout=60) as resp:
        while chunk := resp.read(1 << 20):
            n += len(chunk)
    return n, time.monotonic() - started


def _read_to_file(url: str, path: str) -> float:
    """Seconds to read ``url`` into a new file at ``path``, fsync'ed once at
    the end: what a plain client that keeps the bytes costs."""
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    took = time.monotonic() - started
    os.unlink(path)
    return took


class _Pinger:
    """RTSP OPTIONS round trips (ms) while it runs, one every ``interval``
    seconds, taken in turn over ``connections`` connections so that each
    stays within the server's request rate per connection (20 a second)."""

    def __init__(self, port: int, *, connections: int = 10, interval: float = 0.005) -> None:
        self.port = port
        self.connections = connections
        self.interval = interval
        self.round_trips_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_Pinger":
        self._clients = [RtspClient("127.0.0.1", self.port) for _ in range(self.connections)]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        for client in self._clients:
            client.close()

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            client = self._clients[turn % len(self._clients)]
            turn += 1
            started = time.perf_counter()
            resp = client.request("OPTIONS", client.url(""))
            if resp.status == 200:
                self.round_trips_ms.append((time.perf_counter() - started) * 1e3)
            self._stop.wait(self.interval)


def _fill_against_plain(daemon: _ProxyDaemon, nginx: NginxOrigin, rounds: int,
                        folder: str) -> dict:
    """Fills of ``big-1.ts`` .. ``big-<rounds>.ts`` (one file), each after a
    plain read of it (and one into a file in ``folder``, on the cache's file
    system); MB/s of each, their medians and the medians' ratio."""
    size, _ = _read_all(nginx.base_url + "big-1.ts")   # warms the page cache
    plain, to_file, fills, sent, filling = [], [], [], 0, []
    with _Pinger(daemon.port) as idle:
        time.sleep(1.0)
    for k in range(1, rounds + 1):
        name = f"big-{k}.ts"
        _, origin_s = _read_all(nginx.base_url + name)
        to_file.append(size / _read_to_file(nginx.base_url + name,
                                            os.path.join(folder, "plain-read")) / 1e6)
        sent_before = nginx.bytes_sent(name)
        with _Pinger(daemon.port) as pinger:
            started = time.monotonic()
            daemon.admin("POST", f"/cache/prefetch?name={name}")
            daemon.wait_complete_in_catalog(name)
            fill_s = time.monotonic() - started
        filling += pinger.round_trips_ms
        sent += nginx.bytes_sent(name) - sent_before
        plain.append(size / origin_s / 1e6)
        fills.append(size / fill_s / 1e6)
    fill_mb_s, plain_mb_s = statistics.median(fills), statistics.median(plain)
    return {"title_bytes": size, "rounds": rounds,
            "fill_s": round(size / fill_mb_s / 1e6, 3),
            "fill_mb_per_s": round(fill_mb_s, 1),
            "origin_read_mb_per_s": round(plain_mb_s, 1),
            "fill_to_plain_read": round(fill_mb_s / plain_mb_s, 3),
            "origin_read_to_file_mb_per_s": round(statistics.median(to_file), 1),
            # what keeping the bytes costs at all here: a fill must write them too
            "fill_to_file_read": round(fill_mb_s / statistics.median(to_file), 3),
            "fill_mb_per_s_each": [round(v, 1) for v in fills],
            "origin_read_mb_per_s_each": [round(v, 1) for v in plain],
            "origin_bytes_per_title_byte": round(sent / size / rounds, 4),
            "options_ms_while_filling": _pct(filling),
            "options_ms_idle": _pct(idle.round_trips_ms)}


def _pct(values: list[float]) -> dict:
    """p50 and p99 of ``values`` and how many there were."""
    if not values:
        return {"p50": None, "p99": None, "count": 0}
    return {"p50": round(percentile(values, 0.5), 3),
            "p99": round(percentile(values, 0.99), 3), "count": len(values)}


def run_proxy(media_path: str, big_path: str, *, misses: int = 50, viewers: int = 4,
              fill_rounds: int = 3,
              progress: Optional[Callable[[float], None]] = None) -> dict:
    """Measure the miss path, shared fills and fill throughput; milliseconds and MB/s.
    The miss and shared titles are ``media_path`` (an MPEG-TS or an MP4, named
    with its extension); the throughput title is ``big_path``."""
    ext = os.path.splitext(media_path)[1] or ".ts"
    with tempfile.TemporaryDirectory(prefix="kvod-bench-proxy-") as tmp:
        library = os.path.join(tmp, "library")
        os.makedirs(os.path.join(library, "miss"))
        for i in range(misses + 1):
            os.symlink(media_path, os.path.join(library, "miss", f"t{i}{ext}"))
        os.symlink(media_path, os.path.join(library, f"shared{ext}"))
        for k in range(1, fill_rounds + 1):
            os.symlink(big_path, os.path.join(library, f"big-{k}.ts"))
        os.makedirs(os.path.join(tmp, "nginx"))
        nginx = NginxOrigin(os.path.join(tmp, "nginx"), library)
        daemon = None
        try:
            daemon = _ProxyDaemon(tmp, nginx.base_url, max_fills=misses + 8)
            _one_session(daemon.port, f"miss/t{misses}{ext}")  # warm up imports and pools
            miss_describe, miss_play = [], []
            for i in range(misses):
                d, p = _one_session(daemon.port, f"miss/t{i}{ext}")
                miss_describe.append(d)
                miss_play.append(p)
                if progress:
                    progress(0.6 * (i + 1) / misses)
            daemon.wait_complete(f"miss/t{misses - 1}{ext}")
            hit_describe = [_one_session(daemon.port, f"miss/t{i}{ext}")[0]
                            for i in range(min(misses, 20))]

            counts: list[int] = []
            threads = [threading.Thread(target=_viewer, args=(daemon.port, f"shared{ext}", 2.0,
                                                               counts)) for _ in range(viewers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            daemon.wait_complete(f"shared{ext}")
            shared_ratio = nginx.bytes_sent(f"shared{ext}") / os.path.getsize(media_path)
            if progress:
                progress(0.7)

            fill = _fill_against_plain(daemon, nginx, fill_rounds, tmp)
            if progress:
                progress(1.0)
        finally:
            if daemon is not None:
                daemon.close()
            nginx.stop()

    return {
        "misses": misses,
        "container": "mp4" if ext == ".mp4" else "mpegts",
        "miss_describe_to_first_rtp_ms": _pct(miss_describe),
        "miss_play_to_first_rtp_ms": _pct(miss_play),
        "hit_describe_to_first_rtp_ms": _pct(hit_describe),
        "shared_fill": {"viewers": viewers, "origin_bytes_per_title_byte": round(shared_ratio, 4),
                        "packets_per_viewer": counts},
        "fill": fill,
    }
