"""The cache folder on disk: where each title's files live and what they
are called. Every writer of the cache (ingest, fills, seek segments) names
its files here, so the layout is spelled once.

::

    <cache dir>/titles/<name, '/' percent-encoded; hashed if over 255 bytes>/
        media.ts          the title's bytes (sparse while a fill runs)
        track0.hint       its hint records (growing while a fill runs)
        track<N>.hint     the hint records of track N (MP4 titles: video, then audio)
        seek<N>.hint      a seek segment's hints (a fill's, short-lived)
        track0.hint.scale<S>  the keyframes-only hints of RTSP Scale S (2, -4, ...)
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import quote

MEDIA_NAME = "media.ts"
HINT_NAME = "track0.hint"
NAME_MAX = 255                  # bytes of one file name (ext4, xfs, btrfs, tmpfs)


def title_folder(cache_dir: str, name: str) -> str:
    """The cache folder of title ``name``.

    Flat, with '/' percent-encoded: nested folders would put title ``a/b``
    inside title ``a``'s folder, and removing ``a`` would delete ``a/b``.
    A valid name of 255 characters with many '/' encodes to up to ~760
    bytes, past the file system's limit on one file name; such a name keeps
    a readable head and ends in a hash of the whole name, so every valid
    name has a folder and no two names share one.
    """
    folder = quote(name, safe="")
    if len(folder) > NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        head = folder[:NAME_MAX - len(digest) - 1]
        if "%" in head[-2:]:            # never end inside a %XX escape
            head = head[:head.rindex("%")]
        # '~' is in no title name: a hashed folder never equals a plain one
        folder = f"{head}~{digest}"
    return os.path.join(cache_dir, "titles", folder)


def media_path(folder: str) -> str:
    """The media file of the title whose folder is ``folder``."""
    return os.path.join(folder, MEDIA_NAME)


def hint_path(folder: str) -> str:
    """The (first track's) hint file of the title whose folder is ``folder``."""
    return os.path.join(folder, HINT_NAME)


def track_hint_path(folder: str, index: int) -> str:
    """The hint file of track ``index`` of the title whose folder is ``folder``."""
    return os.path.join(folder, f"track{index}.hint")


def seek_hint_path(folder: str, number: int) -> str:
    """The hint file of seek segment ``number`` of a fill."""
    return os.path.join(folder, f"seek{number}.hint")


def trick_hint_path(hint_file: str, scale: int) -> str:
    """The trick-play hint file of ``hint_file`` at ``scale`` (beside it, in
    the title's folder, so it goes with the title)."""
    return f"{hint_file}.scale{scale}"
