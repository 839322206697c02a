"""Where a play from a title's beginning starts, remembered per hint file.

Every stream opens its own reader of the title's hint file, and finding
the keyframe at npt 0 costs that reader a read of its first 8 KiB and a
search in Python: about 40 µs on the way from PLAY to the first packet,
paid by every viewer of the same title. The answer depends only on the
hint file, so it is kept under the file's identity (path, record count,
device, inode, size, mtime): a file replaced, rewritten or cut short is
searched again. Bounded: past ``limit`` entries it starts again empty.
"""

from __future__ import annotations

from typing import Hashable


class StartPoints:
    """(record, send time in ns) of the start keyframe, by hint file version."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._points: dict[Hashable, tuple[int, int]] = {}

    def get(self, key: Hashable) -> tuple[int, int] | None:
        """The start point remembered under ``key``, or None."""
        return self._points.get(key)

    def remember(self, key: Hashable, point: tuple[int, int]) -> tuple[int, int]:
        """Keep ``point`` under ``key``; returns it."""
        if len(self._points) >= self.limit:
            self._points.clear()
        self._points[key] = point
        return point

    def __len__(self) -> int:
        return len(self._points)
