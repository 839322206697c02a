"""The cache folder on disk: where each title's files live and what they
are called. Every writer of the cache (ingest, fills, seek segments) names
its files here, so the layout is spelled once.

::

    <cache dir>/titles/<name, '/' percent-encoded>/
        media.ts          the title's bytes (sparse while a fill runs)
        track0.hint       its hint records (growing while a fill runs)
        track<N>.hint     the hint records of track N (MP4 titles: video, then audio)
        seek<N>.hint      a seek segment's hints (a fill's, short-lived)
"""

from __future__ import annotations

import os
from urllib.parse import quote

MEDIA_NAME = "media.ts"
HINT_NAME = "track0.hint"


def title_folder(cache_dir: str, name: str) -> str:
    """The cache folder of title ``name``.

    Flat, with '/' percent-encoded: nested folders would put title ``a/b``
    inside title ``a``'s folder, and removing ``a`` would delete ``a/b``.
    """
    return os.path.join(cache_dir, "titles", quote(name, safe=""))


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
