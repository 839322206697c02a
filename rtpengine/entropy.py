"""Random numbers for SSRCs, initial sequence numbers and timestamps (RFC
3550 section 5.1), from the kernel's CSPRNG a page at a time.

``secrets`` asks the kernel once per number (getrandom), and a stream draws
three of them (five calls with randbelow's rejections): system calls on
the start-up path of every viewer. These come from one ``os.urandom`` of
4 KiB per ~500 numbers instead: the same source, as unpredictable, read in
bulk. A forked child starts its own buffer (it must not hand out the
numbers its parent does).
"""

from __future__ import annotations

import os

_REFILL = 4096


class _Buffer:
    def __init__(self) -> None:
        self.pid = -1
        self.data = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.pid != os.getpid() or self.at + n > len(self.data):
            self.pid = os.getpid()
            self.data = os.urandom(max(_REFILL, n))
            self.at = 0
        out = self.data[self.at:self.at + n]
        self.at += n
        return out


_BUFFER = _Buffer()


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the kernel's CSPRNG (never the same bytes twice)."""
    return _BUFFER.take(n)


def randbelow(n: int) -> int:
    """A uniform integer in ``[0, n)``, ``n`` >= 1 (rejection sampling, as
    ``secrets.randbelow``)."""
    if n < 1:
        raise ValueError(f"randbelow({n}): n must be at least 1")
    size = (n.bit_length() + 7) // 8
    span = 1 << (8 * size)
    limit = span - span % n     # values from here on would favour the low ones
    while True:
        value = int.from_bytes(random_bytes(size), "big")
        if value < limit:
            return value % n
