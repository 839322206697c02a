"""HTTP byte ranges (RFC 9110 section 14): parsing ``Range`` against a
representation's size and laying out a ``multipart/byteranges`` body.

Pure functions, no I/O. A range set is a list of ``(start, end)`` pairs,
end exclusive, in the order the client asked for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

#: at most this many ranges in one request; more is answered with the whole
#: representation (RFC 9110 lets a server ignore Range), which bounds the
#: work and the part headers a hostile request can make us build
MAX_RANGES = 32
#: a Range header longer than this is ignored, for the same reason
MAX_HEADER = 4096

_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class Unsatisfiable(ValueError):
    """No range of the request overlaps the representation: answer 416."""


def parse_range(header: Optional[str], size: int) -> Optional[list[tuple[int, int]]]:
    """The ranges ``header`` asks of a representation of ``size`` bytes.

    None means "send the whole representation" (no header, another unit, a
    malformed or oversized header). A range that covers everything is still
    a range: a cache asking ``bytes=0-`` wants a 206 with its Content-Range
    (kvod's own fills refuse a 200 to a ranged If-Range request).
    Raises :class:`Unsatisfiable` when the header is valid but no range
    overlaps ``[0, size)``.
    """
    if header is None or len(header) > MAX_HEADER:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        if not part.strip():
            continue  # "bytes=0-1,,5-6": empty list elements are allowed
        match = _SPEC.fullmatch(part)
        if not match or not (match[1] or match[2]):
            return None
        first, last = match[1], match[2]
        if first:
            start = int(first)
            if last and int(last) < start:
                return None  # syntactically invalid: the whole header is ignored
            end = min(int(last) + 1, size) if last else size
            if start >= size:
                continue  # unsatisfiable on its own
        else:
            suffix = int(last)
            if suffix == 0:
                continue
            start, end = max(size - suffix, 0), size
        ranges.append((start, end))
    if not ranges:
        if any(p.strip() for p in parts):
            raise Unsatisfiable(f"no range of {header!r} overlaps 0-{size - 1}")
        return None
    return ranges


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value of ``[start, end)`` of ``size`` bytes."""
    return f"bytes {start}-{end - 1}/{size}"


@dataclass(frozen=True)
class FilePart:
    """Bytes ``[start, end)`` of the title's file."""

    start: int
    end: int


Piece = Union[bytes, FilePart]


def multipart_body(ranges: list[tuple[int, int]], size: int, content_type: str,
                   boundary: str) -> tuple[list[Piece], int]:
    """The body of a ``multipart/byteranges`` answer as pieces (literal
    bytes and file parts, in order) and its total length, for the
    Content-Length header."""
    pieces: list[Piece] = []
    for start, end in ranges:
        pieces.append((f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
                       f"Content-Range: {content_range(start, end, size)}\r\n\r\n").encode())
        pieces.append(FilePart(start, end))
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    length = sum(len(p) if isinstance(p, bytes) else p.end - p.start for p in pieces)
    return pieces, length


def piece_length(piece: Piece) -> int:
    """How many bytes ``piece`` adds to a body."""
    return len(piece) if isinstance(piece, bytes) else piece.end - piece.start


def slice_pieces(pieces: list[Piece], start: int, end: int) -> list[Piece]:
    """Bytes ``[start, end)`` of the body that ``pieces`` make, as pieces:
    a range of a representation built from literal bytes and file parts
    (an fMP4 segment: its moof in memory, its samples in the file)."""
    out: list[Piece] = []
    at = 0
    for piece in pieces:
        length = piece_length(piece)
        lo, hi = max(start - at, 0), min(end - at, length)
        if lo < hi:
            out.append(piece[lo:hi] if isinstance(piece, bytes)
                       else FilePart(piece.start + lo, piece.start + hi))
        at += length
        if at >= end:
            break
    return out
