"""Start-up latency of a real daemon: DESCRIBE or PLAY to the first RTP packet.

Runs ``kvod serve`` as a child process on loopback with a throw-away
catalog holding one title, then opens ``sessions`` sessions one after the
other and times, for each:

- ``play``: from sending PLAY to the arrival of the first RTP packet;
- ``describe``: from sending DESCRIBE on a fresh connection (already
  connected) through SETUP and PLAY to the first RTP packet.

``ports`` is the daemon's ``[rtsp] server_ports``: a pair bound per
session, or the one shared pair.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from typing import Callable

from appliance.bench.daemon import ServeProcess, free_tcp_port, loopback_config, rtp_port_config
from appliance.bench.latency_floor import FloorServer
from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from rtpengine.bench.stats import percentile


class _Daemon:
    """kvod serve in a temporary folder, for the length of a benchmark, with
    ``titles`` (name -> media path) in its catalog."""

    def __init__(self, titles: dict[str, str], ports: str = "per-session"):
        self.tmp = tempfile.TemporaryDirectory(prefix="kvod-bench-")
        self.port = free_tcp_port()
        config = os.path.join(self.tmp.name, "kvod.toml")
        with open(config, "w") as f:
            f.write(loopback_config(self.port, free_tcp_port(),
                                    rtsp=rtp_port_config(1000) + f'server_ports = "{ports}"\n',
                                    sections='[cache]\ndir = "cache"\n'))
        self.serve = ServeProcess(config, self.port, os.path.join(self.tmp.name, "kvod.log"))
        for name, media_path in titles.items():
            subprocess.run(self.serve.command("catalog", "add", media_path, "--name", name),
                           check=True, capture_output=True, timeout=1800)
        self.serve.start()

    def close(self) -> None:
        try:
            self.serve.stop()
        except TimeoutError:
            pass  # killed; a benchmark has nothing more to say about it
        self.tmp.cleanup()


def _one_session(port: int, name: str = "bench") -> tuple[float, float]:
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", port)
    try:
        url = client.url(name)
        t_describe = time.monotonic_ns()
        resp = client.request("DESCRIBE", url, [("Accept", "application/sdp")])
        if resp.status != 200:
            raise RuntimeError(f"DESCRIBE answered {resp.status}")
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        t_play = time.monotonic_ns()
        resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=0-")])
        if resp.status != 200:
            raise RuntimeError(f"PLAY answered {resp.status}")
        if not receiver.wait_for(1, timeout=5):
            raise RuntimeError("no RTP packet within 5 s of PLAY")
        first = receiver.packets[0][0]
        client.request("TEARDOWN", url + "/", [("Session", session)])
        return (first - t_describe) / 1e6, (first - t_play) / 1e6
    finally:
        client.close()
        receiver.close()


def _summary(values: list[float]) -> dict:
    return {"p50": round(percentile(values, 0.5), 3), "p99": round(percentile(values, 0.99), 3)}


def run_latency(media_path: str, sessions: int = 50,
                progress: Callable[[float], None] | None = None,
                ports: str = "per-session", titles: dict[str, str] | None = None,
                floor: bool = False) -> dict:
    """Time ``sessions`` start-ups of each title against one fresh daemon
    whose server ports are ``ports`` (``"per-session"`` or ``"shared"``);
    milliseconds. ``titles`` (label -> media path) replaces ``media_path``
    for a side-by-side run; sessions alternate between them so that both
    meet the same machine. ``floor``: also time a server that does no work
    (:mod:`appliance.bench.latency_floor`), alternating with the titles,
    under the key "floor"."""
    titles = titles or {"bench": media_path}
    daemon = _Daemon(titles, ports)
    no_work = None
    targets = [(daemon.port, name) for name in titles]
    per_title: dict[str, tuple[list, list]] = {name: ([], []) for name in titles}
    try:
        if floor:
            no_work = FloorServer()
            targets.append((no_work.port, "floor"))
            per_title["floor"] = ([], [])
        for port, name in targets:
            _one_session(port, name)  # warm the page cache and the catalog
        for i in range(sessions):
            for port, name in targets:
                d, p = _one_session(port, name)
                per_title[name][0].append(d)
                per_title[name][1].append(p)
            if progress:
                progress((i + 1) / sessions)
    finally:
        if no_work is not None:
            no_work.close()
        daemon.close()
    figures = {name: {"describe_to_first_rtp_ms": _summary(d),
                      "play_to_first_rtp_ms": _summary(p)}
               for name, (d, p) in per_title.items()}
    result = {"sessions": sessions, "server_ports": ports,
              "titles": {name: figures[name] for name in titles}}
    if floor:
        result["floor"] = figures["floor"]
    first = next(iter(result["titles"].values()))
    result.update(first)  # the one-title keys, as before
    return result
