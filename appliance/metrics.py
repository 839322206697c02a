"""``/metrics``: the daemon's figures for Prometheus, through
python3-prometheus-client.

Aggregate series only: per-session detail stays in ``/status`` and
``kvod status``, because a label per session (an unbounded set) hurts
every Prometheus server that scrapes it. The series are read from the live
status snapshot at each scrape (:class:`StatusCollector`); the request
durations are observed as requests are answered.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: seconds: an RTSP answer from the cache takes about a millisecond, one
#: that waits for the origin (a miss) tens or hundreds
REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class StatusCollector:
    """Builds the series from ``status()`` (``appliance.status``) and
    ``cache()`` (the proxy cache's figures) at each scrape."""

    def __init__(self, status: Callable[[], dict], cache: Callable[[], dict] | None) -> None:
        self._status = status
        self._cache = cache

    def collect(self):
        """The metric families of one scrape (the prometheus_client API)."""
        status = self._status()
        engine = status["engine"]
        yield _gauge("kvod_uptime_seconds", "Seconds since the daemon started.",
                     status["uptime_s"])
        info = GaugeMetricFamily("kvod_engine_info",
                                 "Send strategy in use (1), the one asked for, its fallback.",
                                 labels=["strategy", "requested", "fallback"])
        info.add_metric([engine["strategy"], engine["requested_strategy"],
                         engine.get("fallback") or ""], 1)
        yield info
        yield _gauge("kvod_engine_threads", "Engine pacing threads.", engine["threads"])
        for key in ("rounds", "syscalls", "packets", "messages"):
            yield _counter(f"kvod_engine_{key}", f"Engine {key} since start.",
                           engine.get(key, 0))
        ports = status.get("server_ports") or {}
        if ports:
            mode = GaugeMetricFamily(
                "kvod_server_ports_info",
                "Server RTP/RTCP port mode (1), and the shared RTP port (0 per session).",
                labels=["mode", "rtp"])
            mode.add_metric([ports["mode"], str(ports.get("rtp", 0))], 1)
            yield mode
        if ports.get("mode") == "shared":
            rtcp = CounterMetricFamily("kvod_shared_rtcp_packets",
                                       "RTCP packets on the shared port, by how they "
                                       "found their stream.", labels=["match"])
            for key, value in ports["rtcp_in"].items():
                rtcp.add_metric([key], value)
            yield rtcp
        sessions = GaugeMetricFamily("kvod_sessions", "RTSP sessions by state.",
                                     labels=["state"])
        for state in ("init", "ready", "playing"):
            sessions.add_metric([state], sum(1 for s in status["sessions"]
                                             if s["state"] == state))
        yield sessions
        connections = status.get("rtsp", {}).get("connections", {})
        if connections:
            yield _gauge("kvod_rtsp_connections", "RTSP connections open.",
                         connections["open"])
            closed = CounterMetricFamily(
                "kvod_rtsp_connections_limited",
                "RTSP connections refused or closed by the limits, by reason.",
                labels=["reason"])
            for key in ("refused", "closed_idle", "closed_slow", "closed_for_room"):
                closed.add_metric([key], connections[key])
            yield closed
        traffic = status.get("traffic", {})
        for key, name, doc in (
                ("packets_sent", "kvod_sent_packets", "RTP packets sent."),
                ("payload_octets", "kvod_sent_payload_bytes", "RTP payload bytes sent."),
                ("late_5ms", "kvod_late_packets",
                 "RTP packets sent more than 5 ms after their schedule."),
                ("send_errors", "kvod_send_errors", "Send calls that failed."),
                ("skips", "kvod_interleaved_skips",
                 "Times a TCP-interleaved stream fell too far behind its "
                 "schedule (a slow reader) and skipped to a keyframe."),
                ("packets_skipped", "kvod_interleaved_skipped_packets",
                 "RTP packets those skips left out."),
                ("stalled", "kvod_interleaved_stalls",
                 "RTSP connections closed because their reader took nothing "
                 "for the stall time.")):
            yield _counter(name, doc, traffic.get(key, 0))
        auth = status.get("auth")
        if auth is not None:
            yield _counter("kvod_auth_challenges",
                           "RTSP requests without credentials answered 401 with a challenge.",
                           auth["challenges"])
            failures = CounterMetricFamily("kvod_auth_failures",
                                           "RTSP requests refused by authentication, by reason.",
                                           labels=["reason"])
            for reason, count in auth["failures"].items():
                failures.add_metric([reason], count)
            yield failures
        if self._cache is None:
            return
        cache = self._cache()
        yield _gauge("kvod_cache_bytes", "Bytes the cache holds.", cache["used_bytes"])
        yield _gauge("kvod_cache_quota_bytes", "The cache's quota (0: none).",
                     cache["quota_bytes"])
        yield _counter("kvod_cache_hits", "DESCRIBEs answered from the cache (whole or filling).",
                       cache["hits"])
        yield _counter("kvod_cache_misses", "Titles fetched from the origin on demand.",
                       cache["misses"])
        yield _gauge("kvod_fills", "Fills running now.", cache["fills"])
        yield _gauge("kvod_fill_errors", "Titles whose last fill stopped on an error.",
                     cache["fill_errors"])


class DaemonMetrics:
    """The daemon's own registry: the status series and the RTSP request
    durations (PLAY's is the start-up latency a viewer waits for)."""

    def __init__(self, status: Callable[[], dict], cache: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry()
        self.registry.register(StatusCollector(status, cache))
        self.requests = Histogram("kvod_rtsp_request_seconds",
                                  "Time from an RTSP request to its answer, by method; "
                                  "PLAY's is the start-up latency.",
                                  ["method"], buckets=REQUEST_BUCKETS, registry=self.registry)

    def answered(self, method: str, seconds: float) -> None:
        """Observe one answered request (methods outside RTSP's count as 'other')."""
        known = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN",
                 "GET_PARAMETER", "SET_PARAMETER")
        self.requests.labels(method if method in known else "other").observe(seconds)

    def text(self) -> bytes:
        """The exposition of every series, now."""
        return generate_latest(self.registry)
