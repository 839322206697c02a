"""A Digest client for tests: reads a challenge, writes an Authorization.

Written from RFC 2617/7616 with hashlib, not with appliance.auth, so the
server's arithmetic is checked against a second implementation.
"""

from __future__ import annotations

import hashlib
import re

_PARAM_RE = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def challenge_params(value: str) -> dict[str, str]:
    """The parameters of one ``WWW-Authenticate: Digest ...`` value."""
    assert value.startswith("Digest "), value
    return {m[1].lower(): m[2] if m[2] is not None else m[3]
            for m in _PARAM_RE.finditer(value[len("Digest "):])}


def digest_authorization(challenge: str, user: str, password: str, method: str, uri: str,
                         *, nc: int = 1, cnonce: str = "0a4f113b", qop: bool = True) -> str:
    """The Authorization value answering ``challenge`` (qop=auth, or the
    RFC 2069 form without qop when ``qop`` is False)."""
    params = challenge_params(challenge)
    algorithm = params.get("algorithm", "MD5")
    h = lambda text: _HASHES[algorithm](text.encode()).hexdigest()  # noqa: E731
    realm, nonce = params["realm"], params["nonce"]
    ha1, ha2 = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
              f"algorithm={algorithm}"]
    if qop:
        response = h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    return "Digest " + ", ".join(fields)
