"""A fast seeded mutator: inputs for the long campaign.

Hypothesis draws a few hundred inputs a second here, too few for a
million; this makes tens of thousands, each a seed from real clients with
a few byte-level edits (flips, inserted delimiters, deleted, repeated or
spliced slices), so the parsers see near-valid input deep in their
branches. Deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random

# delimiters and fragments the RTSP, auth and RTCP grammars care about
TOKENS = (b";", b",", b"=", b"-", b'"', b"\\", b"\r\n", b"\n", b"\r\n\r\n", b":", b"$", b"\x00",
          b" ", b"\t", b"/", b".", b"0", b"9" * 12, b"\xff", b"%", b"npt=", b"now", b"Digest ",
          b"nc=", b"qop=auth", b"trackID=", b"Content-Length: 5\r\n", b"CSeq: 1\r\n",
          b"client_port=", b"interleaved=", b"timeout=", b"RTSP/1.0", b"\x80\xc9\x00\x01",
          b"\x81\xcb\x00\x01")


def mutate(rng: random.Random, seeds: list[bytes], max_len: int) -> bytes:
    """One input: a seed with one to six edits, at most ``max_len`` bytes."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 16)]
        elif op == 3 and data:
            start = rng.randrange(len(data))
            piece = data[start:start + rng.randint(1, 8)]
            data[pos:pos] = piece * rng.randint(2, 64)
        elif op == 4:
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            data[pos:pos] = other[start:start + rng.randint(1, 64)]
        elif op == 5:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 6:
            del data[pos:]
        else:
            data[pos:pos] = rng.choice(TOKENS) * rng.randint(50, 400)
    return bytes(data[:max_len])
