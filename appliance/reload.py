"""``systemctl reload kvod`` (SIGHUP): which config changes apply to the
running daemon and which wait for a restart.

Pure: it compares two Configs. The daemon applies what :func:`plan` calls
runtime changes (``appliance.daemon.KvodService.reload``) and logs the
rest as needing a restart; a config that does not load is refused by the
caller before it gets here, and the running config stays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from appliance.config import Config

#: keys that change what the running daemon does from the next request,
#: fill or stream on, without dropping a stream
RUNTIME_KEYS = frozenset({
    "rtsp.session_timeout", "rtsp.max_sessions", "rtsp.max_connections", "rtsp.server_name",
    "rtsp.max_connections_per_address", "rtsp.max_sessions_per_connection",
    "rtsp.max_sessions_per_address", "rtsp.idle_timeout", "rtsp.request_timeout",
    "rtsp.max_requests_per_second",
    "rtcp.sr_interval",
    "cache.max_bytes", "cache.policy", "cache.keep_prefix_seconds", "cache.stall_timeout",
    "origin.base_url", "origin.connect_timeout", "origin.read_timeout", "origin.retries",
    "origin.retry_delay", "origin.retry_max_delay", "origin.chunk_bytes",
    "origin.probe_bytes", "origin.tail_bytes", "origin.max_fills",
    "origin.requests_per_fill", "origin.connections", "origin.probe_timeout",
    "origin.min_rate", "origin.queue_timeout", "origin.idle_timeout", "origin.max_changes",
    "engine.pacing",
    "interleaved.max_lag", "interleaved.stall_timeout", "interleaved.send_buffer",
    "log.level",
    # the daemon builds a new auth gate on every reload (the users file is
    # re-read even when the config is unchanged)
    "auth.htdigest_file", "auth.realm", "auth.rules", "auth.nonce_lifetime",
})


@dataclass(frozen=True)
class Change:
    """One key whose value differs: ``key`` is ``section.name``."""

    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does: the changes it applies and those that need a restart."""

    runtime: tuple[Change, ...]
    restart: tuple[Change, ...]


def changes(old: Config, new: Config) -> list[Change]:
    """Every key whose value differs between ``old`` and ``new``, in config order."""
    out = []
    for section in dataclasses.fields(Config):
        before, after = getattr(old, section.name), getattr(new, section.name)
        for key in dataclasses.fields(before):
            a, b = getattr(before, key.name), getattr(after, key.name)
            if a != b:
                out.append(Change(f"{section.name}.{key.name}", a, b))
    return out


def plan(old: Config, new: Config) -> ReloadPlan:
    """Split the differences into what applies now and what needs a restart."""
    found = changes(old, new)
    return ReloadPlan(runtime=tuple(c for c in found if c.key in RUNTIME_KEYS),
                      restart=tuple(c for c in found if c.key not in RUNTIME_KEYS))
