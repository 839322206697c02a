"""Values of the RTSP headers kvod reads and writes (RFC 2326 section 12).

Transport, Range, Session, RTP-Info, CSeq and Content-Length. Each parser
takes the text of one header (as ``Headers.get`` returns it) and either
returns a value or raises its own ``HeaderError`` subclass, whose
``status`` is what the server answers: 461 for a transport it cannot use,
457 for a range, 454 for a session id that cannot be one of ours, 400 for
the rest. Each input has a length bound so a hostile header costs little.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.rtsp.errors import (CSeqError, HeaderError, RangeError,
                                   SessionHeaderError, TransportError)

# RFC 2326 section 15: token = 1*<any CHAR except CTLs or tspecials>.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

MAX_TRANSPORT_CHARS = 4096
MAX_RANGE_CHARS = 256
MAX_SESSION_CHARS = 256

# --------------------------------------------------------------- CSeq ---

_CSEQ_RE = re.compile(r"[0-9]{1,10}")


def parse_cseq(value: str) -> int:
    """The sequence number in a CSeq header (1 to 10 digits)."""
    text = value.strip(" \t")
    if not _CSEQ_RE.fullmatch(text):
        raise CSeqError(f"CSeq {value[:40]!r} is not a sequence number")
    return int(text)


def format_cseq(cseq: int) -> str:
    """The CSeq header value for ``cseq``."""
    if not 0 <= cseq <= 9_999_999_999:
        raise ValueError(f"CSeq {cseq} out of range")
    return str(cseq)


# Eighteen digits is already more than any body limit; the bound keeps
# int() away from the huge digit strings that make it slow or raise.
_LENGTH_RE = re.compile(r"[0-9]{1,18}")


def parse_content_length(values: Sequence[str]) -> int:
    """The body length named by every Content-Length header of a message.

    Repeats must agree (a request-smuggling guard); a number too long to
    be any sane length gets status 413, anything else malformed 400.
    """
    lengths = set()
    for value in values:
        text = value.strip(" \t")
        if text.isascii() and text.isdigit() and len(text) > 18:
            raise HeaderError(f"Content-Length of {len(text)} digits", status=413)
        if not _LENGTH_RE.fullmatch(text):
            raise HeaderError(f"Content-Length {value[:40]!r} is not a number")
        lengths.add(int(text))
    if len(lengths) != 1:
        raise HeaderError(f"conflicting Content-Length values {sorted(lengths)}")
    return lengths.pop()


# ---------------------------------------------------------- Transport ---

SUPPORTED_PROFILES = ("RTP/AVP",)
_LOWER_TRANSPORTS = ("UDP", "TCP")
_PROTOCOL_RE = re.compile(r"([A-Za-z0-9._-]+)/([A-Za-z0-9._-]+)(?:/([A-Za-z0-9._-]+))?")
_PORT_RANGE_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_SSRC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
_TTL_RE = re.compile(r"[0-9]{1,3}")
# Host names, IPv4 and IPv6 literals (with an optional zone).
_ADDRESS_RE = re.compile(r"[A-Za-z0-9._:%\[\]-]{1,255}")
_MODE_RE = re.compile(r"[A-Za-z]+(?:\s*,\s*[A-Za-z]+)*")
_EXTRA_VALUE_RE = re.compile(r"[^\x00-\x1f\x7f]*")
PortPair = tuple[int, int]


def _check_pair(name: str, pair: PortPair | None, low: int, high: int) -> None:
    if pair is None:
        return
    if (not isinstance(pair, tuple) or len(pair) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in pair)):
        raise TransportError(f"{name} must be a pair of integers, not {pair!r}")
    a, b = pair
    if not (low <= a <= high and low <= b <= high):
        raise TransportError(f"{name}={a}-{b} is outside {low}..{high}")
    if b < a:
        raise TransportError(f"{name}={a}-{b} runs backwards")


@dataclass(frozen=True)
class TransportSpec:
    """One transport-spec of a Transport header (RFC 2326 section 12.39).

    ``delivery`` is None when the client said neither "unicast" nor
    "multicast" (RFC 2326 makes that multicast; the session layer decides).
    An odd RTP port is allowed: RFC 3550 section 11 only says SHOULD be
    even, and NATs renumber ports. Parameters this module does not know
    are kept in ``extra`` and never written back by ``format_transport``.
    """

    profile: str = "RTP/AVP"
    lower_transport: str = "UDP"
    delivery: str | None = None
    destination: str | None = None
    source: str | None = None
    interleaved: PortPair | None = None
    client_port: PortPair | None = None
    server_port: PortPair | None = None
    port: PortPair | None = None
    ttl: int | None = None
    ssrc: int | None = None
    mode: str | None = None
    extra: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        if self.profile not in SUPPORTED_PROFILES:
            raise TransportError(f"profile {self.profile!r} is not supported")
        if self.lower_transport not in _LOWER_TRANSPORTS:
            raise TransportError(f"lower transport {self.lower_transport!r} is not UDP or TCP")
        if self.delivery not in (None, "unicast", "multicast"):
            raise TransportError(f"delivery {self.delivery!r} is not unicast or multicast")
        for name in ("destination", "source"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str)
                                      or not _ADDRESS_RE.fullmatch(value)):
                raise TransportError(f"{name} {value!r} is not an address")
        for name in ("client_port", "server_port", "port"):
            _check_pair(name, getattr(self, name), 1, 65535)
        _check_pair("interleaved", self.interleaved, 0, 255)
        for name, high in (("ttl", 255), ("ssrc", 0xFFFFFFFF)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= high):
                raise TransportError(f"{name} {value!r} is outside 0..{high}")
        if self.mode is not None and (not isinstance(self.mode, str)
                                      or not _MODE_RE.fullmatch(self.mode)):
            raise TransportError(f"mode {self.mode!r} is not a list of methods")
        for name, value in self.extra:
            if not TOKEN_RE.fullmatch(name) or (
                    value is not None and not _EXTRA_VALUE_RE.fullmatch(value)):
                raise TransportError(f"parameter {name!r}={value!r} is malformed")


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (mode="PLAY,RECORD" stays whole)."""
    parts, start, quoted = [], 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise TransportError("unbalanced quote in Transport")
    parts.append(text[start:])
    return parts


def _parse_pair(name: str, value: str | None) -> PortPair:
    """``a-b``; a lone ``a`` means ``a`` and ``a+1`` (RTP then RTCP).

    The bounds are checked by ``TransportSpec`` itself.
    """
    m = _PORT_RANGE_RE.fullmatch(value or "")
    if not m:
        raise TransportError(f"{name}={value!r} is not a number or a range")
    a = int(m.group(1))
    return a, int(m.group(2)) if m.group(2) is not None else a + 1


def _parse_spec(text: str) -> TransportSpec | None:
    """One transport-spec, or None when its profile is not one we serve."""
    fields = [f.strip(" \t") for f in _split_unquoted(text, ";")]
    m = _PROTOCOL_RE.fullmatch(fields[0])
    if not m:
        raise TransportError(f"{fields[0][:40]!r} is not transport/profile[/lower]")
    profile = f"{m.group(1).upper()}/{m.group(2).upper()}"
    lower = (m.group(3) or "UDP").upper()
    if profile not in SUPPORTED_PROFILES or lower not in _LOWER_TRANSPORTS:
        return None
    values: dict[str, object] = {"profile": profile, "lower_transport": lower}
    extra: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for field in fields[1:]:
        if not field:
            continue  # a stray ";;" or trailing ";" carries nothing
        name, eq, raw = field.partition("=")
        name = name.strip(" \t").lower()
        value = raw.strip(" \t") if eq else None
        if not TOKEN_RE.fullmatch(name):
            raise TransportError(f"parameter {name[:40]!r} is not a token")
        key = "delivery" if name in ("unicast", "multicast") else name
        if key in seen:
            raise TransportError(f"{key} given twice")
        seen.add(key)
        if name in ("unicast", "multicast"):
            if value is not None:
                raise TransportError(f"{name} takes no value")
            values["delivery"] = name
        elif name in ("client_port", "server_port", "port", "interleaved"):
            values[name] = _parse_pair(name, value)
        elif name in ("destination", "source") and value is not None:
            values[name] = value.strip('"')
        elif name == "ttl":
            if not _TTL_RE.fullmatch(value or ""):
                raise TransportError(f"ttl={value!r} is not a number")
            values[name] = int(value)  # type: ignore[arg-type]
        elif name == "ssrc":
            # RFC 2326 asks for 8 hex digits; some servers drop leading zeros.
            if not _SSRC_RE.fullmatch(value or ""):
                raise TransportError(f"ssrc={value!r} is not 1-8 hex digits")
            values[name] = int(value, 16)  # type: ignore[arg-type]
        elif name == "mode":
            mode = (value or "").strip('"').strip(" \t")
            if not _MODE_RE.fullmatch(mode):
                raise TransportError(f"mode={value!r} is not a list of methods")
            values[name] = re.sub(r"\s*,\s*", ",", mode).upper()
        else:
            extra.append((name, value))
    return TransportSpec(extra=tuple(extra), **values)  # type: ignore[arg-type]


def parse_transport(value: str) -> list[TransportSpec]:
    """The transport-specs of a Transport header, in the client's order.

    Alternatives with a profile we do not serve (RTP/SAVP, RTP/AVPF ...)
    are dropped so that the others can still be chosen; a malformed
    alternative, or a header with nothing we can serve, raises
    ``TransportError`` (answer 461).
    """
    if len(value) > MAX_TRANSPORT_CHARS:
        raise TransportError(f"Transport of {len(value)} characters")
    specs = []
    for alternative in _split_unquoted(value, ","):
        text = alternative.strip(" \t")
        if text:
            spec = _parse_spec(text)
            if spec is not None:
                specs.append(spec)
    if not specs:
        raise TransportError(f"no supported transport in {value[:80]!r}")
    return specs


def _pair(pair: PortPair) -> str:
    return f"{pair[0]}-{pair[1]}"


def format_transport(spec: TransportSpec) -> str:
    """The Transport header value for a reply (unknown parameters omitted)."""
    parts = [spec.profile + ("/TCP" if spec.lower_transport == "TCP" else "")]
    if spec.delivery:
        parts.append(spec.delivery)
    if spec.destination is not None:
        parts.append(f"destination={spec.destination}")
    if spec.source is not None:
        parts.append(f"source={spec.source}")
    for name in ("interleaved", "client_port", "server_port", "port"):
        pair = getattr(spec, name)
        if pair is not None:
            parts.append(f"{name}={_pair(pair)}")
    if spec.ttl is not None:
        parts.append(f"ttl={spec.ttl}")
    if spec.ssrc is not None:
        parts.append(f"ssrc={spec.ssrc:08X}")
    if spec.mode is not None:
        parts.append(f'mode="{spec.mode}"')
    return ";".join(parts)


# -------------------------------------------------------------- Range ---

@dataclass(frozen=True)
class NptRange:
    """A normal-play-time range in seconds; ``start`` None means "now",
    ``end`` None means to the end of the title (its start, ``backwards``).

    A ``backwards`` range is one for a negative Scale: it runs in the
    direction of play, from the later time to the earlier (``npt=9-0``),
    as GStreamer's rtspsrc sends it for a reverse seek."""

    start: float | None
    end: float | None = None
    backwards: bool = False

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise RangeError(f"npt {name} {value!r} is not a time")
        if self.start is None or self.end is None:
            return
        if self.backwards and self.end > self.start:
            raise RangeError(f"a backwards npt range (negative Scale) ends ({self.end}) "
                             f"after it starts ({self.start})")
        if not self.backwards and self.end < self.start:
            raise RangeError(f"npt range ends ({self.end}) before it starts ({self.start})")


_NPT_SEC_RE = re.compile(r"([0-9]{1,12})(\.[0-9]{0,9})?")
_NPT_HHMMSS_RE = re.compile(r"([0-9]{1,9}):([0-9]{1,2}):([0-9]{1,2})(\.[0-9]{0,9})?")
_NON_NPT_UNITS = ("smpte", "smpte-30-drop", "smpte-25", "clock")


def _parse_npt_time(text: str) -> float:
    if _NPT_SEC_RE.fullmatch(text):
        return float(text)
    m = _NPT_HHMMSS_RE.fullmatch(text)
    if m:
        hh, mm, ss = (int(g) for g in m.groups()[:3])
        if mm > 59 or ss > 59:
            raise RangeError(f"npt time {text!r} has minutes or seconds over 59")
        return hh * 3600 + mm * 60 + ss + float("0" + (m.group(4) or ""))
    raise RangeError(f"{text[:40]!r} is not an npt time")


def parse_range(value: str, backwards: bool = False) -> NptRange:
    """The NPT range of a Range header (RFC 2326 sections 3.6 and 12.29).

    Accepts ``npt=5-``, ``npt=5.5-10``, ``npt=now-``, ``npt=00:01:05.5-``;
    a ``;time=`` parameter is ignored (kvod starts at once). SMPTE and
    clock ranges, lists of ranges, the open-start form ``npt=-10`` and
    "now" as an end raise ``RangeError`` (answer 457). ``backwards``: the
    range of a PLAY with a negative Scale, later time first (``npt=9-0``).
    """
    if len(value) > MAX_RANGE_CHARS:
        raise RangeError(f"Range of {len(value)} characters")
    spec = value.split(";", 1)[0].strip(" \t")
    unit, eq, times = spec.partition("=")
    unit = unit.strip(" \t").lower()
    if unit in _NON_NPT_UNITS:
        raise RangeError(f"{unit} ranges are not supported, only npt")
    if unit != "npt" or not eq:
        raise RangeError(f"{spec[:40]!r} is not an npt range")
    if "," in times:
        raise RangeError("a list of ranges is not supported")
    first, dash, last = times.strip(" \t").partition("-")
    first, last = first.strip(" \t"), last.strip(" \t")
    if not dash:
        raise RangeError(f"npt range {times[:40]!r} has no '-'")
    if not first:
        raise RangeError("an npt range must give its start")
    if last == "now":
        raise RangeError("'now' cannot end a range")
    start = None if first == "now" else _parse_npt_time(first)
    end = _parse_npt_time(last) if last else None
    return NptRange(start, end, backwards)


_SCALE_RE = re.compile(r"[ \t]*(-?[0-9]{1,6}(?:\.[0-9]{0,6})?)[ \t]*")


def parse_scale(value: str) -> float:
    """The number of a Scale header (RFC 2326 section 12.34): 1 is normal
    play, 2 twice as fast, -1 backwards; RangeError if it is not a number
    or is 0."""
    m = _SCALE_RE.fullmatch(value)
    if m is None:
        raise RangeError(f"Scale {value[:40]!r} is not a number")
    scale = float(m.group(1))
    if scale == 0:
        raise RangeError("Scale 0 is no speed")
    return scale


def format_scale(scale: float) -> str:
    """A Scale header's value: ``4``, ``-2``, ``1``, ``1.5``."""
    return f"{scale:g}"


def format_range(start: float | None, end: float | None = None,
                 backwards: bool = False) -> str:
    """``npt=<start>-[<end>]`` with millisecond precision; None start is
    "now"; ``backwards`` (a negative Scale): the end is the earlier time."""
    npt = NptRange(start, end, backwards)
    first = "now" if npt.start is None else f"{npt.start:.3f}"
    last = "" if npt.end is None else f"{npt.end:.3f}"
    return f"npt={first}-{last}"


# ------------------------------------------------------------ Session ---

# RFC 2326 section 3.4: 1*(ALPHA | DIGIT | safe), and at least eight octets.
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9$\-_.+]{8,128}")
_TIMEOUT_RE = re.compile(r"[0-9]{1,9}")


def _check_timeout(timeout: int) -> int:
    if not 1 <= timeout <= 999_999_999:
        raise SessionHeaderError(f"session timeout {timeout} out of range")
    return timeout


def parse_session(value: str) -> tuple[str, int | None]:
    """``(session_id, timeout)`` from a Session header.

    Unknown parameters after the id are ignored as extensions. Any id
    that breaks RFC 2326's rules cannot be one kvod issued, so the error
    carries 454 Session Not Found.
    """
    if len(value) > MAX_SESSION_CHARS:
        raise SessionHeaderError(f"Session of {len(value)} characters")
    session_id, *params = (p.strip(" \t") for p in value.split(";"))
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise SessionHeaderError(f"{session_id[:40]!r} is not a session id")
    timeout = None
    for param in params:
        name, eq, raw = param.partition("=")
        name, raw = name.strip(" \t").lower(), raw.strip(" \t")
        if name == "timeout":
            if not eq or not _TIMEOUT_RE.fullmatch(raw) or timeout is not None:
                raise SessionHeaderError(f"bad session timeout {param[:40]!r}")
            timeout = _check_timeout(int(raw))
        elif not TOKEN_RE.fullmatch(name):
            raise SessionHeaderError(f"bad Session parameter {param[:40]!r}")
    return session_id, timeout


def format_session(session_id: str, timeout: int | None = None) -> str:
    """``<id>[;timeout=<s>]`` for the Session header of a reply."""
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(f"{session_id!r} is not an RFC 2326 session id")
    if timeout is None:
        return session_id
    return f"{session_id};timeout={_check_timeout(timeout)}"


# ----------------------------------------------------------- RTP-Info ---

# ffmpeg and GStreamer cut RTP-Info fields at ';' and ',', so a URL that
# holds either cannot be sent in RTSP 1.0 (RTSP 2.0 quotes it instead).
_INFO_URL_RE = re.compile(r"[^\x00-\x20\x7f;,\"]+")

RtpInfoEntry = tuple[str, "int | None", "int | None"]


def format_rtp_info(entries: Iterable[RtpInfoEntry]) -> str:
    """The RTP-Info value for a PLAY reply: one ``(url, seq, rtptime)`` per
    stream; a None seq or rtptime is left out."""
    out = []
    for url, seq, rtptime in entries:
        if not _INFO_URL_RE.fullmatch(url):
            raise ValueError(f"URL {url!r} cannot go in RTP-Info")
        fields = [f"url={url}"]
        if seq is not None:
            if not 0 <= seq <= 0xFFFF:
                raise ValueError(f"seq {seq} is not 16-bit")
            fields.append(f"seq={seq}")
        if rtptime is not None:
            if not 0 <= rtptime <= 0xFFFFFFFF:
                raise ValueError(f"rtptime {rtptime} is not 32-bit")
            fields.append(f"rtptime={rtptime}")
        out.append(";".join(fields))
    if not out:
        raise ValueError("RTP-Info needs at least one stream")
    return ",".join(out)


def parse_rtp_info(value: str) -> list[RtpInfoEntry]:
    """The ``(url, seq, rtptime)`` entries of an RTP-Info header."""
    entries: list[RtpInfoEntry] = []
    for item in value.split(","):
        fields: dict[str, str] = {}
        for field in item.split(";"):
            name, eq, raw = field.partition("=")
            name = name.strip(" \t").lower()
            if not eq or name in fields:
                raise HeaderError(f"bad RTP-Info field {field[:40]!r}")
            fields[name] = raw.strip(" \t")
        url = fields.get("url", "")
        if not _INFO_URL_RE.fullmatch(url):
            raise HeaderError(f"RTP-Info entry {item[:40]!r} has no URL")
        numbers = []
        for name, limit in (("seq", 0xFFFF), ("rtptime", 0xFFFFFFFF)):
            raw = fields.get(name)
            if raw is not None and not (re.fullmatch(r"[0-9]{1,10}", raw)
                                        and int(raw) <= limit):
                raise HeaderError(f"RTP-Info {name}={raw[:20]!r} out of range")
            numbers.append(None if raw is None else int(raw))
        entries.append((url, numbers[0], numbers[1]))
    return entries
