"""kvod's HTTP download path against nginx-light serving the same file in
the same run (``kvod bench download --http``).

All run as child processes on loopback: nginx with ``sendfile on`` (its
``/media/``), ``kvod serve`` with ``[http] listen`` (its ``/titles/``), the
title added to kvod's catalog from the very file nginx serves, and a
second kvod on an ``ssl:`` endpoint (the TLS path: pread and pyOpenSSL). curl
downloads the title ``downloads`` times from each in turn into
/dev/null; the figure is the server's CPU (user + system of every process
and thread of it, from /proc) per GiB sent, and the throughput curl saw.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
import tempfile
import time
from typing import Callable, Optional

from appliance.bench.daemon import (ROOT, ServeProcess, free_tcp_port, loopback_config,
                                    wait_listening)
from appliance.bench.nginx_origin import NginxOrigin
from rtpengine.bench.media import bench_mp4, bench_title
from rtpengine.bench.stats import percentile

GIB = 1 << 30
Progress = Optional[Callable[[float], None]]


def padded_ts(size: int, folder: str) -> str:
    """An MPEG-TS of about ``size`` bytes: a small H.264 picture muxed at a
    high constant rate (the rest null packets), so it is cheap to make and
    to index; kept in ``folder``."""
    seconds = 20
    muxrate = max(size * 8 // seconds, 1_000_000)
    path = os.path.join(folder, f"download-{size}.ts")
    if os.path.exists(path):
        return path
    tmp = path + f".tmp{os.getpid()}.ts"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=320x240:rate=25", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "300k",
                    "-muxrate", str(muxrate), "-f", "mpegts", tmp], check=True, timeout=600)
    os.replace(tmp, path)
    return path


def process_cpu(pid: int) -> float:
    """User + system seconds of process ``pid`` and of its children's
    running processes (nginx's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid] + _children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _measure(url: str, pid: int, downloads: int, size: int) -> dict:
    cpu0, t0 = process_cpu(pid), time.monotonic()
    for _ in range(downloads):
        r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{size_download}", url],
                           capture_output=True, text=True, timeout=600)
        if r.returncode or int(r.stdout or 0) != size:
            raise RuntimeError(f"curl {url}: exit {r.returncode}, {r.stdout} of {size} bytes")
    wall = time.monotonic() - t0
    cpu = process_cpu(pid) - cpu0
    gib = size * downloads / GIB
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "cpu_s_per_gib": round(cpu / gib, 4), "gbit_s": round(size * downloads * 8 / wall / 1e9, 3)}


def _get(url: str, headers: Optional[dict] = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read()


def _first_segment_ms(base: str, name: str) -> float:
    """Playlist GET to the last byte of its first segment, in ms: a byte
    range of the MPEG-TS file, or for an MP4 title its init segment and
    first fMP4 segment."""
    started = time.monotonic()
    text = _get(f"{base}/hls/{name}/index.m3u8").decode()
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"\n', text)
    if init is not None:
        first = re.search(r"#EXTINF:[^\n]*\n([^#\n]+)\n", text)[1]
        head = _get(f"{base}/hls/{name}/{init[1]}")
        body = _get(f"{base}/hls/{name}/{first}")
        if head[4:8] != b"ftyp" or body[4:8] != b"moof":
            raise RuntimeError(f"first segment of {name}: not an fMP4 init and fragment")
        return (time.monotonic() - started) * 1000
    length, offset = map(int, re.search(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", text).groups())
    body = _get(f"{base}/hls/{name}/media.ts",
                {"Range": f"bytes={offset}-{offset + length - 1}"})
    if len(body) != length:
        raise RuntimeError(f"first segment of {name}: {len(body)} of {length} bytes")
    return (time.monotonic() - started) * 1000


def _spread(times: list[float]) -> dict:
    return {"p50": round(percentile(times, 0.5), 1), "max": round(max(times), 1)}


def _hls_first_segment(base: str, titles: int) -> dict:
    """HLS time to first segment of MPEG-TS titles the cache has never
    seen (each a miss: probe, fill, the first keyframe cut), then of the
    same titles cached."""
    misses = [_first_segment_ms(base, f"hls-{i}.ts") for i in range(titles)]
    hits = [_first_segment_ms(base, f"hls-{i}.ts") for i in range(titles)]
    return {"titles": titles, "target_duration_s": 6,
            "miss_ms": _spread(misses), "hit_ms": _spread(hits)}


def _hls_mp4_first_segment(base: str, titles: int) -> dict:
    """The same for MP4 titles (cached by ``kvod catalog add``: the proxy
    fills MPEG-TS only): the first request of each parses its tables and
    cuts its segments, the next finds them made."""
    first = [_first_segment_ms(base, f"hls-{i}.mp4") for i in range(titles)]
    again = [_first_segment_ms(base, f"hls-{i}.mp4") for i in range(titles)]
    return {"titles": titles, "target_duration_s": 6,
            "first_ms": _spread(first), "again_ms": _spread(again)}


def _kvod(folder: str, titles: dict[str, str], listen: str, origin: str) -> ServeProcess:
    """``kvod serve`` in ``folder`` with ``titles`` (name: file) added, started."""
    os.makedirs(folder, exist_ok=True)
    port, admin = free_tcp_port(), free_tcp_port()
    config = os.path.join(folder, "kvod.toml")
    with open(config, "w") as f:
        f.write(loopback_config(port, admin, sections=(
            f'[http]\nlisten = "{listen}"\n[origin]\nbase_url = "{origin}"\n'
            '[cache]\ndir = "cache"\n')))
    for name, path in titles.items():
        add = subprocess.run([os.path.join(ROOT, "bin", "kvod"), "--config", config,
                              "catalog", "add", path, "--name", name], capture_output=True,
                             text=True, timeout=600)
        if add.returncode:
            raise RuntimeError(f"kvod catalog add: {add.stderr.strip()}")
    daemon = ServeProcess(config, port, os.path.join(folder, "kvod.log"))
    daemon.start()
    return daemon


def _self_signed(folder: str) -> tuple[str, str]:
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


def run_http_download(size: int, media_dir: str, downloads: int = 5, hls_titles: int = 10,
                      tls: bool = True, progress: Progress = None) -> dict:
    """kvod's /titles/ (plain TCP: sendfile; and over TLS when ``tls``) and
    nginx's sendfile, ``downloads`` times each, one server after the
    other; HLS time to first segment of ``hls_titles`` 4 Mb/s MPEG-TS
    titles, uncached then cached, and of the same titles remuxed to MP4."""
    title = padded_ts(size, media_dir)
    size = os.path.getsize(title)
    daemons: list[ServeProcess] = []
    with tempfile.TemporaryDirectory(prefix="kvod-bench-download-") as folder:
        root = os.path.join(folder, "root")
        os.makedirs(root)
        os.symlink(title, os.path.join(root, "title.ts"))
        hls_title = bench_title("4M", 30)
        for i in range(hls_titles):
            os.symlink(hls_title, os.path.join(root, f"hls-{i}.ts"))
        os.makedirs(os.path.join(folder, "nginx"))
        nginx = NginxOrigin(os.path.join(folder, "nginx"), root)
        try:
            http = free_tcp_port()
            mp4 = bench_mp4("4M", 30)
            daemons.append(_kvod(os.path.join(folder, "kvod"),
                                 {"title.ts": title, **{f"hls-{i}.mp4": mp4
                                                        for i in range(hls_titles)}},
                                 f"tcp:{http}:interface=127.0.0.1", nginx.base_url))
            urls = {"kvod /titles/ (sendfile producer)":
                    (f"http://127.0.0.1:{http}/titles/title.ts", daemons[0].proc.pid),
                    "nginx-light (sendfile on)":
                    (f"{nginx.base_url}title.ts", nginx.proc.pid)}
            if tls:
                key, cert = _self_signed(folder)
                https = free_tcp_port()
                daemons.append(_kvod(
                    os.path.join(folder, "kvod-tls"), {"title.ts": title},
                    f"ssl:{https}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                    nginx.base_url))
                wait_listening(https, 15)
                urls["kvod /titles/ over TLS (pread + pyOpenSSL)"] = (
                    f"https://127.0.0.1:{https}/titles/title.ts", daemons[1].proc.pid)
            # warm the page cache and every server once
            for url, _ in urls.values():
                subprocess.run(["curl", "-sk", "-o", "/dev/null", url], timeout=600, check=True)
            servers = {name: _measure(url, pid, downloads, size)
                       for name, (url, pid) in urls.items()}
            hls = _hls_first_segment(f"http://127.0.0.1:{http}", hls_titles)
            hls_mp4 = _hls_mp4_first_segment(f"http://127.0.0.1:{http}", hls_titles)
        finally:
            for daemon in daemons:
                daemon.stop()
            nginx.stop()
    return {"size": size, "downloads": downloads, "servers": servers, "hls": hls,
            "hls_mp4": hls_mp4}


def run_hls_first_segment(titles: int = 10) -> dict:
    """HLS time to first segment alone: ``titles`` 4 Mb/s 30 s MPEG-TS
    titles through nginx (uncached, then cached) against the same title
    remuxed to MP4 (cached; first request, then again), one kvod."""
    with tempfile.TemporaryDirectory(prefix="kvod-bench-hls-") as folder:
        root = os.path.join(folder, "root")
        os.makedirs(root)
        for i in range(titles):
            os.symlink(bench_title("4M", 30), os.path.join(root, f"hls-{i}.ts"))
        os.makedirs(os.path.join(folder, "nginx"))
        nginx = NginxOrigin(os.path.join(folder, "nginx"), root)
        daemon = None
        try:
            http = free_tcp_port()
            mp4 = bench_mp4("4M", 30)
            daemon = _kvod(os.path.join(folder, "kvod"),
                           {f"hls-{i}.mp4": mp4 for i in range(titles)},
                           f"tcp:{http}:interface=127.0.0.1", nginx.base_url)
            wait_listening(http, 15)
            base = f"http://127.0.0.1:{http}"
            return {"mpegts": _hls_first_segment(base, titles),
                    "mp4": _hls_mp4_first_segment(base, titles)}
        finally:
            if daemon is not None:
                daemon.stop()
            nginx.stop()


def main(argv: list[str]) -> int:
    """``python3 -m appliance.bench.http_download --hls-titles N``: HLS
    time to first segment, MPEG-TS against MP4, as JSON."""
    parser = argparse.ArgumentParser(prog="appliance.bench.http_download",
                                     description=run_hls_first_segment.__doc__.split("\n")[0])
    parser.add_argument("--hls-titles", type=int, default=10)
    args = parser.parse_args(argv)
    if not 1 <= args.hls_titles <= 100:
        parser.error("--hls-titles is 1 to 100")
    print(json.dumps(run_hls_first_segment(args.hls_titles), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
