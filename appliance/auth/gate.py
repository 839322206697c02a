"""The RTSP server's door: which requests need credentials, and checking them.

:meth:`RtspGate.check` is handed each request before the session layer
sees it and answers None (let it through) or a :class:`Denial` to send
instead: 401 with fresh challenges, 403 for a user the path's rule does
not name, 400 for an ``Authorization`` that does not parse. OPTIONS and
paths under an ``open`` rule pass without credentials. Digest works on any
connection; Basic only where the caller says the connection is encrypted
(``secure``, RTSPS), because it sends the password itself.

Every refusal but the first challenge of a client (which every client
meets) is counted by reason and logged in one line with the client's
address and the user name, never a password or a digest.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.auth.digest import (DigestAnswer, canonical_algorithm, decode_basic,
                                   verify_basic, verify_digest)
from appliance.auth.errors import AuthHeaderError
from appliance.auth.header import Credentials, format_challenge, parse_authorization
from appliance.auth.htdigest import Users
from appliance.auth.nonces import REPLAY, STALE, NonceStore
from appliance.auth.rules import OPEN, AccessRules

log = logging.getLogger(__name__)

OPEN_METHODS = frozenset({"OPTIONS"})
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
#: the reasons refusals are counted under (status and metrics)
REASONS = ("malformed", "unsupported", "bad_credentials", "stale", "replay", "forbidden",
           "basic_insecure", "uri_mismatch")


@dataclass(frozen=True)
class Denial:
    """The answer to a request the gate stops: status and headers to send."""

    status: int
    headers: tuple[tuple[str, str], ...]
    reason: str


class _Refused(Exception):
    def __init__(self, reason: str, message: str, status: int = 401, stale: bool = False):
        super().__init__(message)
        self.reason, self.status, self.stale = reason, status, stale


class RtspGate:
    """Checks requests against ``users`` of ``realm`` and the access ``rules``.

    ``users`` and ``rules`` may be replaced while running (a reload); the
    nonce store stays, so clients keep their nonces.
    """

    def __init__(self, users: Users, realm: str, rules: AccessRules | None = None,
                 nonces: NonceStore | None = None) -> None:
        self.users = users
        self.realm = realm
        self.rules = rules if rules is not None else AccessRules()
        # not "nonces or ...": an empty store is falsy (it has a length)
        self.nonces = nonces if nonces is not None else NonceStore()
        self.challenges = 0
        self.failures: Counter[str] = Counter()

    # -- the entry point -----------------------------------------------------

    def check(self, *, method: str, target: str, authorization: list[str], connection: str,
              peer: str, now: float, secure: bool = False) -> Denial | None:
        """None if the request may go on, else the :class:`Denial` to answer.

        ``authorization`` holds the request's Authorization values;
        ``connection`` names the connection (nonces are bound to it),
        ``peer`` is the client's address for the log.
        """
        if method in OPEN_METHODS:
            return None
        rule = self.rules.rule_for(target)
        if rule.access == OPEN:
            return None
        if not authorization:
            self.challenges += 1
            log.debug("auth: %s %s from %s: challenged", method, target[:200], peer)
            return self._challenge(401, "challenge", connection, now, secure)
        try:
            if len(authorization) > 1:
                raise _Refused("malformed", "several Authorization headers", 400)
            user = self._authenticate(method, target, authorization[0], connection, now,
                                      secure)
            if not rule.allows(user):
                raise _Refused("forbidden", f"user {user[:64]!r} is not allowed under "
                                            f"{rule.prefix}", 403)
        except _Refused as refused:
            self.failures[refused.reason] += 1
            log.warning("auth: %s %s from %s refused (%d): %s", method, target[:200], peer,
                        refused.status, refused)
            if refused.status == 401:
                return self._challenge(401, refused.reason, connection, now, secure,
                                       stale=refused.stale)
            return Denial(refused.status, (), refused.reason)
        return None

    def status(self) -> dict:
        """Figures for ``/status`` and ``/metrics``."""
        return {"realm": self.realm, "users": self.users.count(self.realm),
                "challenges": self.challenges,
                "failures": {reason: self.failures.get(reason, 0) for reason in REASONS}}

    # -- checking --------------------------------------------------------------

    def _authenticate(self, method: str, target: str, value: str, connection: str,
                      now: float, secure: bool) -> str:
        try:
            creds = parse_authorization(value)
        except AuthHeaderError:
            # not the parser's message: it quotes the header, and a mangled
            # Basic header is a password in base64
            raise _Refused("malformed", "an Authorization header that does not parse",
                           400) from None
        if creds.scheme == "digest":
            return self._digest(method, target, creds, connection, now)
        if creds.scheme == "basic":
            return self._basic(creds, secure)
        # the "scheme" may be a Basic token that lost its blank: not logged
        raise _Refused("unsupported", "an Authorization scheme other than Digest or Basic")

    def _digest(self, method: str, target: str, creds: Credentials, connection: str,
                now: float) -> str:
        p = creds.params
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise _Refused("malformed", f"Digest without {', '.join(missing)}", 400)
        user = p["username"]
        algorithm = canonical_algorithm(p.get("algorithm"))
        if algorithm is None:
            raise _Refused("unsupported", f"algorithm {p['algorithm'][:20]!r}")
        qop = p.get("qop")
        if qop is not None and qop.lower() != "auth":
            raise _Refused("unsupported", f"qop {qop[:20]!r}")
        nc = p.get("nc")
        if qop is not None and (nc is None or not _NC_RE.fullmatch(nc) or "cnonce" not in p):
            raise _Refused("malformed", "qop=auth without a valid nc and cnonce", 400)
        if not _same_resource(p["uri"], target):
            raise _Refused("uri_mismatch", f"digest uri {p['uri'][:100]!r} is not the "
                                           "request's", 400)
        if p["realm"] != self.realm:
            raise _Refused("bad_credentials", f"user {user[:64]!r}: realm "
                                              f"{p['realm'][:64]!r} is not ours")
        answer = DigestAnswer(username=user, realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
                              response=p["response"], algorithm=algorithm,
                              qop=None if qop is None else "auth",
                              nc=nc if qop is not None else None, cnonce=p.get("cnonce"))
        stored = self.users.ha1(user, self.realm, algorithm)
        if stored is None or not verify_digest(answer, stored, method):
            raise _Refused("bad_credentials", f"user {user[:64]!r}: wrong user or password")
        verdict = self.nonces.check(p["nonce"], int(nc, 16) if qop is not None else None,
                                    connection, now)
        if verdict == STALE:
            raise _Refused("stale", f"user {user[:64]!r}: stale nonce", stale=True)
        if verdict == REPLAY:
            raise _Refused("replay", f"user {user[:64]!r}: nonce count {nc} replayed")
        return user

    def _basic(self, creds: Credentials, secure: bool) -> str:
        if not secure:
            raise _Refused("basic_insecure", "Basic over an unencrypted connection")
        pair = decode_basic(creds.token68 or "")
        if pair is None:
            raise _Refused("malformed", "Basic credentials that do not decode", 400)
        user, password = pair
        stored = self.users.ha1(user, self.realm, "MD5")
        if stored is None or not verify_basic(user, password, self.realm, stored):
            raise _Refused("bad_credentials", f"user {user[:64]!r}: wrong user or password")
        return user

    # -- challenges ------------------------------------------------------------

    def _challenge(self, status: int, reason: str, connection: str, now: float,
                   secure: bool, stale: bool = False) -> Denial:
        nonce = self.nonces.issue(connection, now)
        # Preferred first (RFC 7616 3.7); SHA-256 only when some user has
        # such a hash, and MD5 last: ffmpeg keeps the last Digest it reads.
        algorithms = ["SHA-256"] if "SHA-256" in self.users.algorithms(self.realm) else []
        algorithms.append("MD5")
        headers = []
        for algorithm in algorithms:
            params = [("realm", self.realm), ("nonce", nonce), ("algorithm", algorithm),
                      ("qop", "auth")]
            if stale:
                params.append(("stale", "true"))
            headers.append(("WWW-Authenticate", format_challenge("Digest", params)))
        if secure:
            headers.append(("WWW-Authenticate", format_challenge("Basic",
                                                                 [("realm", self.realm)])))
        return Denial(status, tuple(headers), reason)


def _same_resource(uri: str, target: str) -> bool:
    """Whether a Digest ``uri`` names the request's target: the same string,
    or the same path (some players send only the path)."""
    if uri == target:
        return True
    try:
        return (urlsplit(uri).path.rstrip("/") or "/") == (urlsplit(target).path.rstrip("/")
                                                          or "/")
    except ValueError:
        return False
