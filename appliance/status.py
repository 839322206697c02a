"""What the daemon reports about itself: one JSON-able snapshot.

Built on request from the live objects (engine, sessions, their streams),
so it is never stale; served by ``appliance.admin_http`` as ``/status`` and
rendered as Prometheus text by ``appliance.metrics``.
"""

from __future__ import annotations

import os
import time

VERSION = "0.1.0"


def stream_status(stream) -> dict:
    """One stream's figures, from its engine counters and the client's RTCP."""
    return stream.status()


def daemon_status(*, engine, server, started: float, now: float | None = None,
                  ports: dict | None = None, traffic: dict | None = None,
                  damaged: list | None = None, connections: dict | None = None,
                  auth: dict | None = None) -> dict:
    """The snapshot: engine, server ports, sessions with their streams, and totals.

    ``ports`` is the server port policy's status (``appliance.media.server_ports``):
    its mode, and the shared pair or the per-session range. ``traffic`` is
    what every stream since start sent (``UdpMediaBackend.traffic``);
    ``damaged``: the (name, why) of titles whose cached files changed under
    a stream; ``connections``: the RTSP connections open and those refused
    or closed by the limits (``appliance.rtsp.limits.ConnectionTable``);
    ``auth``: the RTSP auth gate's figures (challenges, refusals by reason),
    when authentication is on."""
    now = time.time() if now is None else now
    sessions = []
    for session in sorted(server.sessions.values(), key=lambda s: s.id):
        sessions.append({
            "id": session.id,
            "title": session.title_name,
            "client": session.peer_host,
            "state": session.state.value,
            "streams": {str(index): stream_status(stream)
                        for index, stream in sorted(session.streams.items())},
        })
    status = {
        "version": VERSION,
        "pid": os.getpid(),
        "uptime_s": round(now - started, 3),
        "engine": engine.status(),
        "server_ports": ports or {},
        "rtsp": {"connections": connections or {}},
        "traffic": traffic or {},
        "sessions": sessions,
        "damaged_titles": [{"name": name, "why": why} for name, why in damaged or ()],
        "totals": {
            "sessions": len(sessions),
            "playing": sum(1 for s in sessions if s["state"] == "playing"),
            "packets_sent": sum(st.get("packets_sent", 0) for s in sessions
                                for st in s["streams"].values()),
        },
    }
    if auth is not None:
        status["auth"] = auth
    return status
