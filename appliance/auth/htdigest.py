"""Users from a file in Apache's htdigest format.

Each line is ``user:realm:HA1``, with HA1 = MD5(user:realm:password) in
hex, as ``htdigest`` (apache2-utils) writes it. kvod also reads a 64-digit
HA1 on a line of its own as the SHA-256 one for the same user and realm
(RFC 7616), so a user can have both. Blank lines and ``#`` comments are
skipped. A malformed line is an :class:`HtdigestError` naming the file and
the line: loading is all or nothing, so a reload that fails keeps the users
already loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appliance.auth.errors import HtdigestError

_HEX_ALGORITHMS = {32: "MD5", 64: "SHA-256"}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
MAX_FILE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Users:
    """HA1s by (user, realm), each a map of algorithm to hex digest."""

    entries: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    source: str = "<memory>"

    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1 of ``user`` in ``realm`` for ``algorithm``
        (``MD5``/``SHA-256``, with or without ``-sess``), or None."""
        base = algorithm.upper().removesuffix("-SESS")
        return self.entries.get((user, realm), {}).get(base)

    def algorithms(self, realm: str) -> set[str]:
        """The algorithms some user of ``realm`` has an HA1 for."""
        return {alg for (_, r), hashes in self.entries.items() if r == realm for alg in hashes}

    def count(self, realm: str) -> int:
        """How many users ``realm`` has."""
        return sum(1 for (_, r) in self.entries if r == realm)


def parse_htdigest(text: str, source: str = "<memory>") -> Users:
    """The users in ``text``; ``source`` names it in errors."""
    entries: dict[tuple[str, str], dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(":")
        if len(parts) != 3:
            raise HtdigestError(f"{source}:{number}: expected user:realm:hash, got "
                                f"{len(parts)} field(s)")
        user, realm, digest = parts
        if not user or not realm:
            raise HtdigestError(f"{source}:{number}: empty user or realm")
        algorithm = _HEX_ALGORITHMS.get(len(digest))
        if algorithm is None or not _HEX_RE.fullmatch(digest):
            raise HtdigestError(f"{source}:{number}: the hash of {user!r} is not 32 (MD5) "
                                "or 64 (SHA-256) hex digits")
        hashes = entries.setdefault((user, realm), {})
        if algorithm in hashes:
            raise HtdigestError(f"{source}:{number}: {user!r} in realm {realm!r} has a "
                                f"second {algorithm} hash")
        hashes[algorithm] = digest.lower()
    return Users(entries, source)


def load_htdigest(path: str) -> Users:
    """The users in the file at ``path``; :class:`HtdigestError` if it is
    unreadable, too big, not UTF-8 or malformed."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise HtdigestError(f"cannot read users file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise HtdigestError(f"users file {path} is over {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HtdigestError(f"users file {path} is not UTF-8 (byte {exc.start})") from None
    return parse_htdigest(text, path)
