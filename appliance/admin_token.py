"""The admin token file: made by the daemon at start, read by the CLI.

The token authenticates writes to an admin listener that is not on
loopback (``appliance.admin_access``). The file is made 0640, so the
daemon's user writes it and members of its group (``kvod``) read it: the
operators whose ``kvod cache evict`` sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import os
import secrets
import stat
from typing import Optional

# Far more than a token needs; the file is never read past this.
MAX_TOKEN_FILE = 4096
MIN_TOKEN_LENGTH = 16


class TokenError(Exception):
    """The token file cannot be made or read; the message says why."""


def _read(path: str) -> str:
    # O_NONBLOCK and the fstat check: a FIFO put there must not block.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TokenError(f"admin token file {path} is not a plain file")
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if (len(data) > MAX_TOKEN_FILE or len(token) < MIN_TOKEN_LENGTH
            or not token.isprintable() or " " in token):
        raise TokenError(f"admin token file {path} holds no usable token (one line of at "
                         f"least {MIN_TOKEN_LENGTH} printable characters); remove it and "
                         "kvod serve makes a new one")
    return token


def read_token(path: str) -> Optional[str]:
    """The token in ``path``, or None when there is none this user can read
    (the CLI then sends none, and the daemon says if it needed one)."""
    if not path:
        return None
    try:
        return _read(path)
    except (OSError, TokenError):
        return None


def load_or_create_token(path: str) -> str:
    """The token in ``path``; a missing file is made first (0640, a fresh
    random token). Raises :class:`TokenError` when neither works."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TokenError(f"cannot read admin token file {path}: {exc.strerror}") from None
    token = secrets.token_urlsafe(32)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    except FileExistsError:
        # another process made it between our read and our create
        try:
            return _read(path)
        except OSError as exc:
            raise TokenError(f"cannot read admin token file {path}: {exc.strerror}") from None
    except OSError as exc:
        raise TokenError(f"cannot create admin token file {path}: {exc.strerror}") from None
    try:
        # the umask must not take the group's read away: the group is who may write
        os.fchmod(fd, 0o640)
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise TokenError(f"cannot write admin token file {path}: {exc.strerror}") from None
    os.close(fd)
    return token
