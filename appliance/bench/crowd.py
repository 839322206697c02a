"""A flash crowd against a real daemon (``kvod bench crowd``): ``sessions``
viewers arrive at once, ``concurrency`` of them being set up at a time,
and each plays until every one has had its first RTP packet.

Measured: the time from the first connect until every session had its
first packet (the target is 0.5 s for 1000 sessions, 100 at once), PLAY to
first packet under the crowd (p50, p99), failures (an answer other than
200, or no packet within the timeout), and the daemon's CPU per session
set up (its utime + stime over the crowd, from /proc).

The client (:mod:`appliance.bench.crowd_client`) is one thread over one
epoll, so that it costs far less than the daemon it measures; first
arrivals are the kernel's receive stamps.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
from typing import Callable, Optional

from appliance.bench.daemon import (ServeProcess, cpu_seconds, free_tcp_port, loopback_config,
                                    rtp_port_config)
from appliance.bench.crowd_client import Crowd
from rtpengine.bench.stats import percentile


def run_crowd(media_path: str, sessions: int = 1000, concurrency: int = 100,
              timeout: float = 10.0, progress: Optional[Callable[[float], None]] = None,
              folder: Optional[str] = None) -> dict:
    """Set up ``sessions`` sessions, ``concurrency`` at a time, against a
    fresh daemon serving ``media_path``; times in milliseconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sessions * 4 + 256 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.TemporaryDirectory(prefix="kvod-crowd-", dir=folder)
    port, admin = free_tcp_port(), free_tcp_port()
    config = os.path.join(tmp.name, "kvod.toml")
    with open(config, "w") as f:
        f.write(loopback_config(
            port, admin,
            # the crowd comes from one address: its per-address limits are the crowd's size
            rtsp=(f"max_sessions = {sessions + 10}\nmax_connections = {sessions + 10}\n"
                  f"max_sessions_per_address = {sessions + 10}\n"
                  f"max_connections_per_address = {sessions + 10}\n"
                  f"{rtp_port_config(sessions)}session_timeout = 120\n"),
            sections='[cache]\ndir = "cache"\n'))
    serve = ServeProcess(config, port, os.path.join(tmp.name, "kvod.log"))
    subprocess.run(serve.command("catalog", "add", media_path, "--name", "crowd"),
                   check=True, capture_output=True, timeout=300)
    serve.start()
    crowd = Crowd(port, "crowd", sessions, concurrency)
    cpu_before = cpu_seconds(serve.proc.pid)
    try:
        result = crowd.run(timeout, progress=(lambda f: progress(f * 0.9)) if progress else None)
        cpu = cpu_seconds(serve.proc.pid) - cpu_before
    finally:
        crowd.close()
        try:
            serve.stop(30)
        except TimeoutError:
            pass
        tmp.cleanup()
    played = [v for v in result.viewers if v.play_ns is not None]
    got = [v for v in played if v.first_ns is not None]
    latency = [(v.first_ns - v.play_ns) / 1e6 for v in got]
    all_first = (max(v.first_ns for v in got) - result.started_ns) / 1e6 if got else None
    failures = result.failures
    if progress:
        progress(1.0)
    return {
        "sessions": sessions, "concurrency": concurrency,
        "all_first_packet_ms": round(all_first, 1) if all_first is not None else None,
        "play_to_first_rtp_ms": {"p50": round(percentile(latency, 0.5), 3),
                                 "p99": round(percentile(latency, 0.99), 3)},
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:5],
        "server_cpu_ms_per_session": round(cpu * 1000 / max(len(played), 1), 3),
    }
