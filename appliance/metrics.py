"""Prometheus text exposition (format 0.0.4) of a status snapshot."""

from __future__ import annotations


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(status: dict) -> str:
    """The ``/metrics`` body for ``status`` (see ``appliance.status``)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")

    engine = status["engine"]
    metric("kvod_uptime_seconds", "gauge", "Seconds since the daemon started.",
           [({}, status["uptime_s"])])
    metric("kvod_engine_info", "gauge", "Send strategy in use (1) and the one asked for.",
           [({"strategy": engine["strategy"], "requested": engine["requested_strategy"],
              "fallback": engine.get("fallback") or ""}, 1)])
    metric("kvod_engine_threads", "gauge", "Engine pacing threads.", [({}, engine["threads"])])
    for key in ("rounds", "syscalls", "packets", "messages"):
        metric(f"kvod_engine_{key}_total", "counter", f"Engine {key} since start.",
               [({}, engine.get(key, 0))])
    ports = status.get("server_ports") or {}
    if ports:
        metric("kvod_server_ports_info", "gauge",
               "Server RTP/RTCP port mode (1), and the shared RTP port (0 per session).",
               [({"mode": ports["mode"], "rtp": ports.get("rtp", 0)}, 1)])
    if ports.get("mode") == "shared":
        metric("kvod_shared_rtcp_packets_total", "counter",
               "RTCP packets on the shared port, by how they found their stream.",
               [({"match": key}, value) for key, value in ports["rtcp_in"].items()])
    metric("kvod_sessions", "gauge", "RTSP sessions by state.",
           [({"state": state}, sum(1 for s in status["sessions"] if s["state"] == state))
            for state in ("ready", "playing")])
    streams = [(s, index, st) for s in status["sessions"] for index, st in s["streams"].items()]
    for key, kind, help_text in (
            ("packets_sent", "counter", "RTP packets sent."),
            ("payload_octets", "counter", "RTP payload bytes sent."),
            ("send_errors", "counter", "Send calls that failed."),
            ("late_5ms", "counter", "Packets sent more than 5 ms after their schedule."),
            ("loss_fraction", "gauge", "Loss the client reported in RTCP (0..1)."),
            ("jitter", "gauge", "Interarrival jitter the client reported, RTP units.")):
        metric(f"kvod_stream_{key}", kind, help_text,
               [({"session": s["id"], "title": s["title"], "track": index}, st.get(key, 0))
                for s, index, st in streams])
    return "\n".join(lines) + "\n"
