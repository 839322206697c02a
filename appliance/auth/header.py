"""The ``Authorization`` and ``WWW-Authenticate`` headers (RFC 7235 syntax).

``parse_authorization`` reads a client's credentials: a scheme, then
either a token68 (Basic) or comma-separated ``name=value`` parameters whose
values are tokens or quoted strings (Digest). It is a single left-to-right
scan with no backtracking regular expressions, so its time is linear in the
header's length, and it raises :class:`AuthHeaderError` and nothing else.
``format_challenge`` builds the server's side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appliance.auth.errors import AuthHeaderError

MAX_HEADER_CHARS = 4096
MAX_PARAMS = 32

# RFC 7230 tchar; token68 adds "-._~+/" and trailing "=" (RFC 7235 2.1).
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BLANKS = " \t"


@dataclass(frozen=True)
class Credentials:
    """What a client sent: ``scheme`` (lower case), and ``params`` (names in
    lower case) or ``token68``."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _BLANKS:
        pos += 1
    return pos


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TCHAR:
        pos += 1
    return text[start:pos], pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    # text[pos] is the opening quote; a backslash escapes the next character.
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        if char < " " and char != "\t" or char == "\x7f":
            raise AuthHeaderError("control character in a quoted string")
        out.append(char)
        pos += 1
    raise AuthHeaderError("unterminated quoted string")


def parse_authorization(value: str) -> Credentials:
    """The credentials in one ``Authorization`` header value.

    Raises :class:`AuthHeaderError` for anything that is not
    ``scheme token68`` or ``scheme name=value, ...`` (values may be quoted),
    for repeated parameters, and for headers over ``MAX_HEADER_CHARS``.
    """
    if not isinstance(value, str):
        raise AuthHeaderError("header value is not text")
    if len(value) > MAX_HEADER_CHARS:
        raise AuthHeaderError(f"Authorization of {len(value)} characters is over "
                              f"{MAX_HEADER_CHARS}")
    text = value.strip(_BLANKS)
    scheme, pos = _token(text, 0)
    if not scheme:
        raise AuthHeaderError("Authorization has no scheme")
    if pos == len(text):
        return Credentials(scheme.lower())
    if text[pos] not in _BLANKS:
        raise AuthHeaderError(f"unexpected {text[pos]!r} after the scheme")
    pos = _skip_blanks(text, pos)
    rest = text[pos:]
    if _TOKEN68_RE.fullmatch(rest):
        # "abc=" is both a token68 and the start of a parameter; with no
        # value after the "=" only token68 reads it.
        return Credentials(scheme.lower(), token68=rest)
    params: dict[str, str] = {}
    while True:
        name, pos = _token(text, pos)
        if not name:
            raise AuthHeaderError(f"expected a parameter name at column {pos}")
        pos = _skip_blanks(text, pos)
        if pos == len(text) or text[pos] != "=":
            raise AuthHeaderError(f"parameter {name[:40]!r} has no '='")
        pos = _skip_blanks(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            param_value, pos = _quoted(text, pos)
        else:
            param_value, pos = _token(text, pos)
            if not param_value:
                raise AuthHeaderError(f"parameter {name[:40]!r} has no value")
        key = name.lower()
        if key in params:
            raise AuthHeaderError(f"parameter {name[:40]!r} is repeated")
        if len(params) == MAX_PARAMS:
            raise AuthHeaderError(f"more than {MAX_PARAMS} parameters")
        params[key] = param_value
        pos = _skip_blanks(text, pos)
        if pos == len(text):
            return Credentials(scheme.lower(), params=params)
        if text[pos] != ",":
            raise AuthHeaderError(f"expected ',' at column {pos}")
        # RFC 7235's #rule allows empty list elements: "a=1, , b=2".
        while pos < len(text) and text[pos] in _BLANKS + ",":
            pos += 1
        if pos == len(text):
            return Credentials(scheme.lower(), params=params)


def quote(value: str) -> str:
    """``value`` as a quoted string (a backslash before ``"`` and ``\\``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_challenge(scheme: str, params: list[tuple[str, str]],
                     unquoted: frozenset[str] = frozenset({"algorithm", "stale"})) -> str:
    """A ``WWW-Authenticate`` value: ``Digest realm="x", nonce="y", ...``.

    ``algorithm`` and ``stale`` go unquoted, as RFC 7616's examples write
    them (some players compare them literally).
    """
    parts = [f"{name}={value if name in unquoted else quote(value)}" for name, value in params]
    return f"{scheme} " + ", ".join(parts)
