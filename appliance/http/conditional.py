"""Conditional requests (RFC 9110 section 13) on a title's validators.

:func:`evaluate` takes the request's condition headers and the title's
ETag and Last-Modified and says what to answer: 304, 412, or go on (and
whether a ``Range`` still applies, per ``If-Range``). Pure, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timezone
from typing import Optional


@dataclass(frozen=True)
class Conditions:
    """The request headers that make it conditional (None: absent)."""

    if_match: Optional[str] = None
    if_none_match: Optional[str] = None
    if_modified_since: Optional[str] = None
    if_unmodified_since: Optional[str] = None
    if_range: Optional[str] = None


@dataclass(frozen=True)
class Decision:
    """What to do: ``status`` 304 or 412 ends the request; None goes on,
    honouring a Range only if ``use_range``."""

    status: Optional[int]
    use_range: bool


def _tags(header: str) -> list[str]:
    """The entity tags of an If-Match / If-None-Match list ('*' stays '*')."""
    tags, rest = [], header.strip()
    while rest:
        rest = rest.lstrip(" \t,")
        if not rest:
            break
        if rest.startswith("*"):
            tags.append("*")
            rest = rest[1:]
            continue
        weak = rest.startswith("W/")
        body = rest[2:] if weak else rest
        if not body.startswith('"'):
            return tags  # malformed: stop at the first thing that is not a tag
        close = body.find('"', 1)
        if close < 0:
            return tags
        tags.append(("W/" if weak else "") + body[:close + 1])
        rest = body[close + 1:]
    return tags


def _weak_equal(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def _strong_equal(a: str, b: str) -> bool:
    return not a.startswith("W/") and a == b


def _date(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def evaluate(method: str, conditions: Conditions, etag: str,
             last_modified: Optional[str]) -> Decision:
    """The answer to a GET or HEAD with ``conditions`` on a representation
    whose strong ETag is ``etag`` and whose Last-Modified is
    ``last_modified`` (an HTTP date, or None), in RFC 9110's order."""
    modified = _date(last_modified)
    if conditions.if_match is not None:
        tags = _tags(conditions.if_match)
        if not any(t == "*" or _strong_equal(t, etag) for t in tags):
            return Decision(412, False)
    elif conditions.if_unmodified_since is not None:
        since = _date(conditions.if_unmodified_since)
        if since is not None and modified is not None and modified > since:
            return Decision(412, False)
    if conditions.if_none_match is not None:
        tags = _tags(conditions.if_none_match)
        if any(t == "*" or _weak_equal(t, etag) for t in tags):
            return Decision(304 if method in ("GET", "HEAD") else 412, False)
    elif conditions.if_modified_since is not None and method in ("GET", "HEAD"):
        since = _date(conditions.if_modified_since)
        if since is not None and modified is not None and modified <= since:
            return Decision(304, False)
    return Decision(None, if_range_holds(conditions.if_range, etag, last_modified))


def if_range_holds(if_range: Optional[str], etag: str, last_modified: Optional[str]) -> bool:
    """Whether a Range may be honoured given ``If-Range`` (absent: yes). An
    entity tag must match strongly; a date must equal Last-Modified exactly
    (RFC 9110 13.1.5: a date is a strong validator only then)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return _strong_equal(value, etag)
    asked, modified = _date(value), _date(last_modified)
    return asked is not None and modified is not None and asked == modified


def http_date(when: float) -> str:
    """``when`` (seconds since the epoch) as an HTTP date (IMF-fixdate)."""
    return format_datetime(datetime.fromtimestamp(int(when), timezone.utc), usegmt=True)


def title_etag(name: str, created: float, size: int, origin_etag: Optional[str],
               origin_modified: Optional[str]) -> str:
    """A strong ETag for one version of a title's bytes.

    It names the catalog entry (name and creation time), its size and the
    origin's validators, so it changes when the title is added again or its
    origin changes it, and stays the same across evictions and refills of
    the same version (an edge kvod's If-Range keeps holding)."""
    key = f"{name}\0{created!r}\0{size}\0{origin_etag or ''}\0{origin_modified or ''}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:24] + '"'
