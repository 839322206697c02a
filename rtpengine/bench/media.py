"""Titles for the benchmarks, made with ffmpeg once and kept in a cache folder."""

from __future__ import annotations

import os
import subprocess


def cache_dir() -> str:
    """Where benchmark titles are kept ($KVOD_BENCH_DIR, else ~/.cache/kvod)."""
    base = os.environ.get("KVOD_BENCH_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kvod")
    os.makedirs(base, exist_ok=True)
    return base


def bench_title(bitrate: str = "4M", seconds: int = 30, size: str = "1280x720") -> str:
    """An H.264+AAC MPEG-TS near ``bitrate`` (constant mux rate), made once."""
    path = os.path.join(cache_dir(), f"bench-{bitrate}-{seconds}s-{size}.ts")
    if os.path.exists(path):
        return path
    tmp = path + f".tmp{os.getpid()}.ts"
    rate = bitrate.upper().rstrip("B")
    scale = {"K": 1e3, "M": 1e6}.get(rate[-1], 1)
    bps = int(float(rate.rstrip("KM")) * scale)
    video = int(bps * 0.85)
    subprocess.run([
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-g", "50", "-b:v", str(video), "-maxrate", str(video), "-bufsize", str(video),
        "-c:a", "aac", "-b:a", "96k", "-muxrate", str(bps), "-f", "mpegts", tmp,
    ], check=True, timeout=600)
    os.replace(tmp, path)
    return path


def long_title(minutes: float, bitrate: str = "4M") -> str:
    """A title ``minutes`` long, made cheaply from the 30 s one by copying
    it in a loop (no encoding): what a library of films looks like to the
    control plane (a hint file of a two-hour film, its records)."""
    if minutes <= 0.5:
        return bench_title(bitrate=bitrate, seconds=max(1, round(minutes * 60)))
    base = bench_title(bitrate=bitrate, seconds=30)
    path = os.path.join(cache_dir(), f"bench-{bitrate}-{minutes:g}min.ts")
    if os.path.exists(path):
        return path
    tmp = path + f".tmp{os.getpid()}.ts"
    loops = int(minutes * 2) + 1
    subprocess.run([
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops),
        "-i", base, "-c", "copy", "-t", str(minutes * 60), "-f", "mpegts", tmp,
    ], check=True, timeout=1800)
    os.replace(tmp, path)
    return path


def bench_mp4(bitrate: str = "4M", seconds: int = 30, size: str = "1280x720") -> str:
    """The same title as :func:`bench_title`, remuxed (stream copy) into a
    progressive MP4 with ``moov`` at the end; made once."""
    src = bench_title(bitrate=bitrate, seconds=seconds, size=size)
    path = os.path.splitext(src)[0] + ".mp4"
    if os.path.exists(path):
        return path
    tmp = path + f".tmp{os.getpid()}.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", src,
                    "-map", "0", "-c", "copy", "-f", "mp4", tmp], check=True, timeout=600)
    os.replace(tmp, path)
    return path
