"""Digest nonces that expire, belong to one connection and count ``nc``.

A nonce is ``<issued ms, hex>-<random>-<MAC>``: the MAC (HMAC-SHA-256 under
a key made at start) covers the issue time, the random part and the
connection it was issued on, so issuing one stores nothing and a flood of
challenges costs no memory. A nonce from another connection, or after a
restart, fails its MAC; one older than ``lifetime`` is stale.

A nonce enters the table only when a request authenticates with it. The
table remembers the highest ``nc`` seen (a request must count up, so the
same nonce and nc is refused the second time) and when it was last used:
a nonce in use stays valid until ``lifetime`` has passed since its last
use, so a long play's keep-alives do not fall stale. The table holds at
most ``capacity`` nonces; evicting one raises a floor below which unknown
nonces count as stale, so an evicted nonce cannot be replayed either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

FRESH = "fresh"      # valid: go on
STALE = "stale"      # expired, evicted, not ours or another connection's: challenge again
REPLAY = "replay"    # a valid nonce with an nc already seen


@dataclass
class _Use:
    issued_ms: int
    last_used: float
    nc: int          # highest nc seen; -1 for the RFC 2069 form (no nc)


class NonceStore:
    """Issues nonces for connections and checks their use; time is a parameter."""

    def __init__(self, *, lifetime: float = 300.0, capacity: int = 10000,
                 key: bytes | None = None) -> None:
        if lifetime <= 0 or capacity <= 0:
            raise ValueError("lifetime and capacity must be positive")
        self.lifetime = lifetime
        self.capacity = capacity
        self._key = key if key is not None else secrets.token_bytes(32)
        self._used: OrderedDict[str, _Use] = OrderedDict()
        self._floor_ms = -1  # unknown nonces issued at or before this are stale

    def __len__(self) -> int:
        return len(self._used)

    def _mac(self, issued: str, rand: str, connection: str) -> str:
        msg = f"{issued}-{rand}-{connection}".encode("utf-8", "replace")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def issue(self, connection: str, now: float) -> str:
        """A new nonce for ``connection`` (any string naming it)."""
        issued = format(max(0, int(now * 1000)), "x")
        rand = secrets.token_hex(8)
        return f"{issued}-{rand}-{self._mac(issued, rand, connection)}"

    def check(self, nonce: str, nc: int | None, connection: str, now: float) -> str:
        """``FRESH``, ``STALE`` or ``REPLAY`` for a request that proved it
        knows the password with ``nonce`` and ``nc`` (None: no qop); a
        ``FRESH`` answer records the use."""
        self._expire(now)
        parts = nonce.split("-")
        if len(parts) != 3 or len(parts[0]) > 16:
            return STALE
        issued, rand, mac = parts
        if not hmac.compare_digest(mac.encode("utf-8", "replace"),
                                   self._mac(issued, rand, connection).encode("ascii")):
            return STALE
        issued_ms = int(issued, 16)  # the MAC proves we wrote it: valid hex
        use = self._used.get(nonce)
        if use is None:
            if issued_ms <= self._floor_ms or now - issued_ms / 1000 >= self.lifetime:
                return STALE
            use = _Use(issued_ms, now, -1)
            self._used[nonce] = use
            self._evict()
        elif nc is not None and nc <= use.nc:
            return REPLAY
        if nc is not None:
            use.nc = nc
        use.last_used = now
        self._used.move_to_end(nonce)
        return FRESH

    def _expire(self, now: float) -> None:
        # Least recently used first: stop at the first one still alive.
        while self._used:
            nonce, use = next(iter(self._used.items()))
            if now - use.last_used < self.lifetime:
                break
            del self._used[nonce]
            # it may have been issued after nonces still in the table; it
            # cannot come back: unknown, its issue time is older than lifetime

    def _evict(self) -> None:
        while len(self._used) > self.capacity:
            _, use = self._used.popitem(last=False)
            self._floor_ms = max(self._floor_ms, use.issued_ms)
