"""Benchmark of the MPEG-TS indexer on a page-cached file.

    /usr/bin/python3 -m rtpengine.bench.index [PATH] [--size-mb N] [--runs N]

Without PATH a title of about ``size_mb`` MB is made once (a benchmark
title from ``bench_media``, looped with ``ffmpeg -stream_loop`` and stream
copy, so the PCR runs on continuously) and kept in the benchmark cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, TypeVar

from rtpengine.bench.media import bench_title, cache_dir
from rtpengine.index.mpegts import index_mpegts

T = TypeVar("T")


def looped_title(size_mb: int) -> str:
    """A transport stream of about ``size_mb`` MB, made once and cached."""
    path = os.path.join(cache_dir(), f"bench-index-{size_mb}MB.ts")
    if os.path.exists(path):
        return path
    src = bench_title(bitrate="8M", seconds=20)
    tmp = path + f".tmp{os.getpid()}.ts"
    # loop for ever, stop at the size: stream copy drops the source's null
    # packets, so the copies are smaller than the source file
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                    "-stream_loop", "-1", "-i", src, "-map", "0", "-c", "copy",
                    "-fs", str(size_mb * 1_000_000), "-f", "mpegts", tmp],
                   check=True, timeout=600)
    os.replace(tmp, path)
    return path


def _warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def timed_runs(path: str, runs: int, index: Callable[[str, str], T]) -> tuple[list[float], T]:
    """``index(path, scratch folder)`` timed ``runs`` times (at least once),
    ``path`` read once first so every run finds it in the page cache; the
    seconds of each run and the last run's result."""
    _warm(path)
    times = []
    with tempfile.TemporaryDirectory(prefix="kvod-bench-index-") as tmp:
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            result = index(path, tmp)
            times.append(time.perf_counter() - t0)
    return times, result


def run(path: str | None = None, size_mb: int = 200, runs: int = 7) -> dict:
    """Index ``path`` (or a looped title of ``size_mb`` MB) ``runs`` times.

    The file is read once first so every run finds it in the page cache;
    each run is the whole ``index_mpegts`` call, hint file write included.
    Returns MB/s (10^6 bytes) best and median, records/s at the best run,
    the file size and the index figures.
    """
    path = path or looped_title(size_mb)
    size = os.path.getsize(path)
    times, ix = timed_runs(path, runs,
                           lambda p, tmp: index_mpegts(p, os.path.join(tmp, "bench.hint")))
    best = min(times)
    return {
        "path": path,
        "size_bytes": size,
        "runs": len(times),
        "mb_per_s_best": size / best / 1e6,
        "mb_per_s_median": size / statistics.median(times) / 1e6,
        "records_per_s": ix.records / best,
        "records": ix.records,
        "packets": ix.packets,
        "duration_s": ix.duration_ns / 1e9,
        "keyframes": ix.keyframes,
        "discontinuities": ix.discontinuities,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rtpengine.bench.index",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.path, args.size_mb, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
