"""The auth room's errors: one per kind of untrusted input it reads."""

from __future__ import annotations


class AuthError(ValueError):
    """Base class of every error ``appliance.auth`` raises."""


class AuthHeaderError(AuthError):
    """An ``Authorization`` header that does not parse (answer 400).

    The only exception :func:`appliance.auth.header.parse_authorization`
    lets out, whatever bytes a client sends.
    """


class HtdigestError(AuthError):
    """A users file that cannot be used; the message names the file and line."""
