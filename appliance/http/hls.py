"""``GET /hls/<name>/index.m3u8``: an HLS media playlist of a cached
MPEG-TS title, its segments byte ranges of ``/hls/<name>/media.ts``: the
title's download under a name with the extension players insist on
(ffmpeg's allowed_segment_extensions), so they go out through the download
path and its sendfile.

MP4 titles get fMP4 segments instead (``appliance.http.hls_fmp4``).

A complete title gets a VOD playlist; a title still filling gets an EVENT
playlist of the segments its hint records already close, which grows as
the fill goes on (players reload it).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Optional

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.web import resource, server

from appliance.http.download import TitleDownloads, error
from appliance.http.hls_fmp4 import Fmp4Hls, is_fmp4_leaf
from appliance.http.playlist import (hint_records, keyframe_cuts, media_playlist, segments,
                                     ts_init_section)
from rtpengine.hintfile import HintHeader, HEADER_SIZE

log = logging.getLogger(__name__)

PLAYLIST_TYPE = b"application/vnd.apple.mpegurl"
MEDIA_NAME = "media.ts"
#: seconds a playlist request waits for a filling title's first segment
FIRST_SEGMENT_WAIT = 20.0
#: playlists kept, by (hint file, records, complete): a long title's
#: keyframe scan is done once, not at every player's reload
CACHED_PLAYLISTS = 64


class HlsPlaylists(resource.Resource):
    """``/hls/``: a playlist per title."""

    isLeaf = True

    def __init__(self, downloads: TitleDownloads, target_duration: float = 6.0) -> None:
        super().__init__()
        self.downloads = downloads
        self.cache = downloads.cache
        self.target_duration = target_duration
        self._made: OrderedDict[tuple, str] = OrderedDict()
        self.fmp4 = Fmp4Hls(downloads, target_duration)

    def render_GET(self, request) -> int:  # noqa: N802 (Twisted API)
        d = Deferred.fromCoroutine(self._serve(request))
        d.addErrback(self.downloads._crashed, request)
        return server.NOT_DONE_YET

    render_HEAD = render_GET

    async def _serve(self, request) -> None:
        path = request.postpath
        if len(path) < 2 or not (path[-1] in (b"index.m3u8", MEDIA_NAME.encode())
                                 or is_fmp4_leaf(path[-1])):
            error(request, 404, f"ask for /hls/NAME/index.m3u8 or /hls/NAME/{MEDIA_NAME}")
            return
        title = await self.downloads.servable_title(request, path[:-1])
        if title is None or request._disconnected:
            return
        if title.container == "mp4":
            await self.fmp4.serve(request, title, path[-1])
            return
        if path[-1] not in (b"index.m3u8", MEDIA_NAME.encode()):
            error(request, 404, f"{title.name} is not an MP4 title: ask for "
                                f"/hls/NAME/index.m3u8 or /hls/NAME/{MEDIA_NAME}")
            return
        if path[-1] != b"index.m3u8":
            self.downloads.answer(request, title)
            return
        if title.container != "mpegts" or not title.tracks:
            error(request, 415, f"{title.name}: HLS is for MPEG-TS and MP4 titles")
            return
        # a title that just started filling has no closed segment yet: the
        # player's first request waits for one rather than failing
        deadline = self.downloads.reactor.seconds() + FIRST_SEGMENT_WAIT
        text = self.playlist(title)
        while text is None and self.downloads.reactor.seconds() < deadline \
                and not request._disconnected:
            filling = self._filling(title.name)
            # read again: a short title's fill may have ended meanwhile
            title = self.cache.get_title(title.name) or title
            if not filling and title.state != "complete":
                break
            await task.deferLater(self.downloads.reactor, 0.05, lambda: None)
            text = self.playlist(title)
        if request._disconnected:
            return
        if text is None:
            error(request, 503, f"{title.name}: nothing playable yet")
            return
        body = text.encode()
        request.setHeader(b"Content-Type", PLAYLIST_TYPE)
        request.setHeader(b"Content-Length", str(len(body)).encode())
        # a growing playlist must be fetched again; a VOD one may be kept
        request.setHeader(b"Cache-Control",
                          b"no-cache" if "#EXT-X-ENDLIST" not in text else b"max-age=60")
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.write(body)
        request.finish()

    def _filling(self, name: str) -> bool:
        fill = self.cache.fill_for(name)
        return fill is not None and fill.error is None and not fill.stopped

    def playlist(self, title) -> Optional[str]:
        """The playlist text of ``title`` now (None: no segment yet)."""
        fill = self.cache.fill_for(title.name)
        final = title.state == "complete" and (fill is None or fill.complete)
        if final:
            hint_path, count = title.tracks[0].hint_path, None
        elif fill is not None:
            update = fill.hints()
            hint_path, count = update.path, update.count
        else:
            return None
        key = (hint_path, count, final, os.stat(hint_path).st_size)
        text = self._made.get(key)
        if text is None:
            text = self._make(title, hint_path, count, final)
            self._made[key] = text
            while len(self._made) > CACHED_PLAYLISTS:
                self._made.popitem(last=False)
        else:
            self._made.move_to_end(key)
        return text if "#EXTINF" in text or final else None

    def _make(self, title, hint_path: str, count: Optional[int], final: bool) -> str:
        with open(hint_path, "rb") as f:
            data = f.read()
        header = HintHeader.parse(data[:HEADER_SIZE])
        count = header.record_count if count is None else count
        cuts = keyframe_cuts(hint_records(data, count))
        size = title.size or os.stat(title.media_path).st_size
        with open(title.media_path, "rb") as f:
            head = f.read(32 * 188)
        uri = MEDIA_NAME   # relative: beside the playlist
        parts = segments(cuts, round(self.target_duration * 1e9), end_offset=size,
                         end_ns=header.duration_ns or title.duration_ns or 0, final=final)
        return media_playlist(parts, uri, final=final, init=ts_init_section(head),
                              target_s=self.target_duration)
