"""``kvod bench streams``: CPU and timeliness of N paced streams.

N streams of one MPEG-TS title play at the media rate through the C engine
to N UDP sockets on loopback. Python sleeps while they run, so the process's
CPU time (getrusage: user + system, which on loopback includes the kernel's
delivery to the receiving sockets) is the engine's. Timeliness comes from
the engine's own counters: how many packets left more than 1 ms / 5 ms
after their schedule.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Callable

from rtpengine.engine import Engine
from rtpengine.hintfile import HintFile
from rtpengine.rtp import random_seq, random_ssrc, random_ts


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _sink(rcvbuf: int = 1 << 16) -> socket.socket:
    """A loopback UDP socket that receives and never reads (the kernel drops)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    return s


def run_streams(media_path: str, hint_path: str, sessions: int, seconds: float, *,
                strategy: str = "auto", threads: int = 0,
                progress: Callable[[float], None] | None = None) -> dict:
    """Play ``sessions`` paced streams for ``seconds``; return the figures."""
    with HintFile(hint_path) as hints:
        title_ns = hints.header.duration_ns
        total_bytes = os.path.getsize(media_path)
    if title_ns < seconds * 1e9:
        raise ValueError(f"title lasts {title_ns / 1e9:.1f} s, bench wants {seconds} s")
    sinks, senders, streams = [], [], []
    media_fd = os.open(media_path, os.O_RDONLY)
    hint_fd = os.open(hint_path, os.O_RDONLY)
    engine = Engine(threads=threads, strategy=strategy)
    try:
        for _ in range(sessions):
            sink = _sink()
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.connect(sink.getsockname())
            sinks.append(sink)
            senders.append(sender)
            streams.append(engine.open_stream(sender.fileno(), media_fd, hint_fd,
                                              ssrc=random_ssrc(), seq0=random_seq(),
                                              ts0=random_ts()))
        cpu0, wall0 = _cpu_seconds(), time.monotonic()
        # Start the streams spread over one packet interval, as viewers arrive.
        for i, stream in enumerate(streams):
            stream.play(start_record=0)
        end = wall0 + seconds
        while (now := time.monotonic()) < end:
            if progress:
                progress(min((now - wall0) / seconds, 1.0))
            time.sleep(min(0.25, end - now))
        for stream in streams:
            stream.pause()
        cpu = _cpu_seconds() - cpu0
        wall = time.monotonic() - wall0
        stats = [s.stats() for s in streams]
        strategy_used = engine.strategy
    finally:
        for stream in streams:
            stream.close()
        engine.close()
        os.close(media_fd)
        os.close(hint_fd)
        for s in sinks + senders:
            s.close()
    packets = sum(s.packets_sent for s in stats)
    late5 = sum(s.late_5ms for s in stats)
    late1 = sum(s.late_1ms for s in stats)
    stream_seconds = sessions * wall
    return {
        "sessions": sessions,
        "seconds": round(wall, 3),
        "strategy": strategy_used,
        "bitrate_mbps": round(total_bytes * 8 / (title_ns / 1e9) / 1e6, 3),
        "packets": packets,
        "send_errors": sum(s.send_errors for s in stats),
        "cpu_s": round(cpu, 4),
        "cpu_ms_per_stream_s": round(cpu * 1000 / stream_seconds, 4),
        "within_1ms": round(1 - late1 / packets, 6) if packets else None,
        "within_5ms": round(1 - late5 / packets, 6) if packets else None,
        "max_late_ms": round(max((s.max_late_ns for s in stats), default=0) / 1e6, 3),
    }
