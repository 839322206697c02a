"""Errors the media indexers raise."""

from __future__ import annotations


class MediaError(ValueError):
    """A media file is malformed, truncated or unsupported.

    The message names what is wrong and where (file and byte offset), so
    that an operator can tell a bad origin file from a kvod bug.
    """


class FileChanged(MediaError):
    """The file changed (size, time or identity) while it was read."""
