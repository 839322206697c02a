"""How many bytes one Range request of a fill asks for (sans-IO).

The configured chunk (``[origin] chunk_bytes``) is what a slow origin gets:
a viewer's want waits behind the requests in flight, so a request should
not last long. Each request also has a fixed cost, a round trip and about a
millisecond of the reactor's time (the answer's headers parsed, its
Deferreds run); from an origin on the same machine, 1 MiB requests cost as
much as moving their bytes. So a request asks for about what the origin
sends in ``target`` seconds, measured on the last requests, never less than
the chunk and never more than ``most`` bytes.
"""

from __future__ import annotations

from typing import Optional


class RequestSize:
    """The size of a fill's next Range request, from the origin's measured rate."""

    def __init__(self, chunk: int, *, most: int = 16 << 20, target: float = 0.05) -> None:
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.chunk = chunk
        self.most = max(most, chunk)
        self.target = target
        self.rate: Optional[float] = None   # bytes per second, smoothed

    def next(self) -> int:
        """Bytes to ask for in the next request."""
        if self.rate is None:
            return self.chunk
        return int(min(max(self.rate * self.target, self.chunk), self.most))

    def took(self, nbytes: int, seconds: float) -> None:
        """A request brought ``nbytes`` in ``seconds`` (from asking to the
        last byte). A short answer (the tail, a gap's end) says little about
        the origin's rate, and a failed request is not reported at all."""
        if nbytes < self.chunk or seconds <= 0:
            return
        rate = nbytes / seconds
        # halfway to each new figure: one slow answer (a busy disk at the
        # origin) does not shrink the next request to the chunk at once
        self.rate = rate if self.rate is None else (self.rate + rate) / 2
