"""Who may ask the admin listener what, decided without any I/O.

The admin listener is meant for the operator's own tools (``kvod status``,
``kvod cache …``, a Prometheus scraper), but anything that can reach its
port can send it a request, including a web page in the operator's browser:

- DNS rebinding: a page on ``evil.example`` re-points its name at 127.0.0.1
  and reads ``/status`` as same-origin. Its requests carry
  ``Host: evil.example``, so only a Host the listener answers for is served:
  an IP literal of the address the request came in on, ``localhost``, or a
  name in ``[admin] names``; anything else gets 421 (Misdirected Request).
- Cross-site requests: a page can POST to ``/cache/evict`` without being
  able to read the answer. Browsers name the page in ``Origin`` and
  ``Sec-Fetch-Site``; a write whose origin is not the admin's own gets 403.
- Other hosts: off loopback a write needs ``Authorization: Bearer TOKEN``
  with the token of ``[admin] token_file``; a reader without it sees no
  RTSP session ids (they are replaced by aliases that name no session).

:func:`decide` is the whole policy; ``appliance.admin_http`` applies it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Mapping, Optional

# The methods the admin answers at all; writes are POST only.
READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST"})


@dataclass(frozen=True)
class AdminAccess:
    """What the listener knows when it decides: its names, its token, and
    whether it listens on loopback only."""

    names: frozenset[str] = frozenset()
    token: Optional[str] = None
    loopback_only: bool = True
    # Off loopback, with no token to check, writes are refused unless the
    # operator turned authentication off ([admin] token_file = "").
    open_writes: bool = False


@dataclass(frozen=True)
class Verdict:
    """The decision on one request: ``status`` 0 to serve it (``full``: may
    see session ids), else the HTTP status and reason to answer with."""

    status: int = 0
    reason: str = ""
    full: bool = True


def _ip(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address as a socket gives it) is a loopback address."""
    address = _ip(host)
    return address is not None and address.is_loopback


def host_name(value: str) -> Optional[str]:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``),
    lower-case; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
        return value[1:end] or None
    name, _, port = value.partition(":")
    if port and not port.isdigit() or not name:
        return None
    return name


def host_allowed(host_header: Optional[str], local_host: str, names: frozenset[str]) -> bool:
    """Whether a request whose ``Host`` is ``host_header``, come in on the
    local address ``local_host``, is for this listener. A request without
    Host (HTTP/1.0 tools) is: a browser always sends one."""
    if host_header is None:
        return True
    name = host_name(host_header)
    if name is None:
        return False
    literal = _ip(name)
    if literal is not None:
        return literal == _ip(local_host)
    name = name.rstrip(".")
    return name == "localhost" or name in names


def _same_origin(origin: str, host_header: Optional[str]) -> bool:
    # The admin's own origin is plain http on the Host the request named.
    return host_header is not None and origin.strip().lower() == \
        "http://" + host_header.strip().lower()


def bearer_ok(authorization: Optional[str], token: Optional[str]) -> bool:
    """Whether ``Authorization`` carries ``Bearer TOKEN`` for ``token``."""
    if not authorization or not token:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


def decide(access: AdminAccess, *, method: str, headers: Mapping[str, str],
           local_host: str, peer_host: str) -> Verdict:
    """The verdict on one request. ``headers`` maps lower-case names to the
    first value; ``local_host`` is the address it came in on, ``peer_host``
    the client's."""
    if not host_allowed(headers.get("host"), local_host, access.names):
        return Verdict(421, "this admin listener does not answer for that Host "
                            "(add the name to [admin] names)")
    authorization = headers.get("authorization")
    authenticated = bearer_ok(authorization, access.token)
    if authorization is not None and not authenticated:
        return Verdict(401, "wrong admin token")
    full = authenticated or is_loopback(peer_host)
    if method in READ_METHODS:
        return Verdict(full=full)
    if method not in WRITE_METHODS:
        return Verdict(405, f"method {method} is not allowed here")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return Verdict(403, f"cross-origin write refused (Sec-Fetch-Site: {fetch_site})")
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, headers.get("host")):
        return Verdict(403, "cross-origin write refused (Origin is not this admin listener)")
    if not access.loopback_only and not authenticated:
        if access.token is None and access.open_writes:
            return Verdict(full=full)
        if access.token is None:
            return Verdict(403, "writes are refused: the admin token could not be set up "
                                "(see the daemon's log)")
        return Verdict(401, "this admin listener is not on loopback: writes need "
                            "Authorization: Bearer <the token in [admin] token_file>")
    return Verdict(full=full)


def redact_sessions(status: dict, secret: bytes) -> dict:
    """``status`` (``appliance.status``) with each session id replaced by
    its :func:`session_alias`, for readers who may not see ids."""
    sessions = [dict(session, id=session_alias(secret, session["id"]))
                for session in status.get("sessions", ())]
    return dict(status, sessions=sessions)


def session_alias(secret: bytes, session_id: str) -> str:
    """A stable stand-in for ``session_id`` that cannot be turned back into it
    (a keyed hash): series in /metrics stay apart, no id leaks."""
    return "s-" + hmac.new(secret, session_id.encode(), hashlib.sha256).hexdigest()[:12]
