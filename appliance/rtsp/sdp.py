"""SDP (RFC 4566) for DESCRIBE replies, and a small parser for reading one.

``build_sdp`` writes the description an RTSP server hands out: port 0 in
every ``m=`` line (the transport comes from SETUP), ``c=`` with the
unspecified address of the origin's family, ``t=0 0`` (a stored title is
not a scheduled session), ``a=control:*`` for aggregate control and an
``a=range`` with the title's duration (RFC 2326 appendix C).

``parse_sdp`` reads an origin's or a test's description. It is untrusted
input: the text has a size bound, every line is checked, and anything
wrong raises ``SdpError``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field

MAX_SDP_BYTES = 64 * 1024

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
# Anything a line may hold: no CR, LF or NUL (RFC 4566 byte-string).
_LINE_TEXT_RE = re.compile(r"[^\x00\r\n]*")
_CONTROL_RE = re.compile(r"[^\x00-\x20\x7f]+")


class SdpError(ValueError):
    """A session description that is malformed or over the size bound."""


@dataclass(frozen=True)
class SdpMedia:
    """One media stream to describe: payload type, encoding and clock.

    ``fmtp`` is the text after ``a=fmtp:<pt> ``; ``channels`` is written as
    the rtpmap encoding parameter (audio only, RFC 4566 section 6).
    """

    kind: str
    payload_type: int
    encoding: str
    clock_rate: int
    fmtp: str | None = None
    control: str = "trackID=0"
    channels: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("video", "audio", "application"):
            raise ValueError(f"media kind {self.kind!r} is not video, audio or application")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is not 0..127")
        if not _TOKEN_RE.fullmatch(self.encoding):
            raise ValueError(f"encoding {self.encoding!r} is not a token")
        if not 0 < self.clock_rate < 2**32:
            raise ValueError(f"clock rate {self.clock_rate} out of range")
        if self.fmtp is not None and (not self.fmtp or not _LINE_TEXT_RE.fullmatch(self.fmtp)):
            raise ValueError("fmtp must be one non-empty line")
        if not _CONTROL_RE.fullmatch(self.control):
            raise ValueError(f"control {self.control!r} is empty or has blanks")
        if self.channels is not None and (self.kind != "audio" or not 0 < self.channels < 256):
            raise ValueError("channels are for audio only, 1..255")


_AAC_CONFIG_RE = re.compile(r"(?:^|;)\s*config=([0-9A-Fa-f]{4,})")


def rtpmap_channels(encoding: str, fmtp: str | None) -> int | None:
    """The channel count an ``rtpmap`` names for a stored track, where its
    format says it: for MPEG4-GENERIC (RFC 3640) the AudioSpecificConfig's
    channelConfiguration in ``config=`` (None when absent or 0: the
    config itself then says, and RFC 3640 makes 1 the default)."""
    if encoding.upper() != "MPEG4-GENERIC" or not fmtp:
        return None
    m = _AAC_CONFIG_RE.search(fmtp)
    if not m:
        return None
    bits = int(m.group(1)[:16].ljust(16, "0"), 16)
    pos = 64
    aot = bits >> (pos - 5) & 31
    pos -= 5
    if aot == 31:
        pos -= 6
    index = bits >> (pos - 4) & 15
    pos -= 4
    if index == 15:
        pos -= 24
    channels = bits >> (pos - 4) & 15 if pos >= 4 else 0
    # 1..6 are that many channels, 7 is 7.1 (8); others need the PCE
    return {7: 8}.get(channels, channels) if 0 < channels < 8 else None


def _sanitize_name(name: str) -> str:
    """One line of text: control characters become spaces, empty becomes " ".

    The 255-character cut is kvod's bound, not RFC 4566's: a title name
    has no business being longer.
    """
    cleaned = re.sub(r"[\x00-\x1f\x7f]", " ", name).strip()
    # RFC 4566 section 5.3: a session without a name uses a single space.
    return cleaned[:255] if cleaned else " "


def _addrtype(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if _HOSTNAME_RE.fullmatch(address):
            return "IP4"
        raise ValueError(f"origin address {address!r} is neither an IP address nor a host name")
    return "IP6" if ip.version == 6 else "IP4"


def build_sdp(*, session_name: str, origin_address: str, session_id: int,
              session_version: int, duration_s: float | None,
              media: list[SdpMedia]) -> str:
    """The SDP text (CRLF line ends) a DESCRIBE reply carries."""
    if not media:
        raise ValueError("a description needs at least one media stream")
    for name, value in (("session_id", session_id), ("session_version", session_version)):
        if not 0 <= value < 2**64:
            raise ValueError(f"{name} {value} is not a 64-bit unsigned number")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration {duration_s!r} is not a time")
    controls = [m.control for m in media]
    if len(set(controls)) != len(controls):
        raise ValueError(f"media controls {controls} are not distinct")
    addrtype = _addrtype(origin_address)
    unspecified = "::" if addrtype == "IP6" else "0.0.0.0"
    npt_end = "" if duration_s is None else f"{duration_s:.3f}"
    lines = [
        "v=0",
        f"o=- {session_id} {session_version} IN {addrtype} {origin_address}",
        f"s={_sanitize_name(session_name)}",
        f"c=IN {addrtype} {unspecified}",
        "t=0 0",
        "a=control:*",
        f"a=range:npt=0-{npt_end}",
    ]
    for m in media:
        rtpmap = f"{m.encoding}/{m.clock_rate}" + (f"/{m.channels}" if m.channels else "")
        lines += [f"m={m.kind} 0 RTP/AVP {m.payload_type}",
                  f"a=rtpmap:{m.payload_type} {rtpmap}"]
        if m.fmtp is not None:
            lines.append(f"a=fmtp:{m.payload_type} {m.fmtp}")
        lines.append(f"a=control:{m.control}")
    return "\r\n".join(lines) + "\r\n"


# ------------------------------------------------------------- parser ---

@dataclass(frozen=True)
class Origin:
    """The ``o=`` line."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str


def _attribute(attributes: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return value if value is not None else ""
    return None


@dataclass(frozen=True)
class MediaDescription:
    """One ``m=`` section."""

    kind: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The first ``a=name[:value]`` of this media ("" for a flag)."""
        return _attribute(self.attributes, name)

    @property
    def control(self) -> str | None:
        """The ``a=control`` URL, relative or absolute."""
        return self.attribute("control")

    def rtpmap(self, payload_type: int) -> tuple[str, int, int | None] | None:
        """``(encoding, clock_rate, channels)`` of ``payload_type``, if mapped."""
        prefix = f"{payload_type} "
        for key, value in self.attributes:
            if key == "rtpmap" and value is not None and value.startswith(prefix):
                parts = value[len(prefix):].strip().split("/")
                if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit()
                                                       for p in parts[1:]):
                    raise SdpError(f"bad rtpmap {value[:60]!r}")
                return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None
        return None


@dataclass(frozen=True)
class SessionDescription:
    """A parsed description: session-level fields and its media sections."""

    version: int
    origin: Origin
    session_name: str
    connection: str | None
    times: tuple[tuple[int, int], ...]
    attributes: tuple[tuple[str, str | None], ...]
    media: tuple[MediaDescription, ...] = field(default=())

    def attribute(self, name: str) -> str | None:
        """The first session-level ``a=name[:value]`` ("" for a flag)."""
        return _attribute(self.attributes, name)


_SESSION_TYPES = set("vosiuepcbtrzka")
_MEDIA_TYPES = set("icbka")
_MEDIA_RE = re.compile(r"([a-z]+) ([0-9]{1,5})(?:/([0-9]{1,5}))? (\S+)((?: \S+)+)")
_ORIGIN_RE = re.compile(r"(\S+) ([0-9]{1,20}) ([0-9]{1,20}) (\S+) (\S+) (\S+)")
_TIME_RE = re.compile(r"([0-9]{1,20}) ([0-9]{1,20})")
_ATTR_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]+")


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not _ATTR_NAME_RE.fullmatch(name):
        raise SdpError(f"attribute name {name[:40]!r} is malformed")
    return name, rest if colon else None


def parse_sdp(text: str | bytes, max_bytes: int = MAX_SDP_BYTES) -> SessionDescription:
    """Parse a session description (CRLF or LF line ends).

    Follows RFC 4566's order for the lines that matter to kvod: ``v=0``
    first, then ``o=`` and ``s=``; the ``t=`` line is not required, since
    some servers leave it out. A type letter RFC 4566 does not define
    makes the whole description invalid (section 5), as does a line that
    is not ``<letter>=<value>``.
    """
    if isinstance(text, (bytes, bytearray)):
        if len(text) > max_bytes:
            raise SdpError(f"SDP of {len(text)} bytes is over {max_bytes}")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise SdpError(f"SDP is over {max_bytes} bytes")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    parsed: list[tuple[str, str]] = []
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"line {number} {line[:40]!r} is not <type>=<value>")
        if not _LINE_TEXT_RE.fullmatch(line):
            raise SdpError(f"line {number} holds a CR or NUL")
        parsed.append((line[0], line[2:]))
    if [t for t, _ in parsed[:3]] != ["v", "o", "s"]:
        raise SdpError("an SDP must start with v=, o= and s=")
    if parsed[0][1] != "0":
        raise SdpError(f"SDP version {parsed[0][1][:10]!r} is not 0")
    m = _ORIGIN_RE.fullmatch(parsed[1][1])
    if not m:
        raise SdpError(f"origin {parsed[1][1][:60]!r} is malformed")
    origin = Origin(*m.groups())
    session_name = parsed[2][1]

    connection: str | None = None
    times: list[tuple[int, int]] = []
    attributes: list[tuple[str, str | None]] = []
    sections: list[dict] = []  # media sections, in order, while being read
    for kind, value in parsed[3:]:
        if kind == "m":
            mm = _MEDIA_RE.fullmatch(value)
            if not mm or int(mm.group(2)) > 65535 or mm.group(3) in ("0", "00"):
                raise SdpError(f"media line {value[:60]!r} is malformed")
            sections.append({"kind": mm.group(1), "port": int(mm.group(2)),
                             "port_count": int(mm.group(3) or 1), "proto": mm.group(4),
                             "formats": tuple(mm.group(5).split()), "connection": None,
                             "attributes": []})
        elif sections:
            if kind not in _MEDIA_TYPES:
                raise SdpError(f"{kind}= is not allowed in a media section")
            if kind == "a":
                sections[-1]["attributes"].append(_parse_attribute(value))
            elif kind == "c":
                sections[-1]["connection"] = value
        elif kind not in _SESSION_TYPES or kind in "vos":
            raise SdpError(f"{kind}= is unknown or out of place")
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind == "c":
            connection = value
        elif kind == "t":
            tm = _TIME_RE.fullmatch(value)
            if not tm:
                raise SdpError(f"time line {value[:40]!r} is malformed")
            times.append((int(tm.group(1)), int(tm.group(2))))
    media = tuple(MediaDescription(**{**s, "attributes": tuple(s["attributes"])})
                  for s in sections)
    return SessionDescription(0, origin, session_name, connection, tuple(times),
                              tuple(attributes), media)
