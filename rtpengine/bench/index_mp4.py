"""Benchmark of the MP4 indexer on a page-cached two-hour film.

    /usr/bin/python3 -m rtpengine.bench.index_mp4 [PATH] [--minutes N] [--runs N]

Without PATH a long-GOP H.264 (B-frames) + AAC MP4 of ``minutes`` is made
once, cheaply: a 60 s clip looped with ``-stream_loop`` and stream copy
into one progressive MP4 (``moov`` at the end), kept in the benchmark
cache. Its bit rate is low (the indexer's cost is per sample and per NAL
unit, not per byte of media), so the file stays a few hundred MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from rtpengine.bench.index import timed_runs
from rtpengine.bench.media import cache_dir
from rtpengine.index.mp4 import index_mp4


def long_mp4(minutes: int = 120) -> str:
    """An H.264 + AAC MP4 of ``minutes``, made once and cached."""
    path = os.path.join(cache_dir(), f"bench-index-{minutes}min.mp4")
    if os.path.exists(path):
        return path
    clip = os.path.join(cache_dir(), "bench-index-clip-60s.mp4")
    if not os.path.exists(clip):
        tmp = clip + f".tmp{os.getpid()}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2",
                        "-g", "250", "-b:v", "150k", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-b:a", "32k", "-f", "mp4", tmp],
                       check=True, timeout=600)
        os.replace(tmp, clip)
    tmp = path + f".tmp{os.getpid()}.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                    "-stream_loop", "-1", "-i", clip, "-map", "0", "-c", "copy",
                    "-t", str(minutes * 60), "-f", "mp4", tmp], check=True, timeout=1200)
    os.replace(tmp, path)
    return path


def run(path: str | None = None, minutes: int = 120, runs: int = 5) -> dict:
    """Index ``path`` (or a looped film of ``minutes``) ``runs`` times, the
    file in the page cache; each run is the whole ``index_mp4`` call, hint
    files written. Returns seconds, samples/s and MB/s (best and median)."""
    path = path or long_mp4(minutes)
    size = os.path.getsize(path)
    times, ix = timed_runs(path, runs, lambda p, tmp: index_mp4(
        p, lambda i: os.path.join(tmp, f"track{i}.hint")))
    best, median = min(times), statistics.median(times)
    samples = sum(t.samples for t in ix.tracks)
    return {
        "path": path,
        "size_bytes": size,
        "duration_s": ix.duration_ns / 1e9,
        "runs": len(times),
        "seconds_best": best,
        "seconds_median": median,
        "samples": samples,
        "records": sum(t.records for t in ix.tracks),
        "samples_per_s_best": samples / best,
        "mb_per_s_best": size / best / 1e6,
        "tracks": [{"codec": t.codec, "samples": t.samples, "records": t.records,
                    "keyframes": t.keyframes} for t in ix.tracks],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rtpengine.bench.index_mp4",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?")
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.path, args.minutes, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
