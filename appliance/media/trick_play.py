"""The trick-play hint files of cached MPEG-TS titles, made on first use.

A title's keyframe spans are found once (``rtpengine.index.trick``) when a
viewer first asks for a ``Scale`` other than 1, and each scale's hint file
is written beside the title's own hint file (``appliance.cache.layout``),
so it is made once per title and scale, and goes when the title goes. A
hint file newer than its trick files (the title was fetched again) makes
them again.
"""

from __future__ import annotations

import logging
import os
import time

from appliance.cache.layout import trick_hint_path
from rtpengine.hintfile import HintFile
from rtpengine.index.trick import KeyframeSpans, TrickStream, keyframe_spans, write_trick_hints

log = logging.getLogger(__name__)

# titles whose spans and trick streams are kept in memory
MAX_TITLES = 64


class TrickFiles:
    """Trick streams by (hint file, scale), their files on disk."""

    def __init__(self) -> None:
        self._spans: dict[tuple, KeyframeSpans] = {}
        self._streams: dict[tuple, TrickStream] = {}

    def stream(self, hints: HintFile, media_path: str, scale: int) -> tuple[str, TrickStream]:
        """The trick hint file of ``hints`` at ``scale`` and its stream, made
        if missing or older than ``hints``. Raises TrickError (no keyframes)
        or OSError."""
        # the version of the file these hints were read from (not of
        # whatever is at its path now)
        version = (hints.path, *hints.identity())
        mtime_ns = version[-1]
        path = trick_hint_path(hints.path, scale)
        trick = self._streams.get((*version, scale))
        if trick is not None and _newer(path, mtime_ns):
            return path, trick
        spans = self._spans.get(version)
        if spans is None:
            started = time.monotonic()
            fd = os.open(media_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                spans = keyframe_spans(hints, fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            if len(self._spans) >= MAX_TITLES:
                self._spans.clear()
                self._streams.clear()
            self._spans[version] = spans
            log.info("trick play: %d keyframes of %s found in %.0f ms", len(spans.spans),
                     hints.path, (time.monotonic() - started) * 1e3)
        trick = write_trick_hints(path, spans, scale, payload_type=hints.header.payload_type)
        self._streams[(*version, scale)] = trick
        return path, trick


def _newer(path: str, than_ns: int) -> bool:
    try:
        return os.stat(path).st_mtime_ns >= than_ns
    except FileNotFoundError:
        return False
