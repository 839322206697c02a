"""HLS for MP4 titles: ``/hls/<name>/index.m3u8`` (a version 7 VOD
playlist), ``/hls/<name>/init.mp4`` (the init segment) and
``/hls/<name>/<k>.m4s`` (segment ``k``, a moof built in memory and the
samples sent from the cached file with sendfile).

The boxes of the title are parsed once per title version (the file's
size and mtime) in a thread, by ``rtpengine.index.mp4.read_tracks``; the
fragment of a segment is built at each request (its moof is a few KB of
``array`` work). Segments and the init segment go out through the
download path (``TitleDownloads.answer_pieces``): ETag, Range, HEAD and
conditional requests as for the title itself.

A title still filling is served too when it is a progressive MP4: its
fill fetches the ``moov`` and the box headers first, and the ``moov``
describes every sample, so the playlist is the whole title's (VOD, as
once it is whole) and a segment whose samples are not there yet waits
for them as a download does (the fill fetches what a waiting request
needs next). A fragmented MP4's samples are known only as its fragments
arrive: it answers 503 with Retry-After until it is whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import OrderedDict

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from appliance.http.download import TitleDownloads, error
from appliance.http.fmp4.title import (INIT_NAME, SEGMENT_NAME, Fmp4Title, NotWholeYet,
                                       load_title)
from rtpengine.index.errors import MediaError

log = logging.getLogger(__name__)

PLAYLIST_TYPE = b"application/vnd.apple.mpegurl"
_SEGMENT = re.compile(rb"(0|[1-9][0-9]{0,8})\.m4s")
#: changes when the bytes of the segments this code builds change, so a
#: cache never keeps an old layout under the same ETag
FORMAT = "fmp4-1"
#: titles whose parsed tables are kept (a two-hour film: about 15 MB of
#: arrays, parsed in 0.4 s)
CACHED_TITLES = 8


def is_fmp4_leaf(leaf: bytes) -> bool:
    """Whether ``leaf`` names something of an MP4 title's HLS (the init
    segment or a segment; the playlist is index.m3u8 for every title)."""
    return leaf == INIT_NAME.encode() or _SEGMENT.fullmatch(leaf) is not None


def _cannot_serve(request, title, exc: Exception) -> None:
    """Answer that ``title``'s cached file is damaged, and how (the daemon
    and every other title go on)."""
    log.warning("HLS of %s: %s", title.name, exc)
    error(request, 500, f"{title.name}: its cached MP4 cannot be served as HLS: {exc}")


class Fmp4Hls:
    """The fMP4 side of ``/hls/``, for the MP4 titles of ``downloads``' cache."""

    def __init__(self, downloads: TitleDownloads, target_duration: float) -> None:
        self.downloads = downloads
        self.target_duration = target_duration
        self._titles: OrderedDict[tuple, Fmp4Title] = OrderedDict()
        self._loading: dict[tuple, list[Deferred]] = {}   # requests waiting for a load

    async def serve(self, request, title, leaf: bytes) -> None:
        """Answer ``leaf`` (index.m3u8, init.mp4 or a segment) of MP4 ``title``."""
        match = _SEGMENT.fullmatch(leaf)
        if leaf not in (b"index.m3u8", INIT_NAME.encode()) and match is None:
            error(request, 404, f"ask for /hls/NAME/index.m3u8, {INIT_NAME} or "
                                f"{SEGMENT_NAME.format('K')}")
            return
        filling = title.state != "complete"
        try:
            fmp4 = await self._load(title, filling)
        except (MediaError, OSError) as exc:
            if not filling:
                _cannot_serve(request, title, exc)
                return
            if isinstance(exc, NotWholeYet):
                message = str(exc)
            else:
                # the fill checked the moov before it began: unexpected
                log.warning("HLS of %s while it fills: %s", title.name, exc)
                message = f"{title.name} cannot be served over HLS before its fill ends: {exc}"
            request.setHeader(b"Retry-After", b"5")
            error(request, 503, message)
            return
        if request._disconnected:
            return
        if leaf == b"index.m3u8":
            body = fmp4.playlist(self.target_duration).encode()
            request.setHeader(b"Content-Type", PLAYLIST_TYPE)
            request.setHeader(b"Content-Length", str(len(body)).encode())
            request.setHeader(b"Cache-Control", b"max-age=60")
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            request.write(body)
            request.finish()
            return
        if match is None:
            pieces, what = [fmp4.init], "init"
        else:
            k = int(match[1])
            if k >= len(fmp4.plans):
                error(request, 404, f"{title.name} has {len(fmp4.plans)} segments")
                return
            try:
                fragment = fmp4.fragment(k)
            except MediaError as exc:
                _cannot_serve(request, title, exc)
                return
            pieces, what = [fragment.head, *fragment.parts], str(k)
        self.downloads.answer_pieces(request, title, pieces, kind=fmp4.kind,
                                     etag=self._etag(title, what))

    def _etag(self, title, what: str) -> str:
        key = f"{self.downloads.etag(title)}\0{FORMAT}\0{self.target_duration!r}\0{what}"
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:24] + '"'

    async def _load(self, title, filling: bool = False) -> Fmp4Title:
        """The title's parsed tables: made once per version, in a thread
        (a two-hour film takes 0.4 s of Python), for all the
        requests that ask meanwhile."""
        st = os.stat(title.media_path)
        if filling:
            # every write of the fill moves the file's mtime, not its moov:
            # the version is the fill's file (a fill that starts over makes
            # a new one) and the origin's validator
            fill = self.downloads.cache.fill_for(title.name)
            key = (title.media_path, st.st_ino, st.st_size, "filling",
                   getattr(fill, "validator", None))
        else:
            key = (title.media_path, st.st_size, st.st_mtime_ns)
        found = self._titles.get(key)
        if found is not None:
            self._titles.move_to_end(key)
            return found
        waiter: Deferred = Deferred()
        if key not in self._loading:
            self._loading[key] = []
            threads.deferToThreadPool(
                self.downloads.reactor, self.downloads.reactor.getThreadPool(),
                load_title, title.media_path, title.name, self.target_duration,
                filling=filling,
            ).addBoth(self._loaded, key)
        self._loading[key].append(waiter)
        return await waiter

    def _loaded(self, result, key: tuple) -> None:
        if isinstance(result, Fmp4Title):
            self._titles[key] = result
            while len(self._titles) > CACHED_TITLES:
                self._titles.popitem(last=False)
        # a failure is not kept: a damaged file is looked at again next time
        for waiter in self._loading.pop(key):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
