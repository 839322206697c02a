"""Ingest: put a media file into the cache and the catalog, or nothing.

``kvod catalog add FILE`` lands here. The file is hard-linked into the
title's cache folder when it is on the same filesystem (no copy, no extra
space) and copied otherwise; it is indexed into hint files; only then is the
title recorded in the catalog. Any failure removes what was made, so a
title is either fully there or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Callable

from appliance.cache.layout import hint_path, media_path, title_folder, track_hint_path
from catalog import InvalidTitleName, TitleExists, validate_title_name
from rtpengine.index.errors import MediaError
from rtpengine.index.mp4 import index_mp4, looks_like_mp4
from rtpengine.index.mpegts import index_mpegts

TS_SYNC = 0x47
COPY_CHUNK = 8 << 20


class IngestError(Exception):
    """A file cannot be added; the message says why."""


def sniff_container(path: str) -> str:
    """The container of ``path`` from its first bytes: 'mpegts' or 'mp4'."""
    with open(path, "rb") as f:
        head = f.read(189)
    if not head:
        raise MediaError(f"{path}: empty file")
    if head[0] == TS_SYNC:
        return "mpegts"
    if looks_like_mp4(head):
        return "mp4"
    raise MediaError(f"{path}: not an MPEG-TS file (first byte 0x{head[0]:02x}, want 0x47) "
                     f"nor an MP4 (no ftyp, moov or mdat box first)")


def _link_or_copy(src: str, dest: str, progress: Callable[[int, int], None] | None) -> None:
    tmp = dest + ".part"
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        total = os.path.getsize(src)
        done = 0
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(COPY_CHUNK):
                fout.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            fout.flush()
            os.fsync(fout.fileno())
    os.replace(tmp, dest)


def _index(container: str, media: str, folder: str):
    """Index ``media``: (the index, the catalog's track rows)."""
    if container == "mp4":
        index = index_mp4(media, lambda i: track_hint_path(folder, i))
        return index, [dict(track_index=i, media_type=t.kind, codec=t.encoding,
                            payload_type=t.payload_type, clock_rate=t.clock_rate,
                            fmtp=t.fmtp, hint_path=track_hint_path(folder, i),
                            packets=t.records)
                       for i, t in enumerate(index.tracks)]
    hint = hint_path(folder)
    index = index_mpegts(media, hint)
    return index, [dict(track_index=0, media_type="video", codec="MP2T", payload_type=33,
                        clock_rate=90000, fmtp=None, hint_path=hint, packets=index.records)]


def ingest_file(catalog, cache_dir: str, source: str, name: str, *, now: float,
                progress: Callable[[int, int], None] | None = None):
    """Add ``source`` as title ``name``; returns the catalog's Title."""
    try:
        validate_title_name(name)
    except InvalidTitleName as exc:
        raise IngestError(str(exc)) from None
    if catalog.get_title(name) is not None:
        raise IngestError(f"title {name!r} already exists (kvod catalog rm {name} first)")
    if not os.path.isfile(source):
        raise IngestError(f"{source}: no such file")
    try:
        container = sniff_container(source)
    except MediaError as exc:
        raise IngestError(str(exc)) from None
    folder = title_folder(cache_dir, name)
    # A folder without a catalog entry is what a crashed ingest leaves.
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    try:
        media = media_path(folder)
        _link_or_copy(os.path.abspath(source), media, progress)
        try:
            index, tracks = _index(container, media, folder)
        except MediaError as exc:
            raise IngestError(str(exc)) from None
        try:
            return catalog.add_title(
                name, container=container, media_path=media, folder=folder,
                size=index.size, duration_ns=index.duration_ns, bitrate=index.bitrate,
                state="complete", now=now, tracks=tracks)
        except TitleExists as exc:
            raise IngestError(str(exc)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def remove_title(catalog, name: str, *, keep_files: bool = False):
    """Remove title ``name`` from the catalog, then its cache folder."""
    title = catalog.remove_title(name)
    if not keep_files and title.folder:
        shutil.rmtree(title.folder, ignore_errors=True)
    return title
