"""Who may open which titles: access rules by URL path prefix.

A rule is written ``"PREFIX WHO"``: PREFIX is a path that starts with
``/`` (``/public/``, ``/staff/``, ``/``), WHO is ``open`` (no
authentication), ``any`` (any user of the realm) or user names separated
by blanks or commas. A prefix matches whole path segments (``/pub`` covers
``/pub/x``, not ``/public``); the longest matching prefix decides; a path
no rule matches needs ``any`` user. Paths are percent-decoded and normalised
(``..`` and ``//`` folded) before matching, so ``/public/../staff/x`` is
judged as ``/staff/x``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

OPEN = "open"
ANY = "any"
_USER_RE = re.compile(r"[^\s,:]+")


@dataclass(frozen=True)
class Rule:
    """One prefix and who may use it: ``users`` is empty for ``open``/``any``."""

    prefix: str
    access: str                  # OPEN, ANY, or "users"
    users: frozenset[str] = frozenset()

    def allows(self, user: str) -> bool:
        """Whether authenticated ``user`` may use the paths under this rule."""
        return self.access == ANY or user in self.users


DEFAULT_RULE = Rule("/", ANY)


def parse_rule(text: str) -> Rule:
    """A :class:`Rule` from ``"PREFIX WHO"``; ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("a rule is a string like \"/public/ open\"")
    prefix, _, who = text.strip().partition(" ")
    who = who.strip()
    if not prefix.startswith("/") or any(ord(c) < 33 or ord(c) == 127 for c in prefix):
        raise ValueError(f"rule {text!r}: the prefix must start with '/'")
    if not who:
        raise ValueError(f"rule {text!r}: say who may use {prefix}: open, any or user names")
    if who in (OPEN, ANY):
        return Rule(normalise_path(prefix, keep_slash=True), who)
    names = [n for n in re.split(r"[\s,]+", who) if n]
    for name in names:
        if not _USER_RE.fullmatch(name) or name in (OPEN, ANY):
            raise ValueError(f"rule {text!r}: {name!r} is not a user name")
    return Rule(normalise_path(prefix, keep_slash=True), "users", frozenset(names))


def normalise_path(path: str, keep_slash: bool = False) -> str:
    """``path`` percent-decoded, with ``.``, ``..`` and repeated slashes folded."""
    decoded = unquote(path)
    folded = posixpath.normpath("/" + decoded.lstrip("/"))
    if folded.startswith("//"):
        folded = folded[1:]
    if keep_slash and decoded.endswith("/") and not folded.endswith("/"):
        folded += "/"
    return folded


class AccessRules:
    """The rules in force; :meth:`rule_for` finds the one for a request target."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...] = ()) -> None:
        # longest prefix first, so the first match is the most specific
        self.rules = sorted(rules, key=lambda r: len(r.prefix), reverse=True)

    @classmethod
    def parse(cls, texts: list[str] | tuple[str, ...]) -> AccessRules:
        """Rules from their config strings; ValueError naming the bad one."""
        rules = [parse_rule(t) for t in texts]
        seen: set[str] = set()
        for rule in rules:
            stem = rule.prefix.rstrip("/") or "/"
            if stem in seen:
                raise ValueError(f"two rules for the prefix {rule.prefix!r}")
            seen.add(stem)
        return cls(rules)

    def rule_for(self, target: str) -> Rule:
        """The rule for a request target (``rtsp://host/path`` or a bare path)."""
        try:
            path = urlsplit(target).path if "://" in target else target
        except ValueError:  # not a URI: not a title, and not open
            return DEFAULT_RULE
        if not path.startswith("/"):
            return DEFAULT_RULE  # "*" and the like: not a title, not open
        folded = normalise_path(path)
        for rule in self.rules:
            stem = rule.prefix.rstrip("/")
            if folded == stem or folded.startswith(stem + "/"):
                return rule
        return DEFAULT_RULE
