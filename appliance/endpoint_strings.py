"""Twisted endpoint strings (``tcp:8554:interface=\\:\\:``) read the way
Twisted's ``serverFromString`` reads them: what the daemon and the CLI
need to know of a listen address without building an endpoint."""

from __future__ import annotations

from dataclasses import dataclass

# serverFromString's TCP parser takes (port, interface, backlog) positionally
_TCP_POSITIONAL = ("port", "interface", "backlog")


@dataclass(frozen=True)
class EndpointString:
    """The kind (``tcp``, ``tcp6``, ``unix``, ``systemd`` …) and the named
    arguments of an endpoint string, positional ones named as Twisted does
    for TCP."""

    kind: str
    options: dict[str, str]

    @property
    def tcp(self) -> bool:
        """Whether it is a plain TCP listener (IPv4 or IPv6)."""
        return self.kind in ("tcp", "tcp6")


def _split_unescaped(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` not escaped by a backslash, with the
    escapes removed (Twisted's endpoint string quoting)."""
    parts, current, chars = [], [], iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_endpoint(listen: str) -> EndpointString:
    """Read ``listen``; positional TCP arguments get their names."""
    kind, *args = _split_unescaped(listen, ":")
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    if kind in ("tcp", "tcp6"):
        for name, value in zip(_TCP_POSITIONAL, positional):
            options.setdefault(name, value)
    return EndpointString(kind, options)


def with_backlog(listen: str, backlog: int) -> str:
    """``listen`` with ``backlog=`` added when it is TCP and names none: a
    flash crowd of connects overflows Twisted's default of 50 (SYN retries
    add a second to the tail)."""
    parsed = parse_endpoint(listen)
    if not parsed.tcp or "backlog" in parsed.options:
        return listen
    return f"{listen}:backlog={backlog}"
