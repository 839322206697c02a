"""RTSP events: what ``RTSPConnection`` turns bytes into and back.

Every event validates in its constructor and is immutable afterwards, so a
request without a CSeq, a header carrying a CR LF, or a frame longer than
its 16-bit length field cannot exist (the h11 ``_events`` idea). A bad
event raises ``LocalProtocolError``; the connection turns that into a
``RemoteProtocolError`` when the bad bits came off the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import urlsplit

from appliance.rtsp.errors import HeaderError, LocalProtocolError, reason_phrase
from appliance.rtsp.headers import TOKEN_RE, parse_cseq, parse_content_length

# TEXT: anything but control characters (HTAB allowed); non-ASCII is UTF-8.
_FIELD_VALUE_RE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET_RE = re.compile(r"[^\x00-\x20\x7f]+")
_VERSION_RE = re.compile(r"RTSP/[0-9]\.[0-9]")

HeaderPairs = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]]]


class Headers:
    """An immutable, case-insensitive, order-preserving multi-map.

    Names and values are checked on construction: names must be RTSP
    tokens, values must hold no CR, LF, NUL or other control characters,
    so nothing built from a ``Headers`` can inject a header line. Values
    are stripped of surrounding blanks, as a parser would see them.
    """

    __slots__ = ("_items", "_index")
    _items: tuple[tuple[str, str], ...]

    def __init__(self, items: HeaderPairs = ()) -> None:
        if isinstance(items, Headers):
            object.__setattr__(self, "_items", items._items)   # checked already
            return
        if isinstance(items, Mapping):
            pairs = items.items()
        else:
            pairs = items
        checked = []
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise LocalProtocolError(f"header {pair!r} is not a (name, value) pair")
            name, value = pair
            if not isinstance(name, str) or not TOKEN_RE.fullmatch(name):
                raise LocalProtocolError(f"header name {name!r} is not a token")
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not _FIELD_VALUE_RE.fullmatch(value):
                raise LocalProtocolError(f"header {name} has an illegal value {value!r}")
            checked.append((name, value.strip(" \t")))
        object.__setattr__(self, "_items", tuple(checked))

    @classmethod
    def _checked(cls, items: tuple[tuple[str, str], ...]) -> Headers:
        """Pairs taken from other ``Headers`` (checked when those were made):
        replies copy headers, and checking each again costs a regex per
        header per copy, on every request."""
        headers = object.__new__(cls)
        object.__setattr__(headers, "_items", items)
        return headers

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Headers is immutable")

    def _by_name(self) -> dict[str, list[str]]:
        # a request's headers are looked up a dozen times on their way
        # through the server: folded once, on the first look
        try:
            return self._index
        except AttributeError:
            index: dict[str, list[str]] = {}
            for n, v in self._items:
                index.setdefault(n.lower(), []).append(v)
            object.__setattr__(self, "_index", index)
            return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case), or ``default``."""
        values = self._by_name().get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in order."""
        return list(self._by_name().get(name.lower(), ()))

    def with_header(self, name: str, value: str | int) -> Headers:
        """A copy where ``name`` has the single value ``value``.

        The replacement takes the place of the first old occurrence, so the
        order a caller chose survives.
        """
        key = name.lower()
        new = Headers(((name, value),))._items[0]
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() != key:
                out.append((n, v))
            elif not placed:
                out.append(new)
                placed = True
        if not placed:
            out.append(new)
        return Headers._checked(tuple(out))

    def without(self, name: str) -> Headers:
        """A copy with every occurrence of ``name`` removed."""
        key = name.lower()
        return Headers._checked(tuple((n, v) for n, v in self._items if n.lower() != key))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._folded() == other._folded()

    def __hash__(self) -> int:
        return hash(self._folded())

    def _folded(self) -> tuple[tuple[str, str], ...]:
        return tuple((n.lower(), v) for n, v in self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


def _as_headers(value: HeaderPairs) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise LocalProtocolError(f"body must be bytes, not {type(value).__name__}")


def _check_message(headers: Headers, body: bytes) -> None:
    """Rules shared by requests and responses: CSeq and Content-Length."""
    cseqs = headers.get_all("CSeq")
    lengths = headers.get_all("Content-Length")
    try:
        if len({parse_cseq(v) for v in cseqs}) > 1:
            raise LocalProtocolError(f"conflicting CSeq values {cseqs!r}")
        if lengths and parse_content_length(lengths) != len(body):
            raise LocalProtocolError(
                f"Content-Length {lengths!r} does not match a {len(body)}-byte body")
    except HeaderError as exc:
        raise LocalProtocolError(str(exc)) from None


def _cseq(headers: Headers) -> int | None:
    value = headers.get("CSeq")
    return None if value is None else parse_cseq(value)


@dataclass(frozen=True)
class Request:
    """An RTSP request; ``headers`` must carry a CSeq (RFC 2326 section 12.17)."""

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    version: str = "RTSP/1.0"

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not TOKEN_RE.fullmatch(self.method):
            raise LocalProtocolError(f"method {self.method!r} is not a token")
        if not isinstance(self.target, str) or not _TARGET_RE.fullmatch(self.target):
            raise LocalProtocolError(f"request target {self.target!r} is empty or has blanks")
        try:
            # what every layer above does with a target; "rtsp://h[/x" raises
            urlsplit(self.target)
        except ValueError as exc:
            raise LocalProtocolError(
                f"request target {self.target[:80]!r} is not a URI: {exc}") from None
        if not isinstance(self.version, str) or not _VERSION_RE.fullmatch(self.version):
            raise LocalProtocolError(f"version {self.version!r} is not RTSP/x.y")
        object.__setattr__(self, "headers", _as_headers(self.headers))
        object.__setattr__(self, "body", _as_bytes(self.body))
        if not self.headers.get_all("CSeq"):
            raise LocalProtocolError("request has no CSeq header")
        _check_message(self.headers, self.body)

    @property
    def cseq(self) -> int:
        """The request's sequence number."""
        return _cseq(self.headers)  # type: ignore[return-value]


@dataclass(frozen=True)
class Response:
    """An RTSP response; ``reason`` defaults to the RFC 2326 phrase.

    CSeq is optional here only because the answer to a request that had
    none (400) cannot carry one.
    """

    status: int
    reason: str | None = None
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "RTSP/1.0"

    def __post_init__(self) -> None:
        if (not isinstance(self.status, int) or isinstance(self.status, bool)
                or not 100 <= self.status <= 999):
            raise LocalProtocolError(f"status {self.status!r} is not a three-digit code")
        if self.reason is None:
            object.__setattr__(self, "reason", reason_phrase(self.status))
        elif not isinstance(self.reason, str) or not _FIELD_VALUE_RE.fullmatch(self.reason):
            raise LocalProtocolError(f"reason {self.reason!r} has control characters")
        if not isinstance(self.version, str) or not _VERSION_RE.fullmatch(self.version):
            raise LocalProtocolError(f"version {self.version!r} is not RTSP/x.y")
        object.__setattr__(self, "headers", _as_headers(self.headers))
        object.__setattr__(self, "body", _as_bytes(self.body))
        _check_message(self.headers, self.body)

    @property
    def cseq(self) -> int | None:
        """The sequence number of the request this answers, if it says."""
        return _cseq(self.headers)


MAX_FRAME_DATA = 0xFFFF


@dataclass(frozen=True)
class InterleavedFrame:
    """One RTP or RTCP packet on the RTSP connection (RFC 2326 section 10.12)."""

    channel: int
    data: bytes

    def __post_init__(self) -> None:
        if (not isinstance(self.channel, int) or isinstance(self.channel, bool)
                or not 0 <= self.channel <= 255):
            raise LocalProtocolError(f"channel {self.channel!r} is not 0..255")
        object.__setattr__(self, "data", _as_bytes(self.data))
        if len(self.data) > MAX_FRAME_DATA:
            raise LocalProtocolError(f"{len(self.data)} bytes do not fit a 16-bit frame length")


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed its sending side; nothing more will arrive."""


class _NeedData:
    """Sentinel: no complete event is buffered yet."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

Event = Union[Request, Response, InterleavedFrame, ConnectionClosed]
