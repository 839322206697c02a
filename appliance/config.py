"""The daemon's TOML configuration (``/etc/kvod/kvod.toml``).

Every key has a default, so an empty file (or none) is a working config.
Anything else is checked at startup: an unknown section or key, or a value
of the wrong type or out of range, is a :class:`ConfigError` that names the
key, e.g. ``rtsp.session_timeout: expected a positive number, got 'abc'``.

Each section is a frozen dataclass whose fields carry their parser and their
one-line documentation; the loader, the checks and :func:`dump_defaults`
all read those, so a new key is added in one place.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, Callable, ClassVar, Mapping

from appliance.auth.rules import AccessRules

DEFAULT_PATH = "/etc/kvod/kvod.toml"


class ConfigError(ValueError):
    """The configuration is unusable; ``key`` is the dotted key at fault, if any."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class _Invalid(Exception):
    """A parser's complaint, before the key is known; carries what was expected."""


# -- value parsers: each returns the normalised value or raises _Invalid ------


def _positive_number(value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise _Invalid("a positive number")
    return float(value)


def _number_in(low: float, high: float, what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not low <= value <= high):
            raise _Invalid(what)
        return float(value)
    return parse


def _int_in(low: int, high: int, what: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(what)
        return value
    return parse


def _text(value: object) -> str:
    # Values end up in protocol headers and log lines: no control characters.
    if not isinstance(value, str) or not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _Invalid("a non-empty string without control characters")
    return value


def _endpoint(value: object) -> str:
    # Only the shape is checked here; Twisted's endpoint parser gives the
    # precise error when the service is built.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+:\S+", value):
        raise _Invalid("a Twisted endpoint string like 'tcp:8554:interface=::'")
    return value


def _path(value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _Invalid("a non-empty path")
    return value


def _optional_path(value: object) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise _Invalid("a path, or \"\" for none")
    return value


_HOST_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)"
                        r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def _host_names(value: object) -> tuple[str, ...]:
    expected = "a list of DNS host names like [\"kvod1.example.net\"]"
    if not isinstance(value, (list, tuple)):
        raise _Invalid(expected)
    names = []
    for item in value:
        if not isinstance(item, str) or not _HOST_NAME.fullmatch(item.lower().rstrip(".")):
            raise _Invalid(expected)
        names.append(item.lower().rstrip("."))
    return tuple(names)


def _one_of(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise _Invalid("one of " + ", ".join(map(repr, choices)))
        return value  # type: ignore[return-value]
    return parse


_URL_SCHEMES = ("http://", "https://", "file:///")


def _origin_urls(value: object) -> tuple[str, ...]:
    # One URL or a list, tried in order. Each is a folder: a title's path is
    # appended to it, so a missing trailing '/' is added.
    expected = ("an origin URL (http://host/media/, https://..., file:///srv/media/) "
                "or a list of them")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _Invalid(expected)
    urls = []
    for item in items:
        if (not isinstance(item, str) or not item.lower().startswith(_URL_SCHEMES)
                or any(ord(c) <= 32 or ord(c) == 127 for c in item)
                or "?" in item or "#" in item):
            raise _Invalid(expected)
        urls.append(item if item.endswith("/") else item + "/")
    return tuple(urls)


def _non_negative_number(value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise _Invalid("a number of seconds, 0 or more")
    return float(value)


def _byte_size_at_least(low: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        size = _byte_size(value)
        if size < low:
            raise _Invalid(f"a byte count of at least {low}")
        return size
    return parse


_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BYTE_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_byte_size(value: object) -> int:
    """A byte count from an integer or a string like ``"50GiB"``, ``"500MB"``, ``"1.5TB"``.

    Units are B, kB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers
    of 1024), case-insensitive. Bare ``K``/``M``/``G`` are refused because
    they are read both ways. Raises :class:`ValueError` otherwise.
    """
    try:
        return _byte_size(value)
    except _Invalid as exc:
        raise ValueError(f"expected {exc}, got {value!r}") from None


def _byte_size(value: object) -> int:
    expected = "a byte count: an integer or a string like '50GiB' or '500MB'"
    if isinstance(value, bool):
        raise _Invalid(expected)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise _Invalid(expected)
        return value
    if not isinstance(value, str):
        raise _Invalid(expected)
    match = _BYTE_SIZE.fullmatch(value)
    if not match or match[2].lower() not in _BYTE_UNITS:
        raise _Invalid(expected)
    amount = Fraction(match[1]) * _BYTE_UNITS[match[2].lower()]
    if amount.denominator != 1:
        raise _Invalid("a whole number of bytes")
    return int(amount)


# -- sections ------------------------------------------------------------------


def _setting(default: Any, parse: Callable[[object], Any], doc: str, *, path: bool = False) -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc, "path": path})


class _Section:
    """Checks every field of a section in the constructor, so a bad one cannot exist."""

    SECTION: ClassVar[str]
    DOC: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, f.metadata["parse"](value))
            except _Invalid as exc:
                raise ConfigError(f"expected {exc}, got {value!r}", self.dotted(f.name)) from None
        self._check()

    def _check(self) -> None:
        """Checks that involve more than one key; none by default."""

    @classmethod
    def dotted(cls, name: str) -> str:
        """The dotted key of one of this section's fields, e.g. ``rtsp.listen``."""
        return f"{cls.SECTION}.{name}"


_PORT = _int_in(1024, 65535, "a port number from 1024 to 65535")


@dataclass(frozen=True)
class RtspConfig(_Section):
    """``[rtsp]``: the RTSP server and its sessions."""

    SECTION: ClassVar[str] = "rtsp"
    DOC: ClassVar[str] = "The RTSP server and its sessions."

    listen: str = _setting(
        "tcp:8554:interface=0.0.0.0", _endpoint,
        "Twisted server endpoint the RTSP server listens on "
        "(e.g. 'tcp:8554:interface=::', 'systemd:domain=INET:index=0').")
    tls_listen: str = _setting(
        "none", lambda v: v if v == "none" else _endpoint(v),
        "Twisted server endpoint of RTSPS, RTSP over TLS (rtsps://; e.g. 'ssl:322:interface="
        "0.0.0.0:privateKey=/etc/kvod/tls/key.pem:certKey=/etc/kvod/tls/cert.pem'): RTP then "
        "goes interleaved on the TLS connection. 'none' (the default): no RTSPS.")
    listen_backlog: int = _setting(
        1024, _int_in(1, 65535, "an integer from 1 to 65535"),
        "Connections the kernel queues before the daemon accepts them, for a TCP listen "
        "endpoint that names no backlog= (a flash crowd of viewers connects at once).")
    session_timeout: float = _setting(
        60.0, _positive_number,
        "Seconds without a request or RTCP report before a session is torn down.")
    rtp_port_min: int = _setting(
        20000, _PORT, "Lowest server UDP port for RTP (even; RTCP uses the next one).")
    rtp_port_max: int = _setting(
        29999, _PORT, "Highest server UDP port for RTP/RTCP. Keep the range out of the "
        "kernel's ephemeral ports (net.ipv4.ip_local_port_range, 32768-60999 on Debian) or "
        "reserve it (net.ipv4.ip_local_reserved_ports): kvod status warns otherwise, and so "
        "does the daemon at start where its sandbox lets it read them.")
    max_sessions: int = _setting(
        1000, _int_in(1, 10**7, "a positive integer"), "Most RTSP sessions at once.")
    max_connections: int = _setting(
        1000, _int_in(1, 10**7, "a positive integer"), "Most RTSP connections at once.")
    max_connections_per_address: int = _setting(
        64, _int_in(1, 10**7, "a positive integer"),
        "Most RTSP connections from one client address (a NAT of many viewers counts once).")
    max_sessions_per_connection: int = _setting(
        16, _int_in(1, 10**7, "a positive integer"),
        "Most sessions one RTSP connection may set up (453 past it).")
    max_sessions_per_address: int = _setting(
        100, _int_in(1, 10**7, "a positive integer"),
        "Most sessions of one client address (453 past it).")
    idle_timeout: float = _setting(
        30.0, _positive_number,
        "Seconds a connection that holds no session may stay silent before it is closed.")
    request_timeout: float = _setting(
        10.0, _positive_number,
        "Seconds a client has to finish a request it began (slow senders are closed).")
    max_requests_per_second: float = _setting(
        20.0, _positive_number,
        "Requests a second one connection may make (bursts of twice that); past it a "
        "request is answered 503, and a connection far past it is closed.")
    server_name: str = _setting("kvod", _text, "Value of the RTSP 'Server' header.")
    server_ports: str = _setting(
        "per-session", _one_of("per-session", "shared"),
        "Server RTP/RTCP ports: 'per-session' (a pair from rtp_port_min..rtp_port_max for "
        "each stream) or 'shared' (every stream sends from the one pair shared_rtp_port, "
        "+1, so one system call carries packets for many clients).")
    port_pool: int = _setting(
        8, _int_in(0, 1024, "an integer from 0 to 1024"),
        "With per-session server ports: pairs bound ahead, per address family, so a "
        "SETUP need not bind one (0: bind each at SETUP).")
    shared_rtp_port: int = _setting(
        0, _int_in(0, 65534, "0 or a port number from 1024 to 65534"),
        "The even RTP port of the shared pair (RTCP uses the next one) when server_ports "
        "is 'shared'; 0 = rtp_port_min.")

    def _check(self) -> None:
        for name in ("rtp_port_min", "shared_rtp_port"):
            port = getattr(self, name)
            if port % 2:
                raise ConfigError(
                    f"expected an even port (RTP even, RTCP odd), got {port!r}",
                    self.dotted(name))
        if 0 < self.shared_rtp_port < 1024:
            raise ConfigError(
                f"expected 0 or a port number from 1024 to 65534, got {self.shared_rtp_port!r}",
                self.dotted("shared_rtp_port"))
        if self.rtp_port_max <= self.rtp_port_min:
            raise ConfigError(
                f"expected a port above rtsp.rtp_port_min ({self.rtp_port_min}), "
                f"got {self.rtp_port_max!r}", self.dotted("rtp_port_max"))

    @property
    def shared_pair(self) -> tuple[int, int]:
        """The (RTP, RTCP) server ports of ``server_ports = "shared"``."""
        rtp = self.shared_rtp_port or self.rtp_port_min
        return rtp, rtp + 1


@dataclass(frozen=True)
class RtcpConfig(_Section):
    """``[rtcp]``: RTCP reports."""

    SECTION: ClassVar[str] = "rtcp"
    DOC: ClassVar[str] = "RTCP reports (RFC 3550)."

    sr_interval: float = _setting(5.0, _positive_number, "Seconds between sender reports.")


@dataclass(frozen=True)
class InterleavedConfig(_Section):
    """``[interleaved]``: RTP on the RTSP connection (RTP/AVP/TCP)."""

    SECTION: ClassVar[str] = "interleaved"
    DOC: ClassVar[str] = ("RTP interleaved on the RTSP connection (RTP/AVP/TCP), and "
                          "clients that read it slower than the media.")

    max_lag: float = _setting(
        2.0, _positive_number,
        "Seconds a stream may fall behind its schedule because its client reads slowly "
        "before it skips to the next keyframe due (whole packets; counted in status).")
    stall_timeout: float = _setting(
        20.0, _positive_number,
        "Seconds a connection may take no byte at all before it is closed.")
    send_buffer: int = _setting(
        131072, _int_in(4096, 16 << 20, "an integer from 4096 to 16777216"),
        "SO_SNDBUF of a connection that carries RTP (the kernel doubles it): what the "
        "kernel holds for a slow reader, unseen by max_lag; enough for the bandwidth-delay "
        "product of the clients' paths.")


@dataclass(frozen=True)
class CacheConfig(_Section):
    """``[cache]``: where cached titles live and how much room they get."""

    SECTION: ClassVar[str] = "cache"
    DOC: ClassVar[str] = "Where cached titles live and how much room they get."

    dir: str = _setting(
        "/var/lib/kvod/cache", _path,
        "Folder of cached titles; relative to this file's folder if relative.", path=True)
    max_bytes: int = _setting(
        0, _byte_size,
        "Cache quota in bytes, or a size like \"50GiB\" or \"500MB\"; 0 = no quota.")
    policy: str = _setting(
        "lru", _one_of("lru", "lfu", "gdsf"),
        "Eviction policy: 'lru' (least recently used), 'lfu' (least frequently used) or "
        "'gdsf' (size-aware: keeps small, popular titles).")
    keep_prefix_seconds: float = _setting(
        10.0, _non_negative_number,
        "Eviction keeps this many seconds from the start of a title, so a later viewer "
        "starts at once; 0 evicts whole titles.")
    stall_timeout: float = _setting(
        20.0, _positive_number,
        "Seconds a viewer waits for bytes the fill has not brought before it gets a "
        "clean end (RTCP BYE).")


@dataclass(frozen=True)
class OriginConfig(_Section):
    """``[origin]``: where titles that are not cached come from."""

    SECTION: ClassVar[str] = "origin"
    DOC: ClassVar[str] = "The origin library that titles not in the cache are fetched from."

    base_url: tuple[str, ...] = _setting(
        (), _origin_urls,
        "Origin folder URL (http://, https:// or file:///), or a list tried in order; "
        "rtsp://kvod/PATH is fetched from BASE_URL + PATH. Empty: no origin.")
    connect_timeout: float = _setting(
        5.0, _positive_number, "Seconds to wait for a connection to the origin.")
    read_timeout: float = _setting(
        10.0, _positive_number,
        "Seconds without a byte from the origin before a request is given up.")
    retries: int = _setting(
        6, _int_in(0, 1000, "an integer from 0 to 1000"),
        "Retries of a failed request (with back-off) before the fill of a title stops.")
    retry_delay: float = _setting(
        0.5, _positive_number, "Seconds before the first retry; doubled for each next one.")
    retry_max_delay: float = _setting(
        10.0, _positive_number, "Longest wait between two retries, in seconds.")
    chunk_bytes: int = _setting(
        2**20, _byte_size_at_least(188 * 7),
        "Bytes asked for in one Range request of a fill.")
    probe_bytes: int = _setting(
        256 * 2**10, _byte_size_at_least(188 * 7),
        "Bytes fetched from the start of an unknown title on DESCRIBE (its PAT/PMT and "
        "first seconds).")
    tail_bytes: int = _setting(
        64 * 2**10, _byte_size,
        "Bytes fetched from the end of an unknown title on DESCRIBE, for its duration; "
        "0 estimates it from the bit rate.")
    max_fills: int = _setting(
        4, _int_in(1, 10000, "an integer from 1 to 10000"), "Titles filled at once.")
    requests_per_fill: int = _setting(
        2, _int_in(1, 64, "an integer from 1 to 64"),
        "Range requests in flight for one title.")
    connections: int = _setting(
        8, _int_in(1, 10000, "an integer from 1 to 10000"),
        "Persistent connections kept open to each origin host.")
    probe_timeout: float = _setting(
        10.0, _positive_number,
        "Seconds a DESCRIBE of an uncached title waits for the origin's probe, every try "
        "and URL included; then it is answered 504.")
    min_rate: int = _setting(
        16 * 2**10, _byte_size_at_least(1),
        "Slowest origin answer accepted, in bytes per second: a request's body must be "
        "in within read_timeout + its length / min_rate seconds (an origin that sends a "
        "byte now and then cannot hold a fill slot).")
    queue_timeout: float = _setting(
        15.0, _positive_number,
        "Seconds a DESCRIBE waits for a fill slot when max_fills titles are probed or "
        "filled already; then it is answered 503. A client that leaves takes its title "
        "out of the queue.")
    idle_timeout: float = _setting(
        30.0, _positive_number,
        "A fill that no viewer streams and no prefetch asked for stops after this many "
        "seconds and keeps its bytes; the next DESCRIBE (or prefetch) resumes it.")
    max_changes: int = _setting(
        3, _int_in(0, 100, "an integer from 0 to 100"),
        "Times in a row the title may change at the origin (another ETag or "
        "Last-Modified, with no request that went through between) before its fill "
        "gives up. An ETag that changes while size and Last-Modified stay is not a "
        "change: the fill validates by Last-Modified instead.")

    def _check(self) -> None:
        if self.retry_max_delay < self.retry_delay:
            raise ConfigError(
                f"expected at least origin.retry_delay ({self.retry_delay}), "
                f"got {self.retry_max_delay!r}", self.dotted("retry_max_delay"))


@dataclass(frozen=True)
class CatalogConfig(_Section):
    """``[catalog]``: the SQLite catalog."""

    SECTION: ClassVar[str] = "catalog"
    DOC: ClassVar[str] = "The SQLite catalog of titles."

    path: str = _setting(
        "/var/lib/kvod/catalog.db", _path,
        "Catalog database file; relative to this file's folder if relative.", path=True)


# The engine's strategy names (rtpengine.engine.STRATEGIES, which loads the
# C module; tests/test_config.py checks the two agree).
ENGINE_STRATEGIES = ("auto", "gso", "sendmmsg", "read_send_rtp", "read_writev", "mmap_writev",
                     "rtp_sendfile", "sendfile_more", "gso_zerocopy", "uring_gso")


@dataclass(frozen=True)
class EngineConfig(_Section):
    """``[engine]``: the RTP send engine."""

    SECTION: ClassVar[str] = "engine"
    DOC: ClassVar[str] = "The RTP send engine."

    threads: int = _setting(
        0, _int_in(0, 4096, "an integer from 0 to 4096"),
        "Pacing threads; 0 = one per core.")
    strategy: str = _setting(
        "auto", _one_of(*ENGINE_STRATEGIES),
        "Send strategy: 'auto' (the cheapest the kernel supports) or one by name: "
        + ", ".join(ENGINE_STRATEGIES[1:]) + ".")
    backend: str = _setting(
        "auto", _one_of("auto", "userspace", "krtpsendfile", "krtpmsend"),
        "Which engine sends: 'auto' (the krtp kernel module's krtpsendfile when "
        "/dev/krtp answers, else user space), 'userspace', 'krtpsendfile' or 'krtpmsend'.")
    lookahead_ms: float = _setting(
        2.0, _number_in(0.001, 1000, "milliseconds from 0.001 to 1000"),
        "User-space engine: a packet due this soon is sent now, with every other "
        "due as soon, in one batch; the engine's threads then wake at most once "
        "per lookahead.")
    burst_ms: float = _setting(
        20.0, _number_in(0, 1000, "milliseconds from 0 to 1000"),
        "User-space engine: a stream that sends also sends what it has due this "
        "soon (at least the lookahead), in one GSO message: a few packets a call "
        "for a slow stream instead of one, each at most this early, never later. "
        "20 ms (8 packets of a 4 Mb/s stream) costs half the CPU of 4 ms; clients' "
        "jitter buffers (hundreds of ms) take the early packets.")
    pacing: str = _setting(
        "auto", _one_of("auto", "engine", "kernel"),
        "Who keeps the user-space engine's packets to their times: 'auto' (the kernel's "
        "fq qdisc where it is on the client's interface, else the engine), 'engine', or "
        "'kernel' (SO_TXTIME; without fq the kernel ignores the times).")


@dataclass(frozen=True)
class LogConfig(_Section):
    """``[log]``: logging."""

    SECTION: ClassVar[str] = "log"
    DOC: ClassVar[str] = "Logging (to the journal under systemd)."

    level: str = _setting(
        "info", _one_of("debug", "info", "warning", "error"),
        "Least severe level logged: 'debug', 'info', 'warning' or 'error'.")


@dataclass(frozen=True)
class AdminConfig(_Section):
    """``[admin]``: the HTTP admin and metrics endpoint."""

    SECTION: ClassVar[str] = "admin"
    DOC: ClassVar[str] = "HTTP admin: JSON status and Prometheus /metrics. Keep it local."

    listen: str = _setting(
        "tcp:8555:interface=127.0.0.1", _endpoint,
        "Twisted server endpoint the admin HTTP server listens on.")
    token_file: str = _setting(
        "/var/lib/kvod/admin.token", _optional_path,
        "File of the token that authenticates writes (POST /cache/...) when the admin "
        "listener is not on loopback, sent as 'Authorization: Bearer TOKEN' (kvod's CLI "
        "reads it from here); made 0640 at start if missing, so group kvod can read it; "
        "relative to this file's folder if relative. \"\" turns authentication off "
        "(a warning at start if the listener is not on loopback).", path=True)
    names: tuple[str, ...] = _setting(
        (), _host_names,
        "Host names the admin listener answers for besides its IP addresses and "
        "'localhost' (a request with any other Host gets 421: a defence against DNS "
        "rebinding), e.g. [\"kvod1.example.net\"].")


@dataclass(frozen=True)
class HttpConfig(_Section):
    """``[http]``: the cache over HTTP (downloads, HLS)."""

    SECTION: ClassVar[str] = "http"
    DOC: ClassVar[str] = ("The cache over HTTP: /titles/NAME downloads (Range, ETag; a valid "
                          "origin for another kvod) and /hls/NAME/index.m3u8 playlists.")

    listen: str = _setting(
        "none", lambda v: v if v == "none" else _endpoint(v),
        "Twisted server endpoint of the HTTP listener (e.g. 'tcp:8080:interface=0.0.0.0'); "
        "'none' (the default) serves no HTTP: titles are then only for RTSP clients.")
    target_duration: float = _setting(
        6.0, _number_in(1, 60, "seconds from 1 to 60"),
        "HLS: the longest a segment may be, in seconds; segments are cut at the first "
        "keyframe at or after this much since the last cut.")

    @property
    def enabled(self) -> bool:
        """Whether an HTTP listener is configured."""
        return self.listen != "none"


def _realm(value: object) -> str:
    # htdigest separates user, realm and hash with ':'
    text = _text(value)
    if ":" in text:
        raise _Invalid("a realm name without ':' (the htdigest file's separator)")
    return text


def _access_rules(value: object) -> tuple[str, ...]:
    expected = 'a list of rules "PREFIX WHO" like ["/public/ open", "/staff/ alice bob"]'
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _Invalid(expected)
    try:
        AccessRules.parse(list(value))
    except ValueError as exc:
        raise _Invalid(f"{expected} ({exc})") from None
    return tuple(v.strip() for v in value)


@dataclass(frozen=True)
class AuthConfig(_Section):
    """``[auth]``: RTSP authentication (off until htdigest_file is set)."""

    SECTION: ClassVar[str] = "auth"
    DOC: ClassVar[str] = ("RTSP authentication: HTTP Digest (MD5, SHA-256) against an htdigest "
                          "users file; OPTIONS stays open. Off while htdigest_file is \"\".")

    htdigest_file: str = _setting(
        "", _optional_path,
        "Users file in Apache's htdigest format (htdigest -c FILE REALM USER makes it; a "
        "64-digit hash on a line of its own is a user's SHA-256 HA1); re-read on reload; "
        "relative to this file's folder if relative. \"\" turns authentication off.",
        path=True)
    realm: str = _setting(
        "kvod", _realm, "The Digest realm: the users of the htdigest file in this realm "
        "may log in.")
    rules: tuple[str, ...] = _setting(
        (), _access_rules,
        "Access by URL path prefix, \"PREFIX WHO\": WHO is 'open' (no login), 'any' (any "
        "user) or user names; whole path segments match, the longest prefix wins, and a "
        "path no rule names needs any user, e.g. [\"/public/ open\", \"/staff/ alice bob\"].")
    nonce_lifetime: float = _setting(
        300.0, _positive_number,
        "Seconds a Digest nonce stays valid after it was issued or last used; a client "
        "with an older one is asked again (stale=true) without a new password prompt.")

    def _check(self) -> None:
        if self.rules and not self.htdigest_file:
            raise ConfigError("access rules need a users file: set auth.htdigest_file",
                              self.dotted("rules"))

    @property
    def enabled(self) -> bool:
        """Whether RTSP requests need credentials at all."""
        return bool(self.htdigest_file)


_SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (RtspConfig, RtcpConfig, CacheConfig, OriginConfig, CatalogConfig,
                EngineConfig, LogConfig, AdminConfig, HttpConfig, AuthConfig,
                InterleavedConfig)
}


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per section."""

    rtsp: RtspConfig = field(default_factory=RtspConfig)
    rtcp: RtcpConfig = field(default_factory=RtcpConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    interleaved: InterleavedConfig = field(default_factory=InterleavedConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | None = None) -> Config:
        """Build a config from parsed TOML; missing keys take their defaults.

        Relative paths (``cache.dir``, ``catalog.path``) are joined to
        ``base_dir``; with no ``base_dir`` they are kept as given. Raises
        :class:`ConfigError` naming the first unknown or invalid key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a table of sections, got {data!r}")
        sections: dict[str, _Section] = {}
        for name, table in data.items():
            section_cls = _SECTIONS.get(name)
            if section_cls is None:
                kind = "section" if isinstance(table, Mapping) else "key"
                raise _unknown(kind, name, name, _SECTIONS)
            if not isinstance(table, Mapping):
                raise ConfigError(f"expected a table [{name}], got {table!r}", name)
            sections[name] = _build_section(section_cls, table, base_dir)
        return cls(**sections)


def _build_section(
    section_cls: type[_Section], table: Mapping[str, Any], base_dir: str | None
) -> _Section:
    known = {f.name: f for f in fields(section_cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise _unknown("key", section_cls.dotted(key), key, known)
        if known[key].metadata["path"] and base_dir is not None and isinstance(value, str) \
                and value and not os.path.isabs(value):
            value = os.path.normpath(os.path.join(base_dir, value))
        values[key] = value
    return section_cls(**values)


def _unknown(kind: str, dotted: str, name: str, choices: Any) -> ConfigError:
    # Match on the bare name: a shared "rtsp." prefix would make every key
    # of the section look alike.
    close = difflib.get_close_matches(name, list(choices), n=1)
    suggestion = dotted[: len(dotted) - len(name)] + close[0] if close else None
    error = ConfigError(
        f"unknown {kind} {dotted!r}" + (f" (did you mean {suggestion!r}?)" if suggestion else "")
    )
    error.key = dotted
    return error


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read the config file at ``path``; ``None`` gives all the defaults.

    Relative paths in ``cache.dir`` and ``catalog.path`` are resolved
    against the folder that holds the config file, so a config and its data
    can move together. Raises :class:`ConfigError` for an unreadable file,
    invalid TOML (with its line and column) or a bad key.
    """
    if path is None:
        return Config()
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 ({exc})") from exc
    return Config.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))


def _toml_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _toml_char(char: str) -> str:
    # TOML basic strings take any Unicode except '"', '\\' and control
    # characters, which are escaped as \uXXXX (always a BMP code point here).
    if char in '"\\' or ord(char) < 32 or ord(char) == 127:
        return f"\\u{ord(char):04x}"
    return char


def dump_config(config: Config) -> str:
    """``config`` as commented TOML; :func:`load_config` on the result gives it back."""
    lines = [
        "# kvod configuration (" + DEFAULT_PATH + ").",
        "# Every key is optional: a missing key takes the value shown here by default.",
        "# Unknown keys and invalid values stop kvod at startup with an error naming the key.",
    ]
    for name in _SECTIONS:
        section = getattr(config, name)
        lines += ["", f"# {section.DOC}", f"[{name}]"]
        for f in fields(section):
            lines.append(f"# {f.metadata['doc']}")
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
    return "\n".join(lines) + "\n"


def dump_defaults() -> str:
    """Every key with its default and its documentation, as commented TOML."""
    return dump_config(Config())

