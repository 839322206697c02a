"""HTTP Digest arithmetic (RFC 2617, RFC 7616) and Basic, for RTSP.

The server stores HA1 = H(username:realm:password), which is what an
htdigest file holds, never a password. :func:`expected_response` computes
what a client must send for ``qop=auth`` and for the RFC 2069 form without
``qop`` (GStreamer's), with MD5, SHA-256 and their ``-sess`` variants;
:func:`verify_digest` compares in constant time.

Why not ``twisted.cred``'s ``DigestCredentialFactory``: it knows MD5,
MD5-sess and SHA-1 but not SHA-256; its nonces are not tracked, so the same
nonce and ``nc`` can be replayed for as long as its opaque (client address
plus a timestamp) is fresh; and its challenge always carries an opaque of
its own format. It is also Twisted, and this room is sans-IO like
``appliance.rtsp``. What does fit, its ``calcHA1``/``calcHA2``/
``calcResponse`` arithmetic, is used by the tests as an independent oracle
for the MD5 answers instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

#: Digest algorithms, by the name a client writes (compared case-insensitively)
ALGORITHMS: dict[str, str] = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256",
                              "SHA-256-SESS": "sha256"}


def canonical_algorithm(name: str | None) -> str | None:
    """The upper-case name of a supported algorithm (None means MD5), or None."""
    key = "MD5" if name is None else name.upper()
    return key if key in ALGORITHMS else None


def digest_hex(algorithm: str, text: str) -> str:
    """H(text) in lower-case hex for ``algorithm`` (``MD5``, ``SHA-256`` ...)."""
    return hashlib.new(ALGORITHMS[algorithm.upper()], text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password): what a users file stores."""
    return digest_hex(algorithm, f"{username}:{realm}:{password}")


@dataclass(frozen=True)
class DigestAnswer:
    """The parameters of a Digest ``Authorization`` the response depends on."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"        # canonical, see canonical_algorithm()
    qop: str | None = None        # "auth", or None for the RFC 2069 form
    nc: str | None = None         # 8 hex digits with qop
    cnonce: str | None = None     # with qop (and always for -sess)


def expected_response(answer: DigestAnswer, stored_ha1: str, method: str) -> str:
    """The ``response`` a client that knows the password computes."""
    algorithm = answer.algorithm
    key = stored_ha1.lower()
    if algorithm.endswith("-SESS"):
        key = digest_hex(algorithm, f"{key}:{answer.nonce}:{answer.cnonce or ''}")
    ha2 = digest_hex(algorithm, f"{method}:{answer.uri}")
    if answer.qop is None:
        return digest_hex(algorithm, f"{key}:{answer.nonce}:{ha2}")
    return digest_hex(algorithm, f"{key}:{answer.nonce}:{answer.nc}:{answer.cnonce}:"
                                 f"{answer.qop}:{ha2}")


def verify_digest(answer: DigestAnswer, stored_ha1: str, method: str) -> bool:
    """Whether ``answer.response`` is right, compared in constant time."""
    expected = expected_response(answer, stored_ha1, method)
    return hmac.compare_digest(expected.encode("ascii"),
                               answer.response.lower().encode("utf-8", "replace"))


def decode_basic(token68: str) -> tuple[str, str] | None:
    """``(user, password)`` from a Basic token, or None if it is not one."""
    try:
        text = base64.b64decode(token68, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = text.partition(":")
    return (user, password) if colon else None


def verify_basic(username: str, password: str, realm: str, stored_ha1: str) -> bool:
    """Whether a Basic password matches an MD5 HA1, in constant time."""
    return hmac.compare_digest(ha1("MD5", username, realm, password).encode("ascii"),
                               stored_ha1.lower().encode("ascii"))
