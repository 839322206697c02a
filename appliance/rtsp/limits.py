"""What one client may take of the RTSP server, sans-IO.

One bad client must not hurt the others: a flood of requests on one
connection, a thousand connections from one address, connections that say
nothing (or a byte a minute: slowloris), one connection or address holding
every session. These are the counters and clocks the Twisted adapter and
the session layer consult; they do no I/O and take the time as an argument.

- :class:`RequestRate`: a token bucket per connection; a request over the
  rate is answered 503 (RTSP 1.0 has no 429), and a client that keeps
  going past twice the burst loses its connection.
- :class:`ConnectionTable`: connections per address, and which connection
  to close when the table is full: the one idle longest that holds no
  session, so idle connections never keep a new viewer out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Hashable, Iterator, Optional, TypeVar

K = TypeVar("K", bound=Hashable)


class RequestRate:
    """A token bucket: ``rate`` requests a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> str:
        """One request at ``now``: "ok", "over" (answer 503 and drop it) or
        "abuse" (past twice the burst over the rate: close the connection)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        if self._tokens >= 0:
            return "ok"
        if self._tokens < -2 * self.burst:
            return "abuse"
        return "over"


@dataclass
class ConnectionInfo:
    """What the table knows of one connection."""

    host: str
    opened: float
    last_active: float
    #: when its unfinished request began (None: between requests)
    partial_since: Optional[float] = None


class ConnectionTable(Generic[K]):
    """Open connections by key, counted per address, with their idleness.

    ``max_total`` connections in all, ``max_per_address`` from one address.
    """

    def __init__(self, *, max_total: int, max_per_address: int,
                 idle_timeout: float, request_timeout: float) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self._conns: dict[K, ConnectionInfo] = {}
        self._per_host: dict[str, int] = {}
        #: connections refused, and closed by the timeouts or to make room
        self.refused = 0
        self.closed_idle = 0
        self.closed_slow = 0
        self.closed_for_room = 0

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, key: object) -> bool:
        return key in self._conns

    def of_host(self, host: str) -> int:
        """Open connections from ``host``."""
        return self._per_host.get(host, 0)

    def admit(self, host: str, now: float,
              busy: Callable[[K], bool]) -> tuple[bool, Optional[K], str]:
        """Whether a new connection from ``host`` may open: (yes, a
        connection to close first to make room or None, why not).
        ``busy(key)``: the connection holds a session."""
        if self.of_host(host) >= self.max_per_address:
            self.refused += 1
            return False, None, (f"{host} already has {self.max_per_address} connections "
                                 f"(rtsp.max_connections_per_address)")
        if len(self._conns) < self.max_total:
            return True, None, ""
        victim = self.idlest(now, busy)
        if victim is None:
            self.refused += 1
            return False, None, (f"{len(self._conns)} connections are open, each with a "
                                 f"session or a request (rtsp.max_connections)")
        self.closed_for_room += 1
        return True, victim, ""

    def idlest(self, now: float, busy: Callable[[K], bool]) -> Optional[K]:
        """The connection without a session or a request under way that has
        been silent longest, or None."""
        best, best_at = None, now
        for key, info in self._conns.items():
            if info.partial_since is None and info.last_active <= best_at and not busy(key):
                best, best_at = key, info.last_active
        return best

    def opened(self, key: K, host: str, now: float) -> None:
        """A connection was accepted."""
        self._conns[key] = ConnectionInfo(host, now, now)
        self._per_host[host] = self._per_host.get(host, 0) + 1

    def closed(self, key: K) -> None:
        """A connection is gone (twice is fine)."""
        info = self._conns.pop(key, None)
        if info is None:
            return
        left = self._per_host[info.host] - 1
        if left:
            self._per_host[info.host] = left
        else:
            del self._per_host[info.host]

    def info(self, key: K) -> Optional[ConnectionInfo]:
        """What the table holds for ``key``."""
        return self._conns.get(key)

    def activity(self, key: K, now: float, *, partial: bool) -> None:
        """Bytes arrived; ``partial``: a request is begun and not complete."""
        info = self._conns.get(key)
        if info is None:
            return
        info.last_active = now
        if not partial:
            info.partial_since = None
        elif info.partial_since is None:
            info.partial_since = now

    def expired(self, now: float, busy: Callable[[K], bool]) -> Iterator[tuple[K, str]]:
        """Connections to close now, and why: a request begun more than
        ``request_timeout`` ago and still unfinished (slowloris), or no
        session (``busy``) and nothing heard for ``idle_timeout``."""
        for key, info in list(self._conns.items()):
            if info.partial_since is not None and \
                    now - info.partial_since > self.request_timeout:
                self.closed_slow += 1
                yield key, (f"request unfinished after {self.request_timeout:g} s "
                            "(rtsp.request_timeout)")
            elif now - info.last_active > self.idle_timeout and not busy(key):
                self.closed_idle += 1
                yield key, f"idle for {self.idle_timeout:g} s without a session (rtsp.idle_timeout)"

    def counters(self) -> dict[str, int]:
        """For status and metrics."""
        return {"open": len(self._conns), "refused": self.refused,
                "closed_idle": self.closed_idle, "closed_slow": self.closed_slow,
                "closed_for_room": self.closed_for_room}
