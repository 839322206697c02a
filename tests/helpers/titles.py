"""Test titles made with the real ffmpeg, cached under build/test-media."""

from __future__ import annotations

import hashlib
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA_DIR = os.path.join(ROOT, "build", "test-media")


def make_ts(seconds: float = 10, size: str = "640x360", rate: int = 25,
            gop: int = 25, video_bitrate: str = "1M", audio: bool = True,
            name: str | None = None) -> str:
    """An H.264(+AAC) MPEG-TS of ``seconds``, a keyframe every ``gop`` frames.

    Made once per parameter set and reused across runs; written to a
    temporary name and renamed so a killed run leaves no half file.
    """
    key = f"{seconds}-{size}-{rate}-{gop}-{video_bitrate}-{audio}"
    name = name or f"ts-{hashlib.sha1(key.encode()).hexdigest()[:12]}.ts"
    path = os.path.join(MEDIA_DIR, name)
    if os.path.exists(path):
        return path
    os.makedirs(MEDIA_DIR, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}.ts"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
            "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-b:v", video_bitrate, "-maxrate", video_bitrate, "-bufsize", video_bitrate]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k"]
    cmd += ["-f", "mpegts", tmp]
    subprocess.run(cmd, check=True, timeout=300)
    os.replace(tmp, path)
    return path


def looped_ts(source: str, loops: int) -> str:
    """``source`` (an MPEG-TS) played ``loops`` times over, copied, not
    encoded: a title of tens of MB in about a second. Made once and cached."""
    key = f"{os.path.basename(source)}-{os.path.getsize(source)}-{loops}"
    path = os.path.join(MEDIA_DIR, f"loop-{hashlib.sha1(key.encode()).hexdigest()[:12]}.ts")
    if os.path.exists(path):
        return path
    os.makedirs(MEDIA_DIR, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}.ts"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                    "-stream_loop", str(loops - 1), "-i", source, "-c", "copy",
                    "-f", "mpegts", tmp], check=True, timeout=300)
    os.replace(tmp, path)
    return path


def make_mp4(seconds: float = 4, *, video: str | None = "h264", audio: bool = True,
             faststart: bool = False, bframes: int = 2, size: str = "320x240",
             rate: int = 25, gop: int = 25, video_bitrate: str = "600k",
             extra: tuple[str, ...] = ()) -> str:
    """A progressive MP4 made by ffmpeg: ``video`` 'h264' (B-frames, so
    composition offsets and an edit list), 'hevc' or None; AAC audio;
    ``moov`` at the end unless ``faststart``. Made once and cached."""
    key = f"{seconds}-{video}-{audio}-{faststart}-{bframes}-{size}-{rate}-{gop}-" \
          f"{video_bitrate}-{extra}"
    path = os.path.join(MEDIA_DIR, f"mp4-{hashlib.sha1(key.encode()).hexdigest()[:12]}.mp4")
    if os.path.exists(path):
        return path
    os.makedirs(MEDIA_DIR, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}.mp4"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds)]
    if video == "h264":
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-bf", str(bframes),
                "-x264-params", "slices=2"]
    elif video == "hevc":
        cmd += ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                f"bframes={bframes}:log-level=error", "-tag:v", "hvc1"]
    if video:
        cmd += ["-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop),
                "-sc_threshold", "0", "-b:v", video_bitrate]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    cmd += [*extra, "-f", "mp4", tmp]
    subprocess.run(cmd, check=True, timeout=300)
    os.replace(tmp, path)
    return path


def long_mp4(minutes: float = 2, *, clip_seconds: float = 8, gop: int = 40) -> str:
    """A progressive MP4 of ``minutes`` made cheaply: a short H.264 + AAC
    clip (``make_mp4``, a keyframe every ``gop`` frames) copied in a loop
    (``-stream_loop``, ``-c copy``), moov at the end. Made once."""
    clip = make_mp4(clip_seconds, gop=gop)
    path = os.path.join(MEDIA_DIR, f"long-{minutes:g}min-{os.path.basename(clip)}")
    if os.path.exists(path):
        return path
    tmp = path + f".tmp{os.getpid()}.mp4"
    loops = int(minutes * 60 // clip_seconds) + 1
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop",
                    str(loops), "-i", clip, "-c", "copy", "-t", str(minutes * 60),
                    "-f", "mp4", tmp], check=True, timeout=300)
    os.replace(tmp, path)
    return path
