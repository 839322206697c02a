"""Ingest: put a media file into the cache and the catalog, or nothing.

``kvod catalog add FILE`` lands here. The file is copied into the title's
cache folder (a reflink where the file system shares blocks: btrfs, xfs;
``copy_file_range`` in the kernel elsewhere); the copy is indexed into hint
files; only then is the title recorded in the catalog. Any failure removes
what was made, so a title is either fully there or not at all.

A copy, not a hard link: a link shares the inode, so an operator who later
rewrites or truncates the source in place changes a "complete" title under
viewers. The copy is the cache's own; the source is checked (device,
inode, size, mtime) before and after it is read, and the copy before and
after it is indexed, so what is recorded is the file that was indexed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from typing import Callable

from appliance.cache.layout import hint_path, media_path, title_folder, track_hint_path
from catalog import InvalidTitleName, TitleExists, validate_title_name
from rtpengine.index.errors import MediaError
from rtpengine.index.mp4 import index_mp4, looks_like_mp4
from rtpengine.index.file_reads import file_identity
from rtpengine.index.mpegts import index_mpegts

TS_SYNC = 0x47
COPY_CHUNK = 8 << 20
FICLONE = 0x40049409            # <linux/fs.h>: _IOW(0x94, 9, int)
# a reflink or an in-kernel copy is not possible here: copy by hand
_NO_FAST_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY,
                 errno.EBADF, errno.EPERM)


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


def _copy_range(fin: int, fout: int, size: int,
                progress: Callable[[int, int], None] | None) -> int:
    """Copy up to ``size`` bytes; returns how many there were."""
    done = 0
    fast = True
    while done < size:
        want = min(COPY_CHUNK, size - done)
        n = 0
        if fast:
            try:
                n = os.copy_file_range(fin, fout, want, done, done)
            except OSError as exc:
                if exc.errno not in _NO_FAST_COPY:
                    raise
                fast = False
        if not fast:
            chunk = os.pread(fin, want, done)
            n = len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.pwrite(fout, view, done + n - len(view)):]
        if n == 0:
            break               # the source ends early: it shrank
        done += n
        if progress:
            progress(done, size)
    return done


def _copy_private(src: str, dest: str, progress: Callable[[int, int], None] | None) -> None:
    """Put the cache's own copy of ``src`` at ``dest`` (atomically), or
    raise IngestError if ``src`` changed while it was read."""
    tmp = dest + ".part"
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        before = os.fstat(fin.fileno())
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            copied = os.fstat(fout.fileno()).st_size
            if progress:
                progress(copied, before.st_size)
        except OSError as exc:
            if exc.errno not in _NO_FAST_COPY:
                raise
            copied = _copy_range(fin.fileno(), fout.fileno(), before.st_size, progress)
        os.fsync(fout.fileno())
        after = os.fstat(fin.fileno())
    if file_identity(after) != file_identity(before) or copied != before.st_size:
        raise IngestError(f"{src}: the file changed while it was being added "
                          f"({before.st_size} bytes before, {after.st_size} after); "
                          f"add it again once it is complete")
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
    except OSError as exc:      # unreadable: permissions, an I/O error
        raise IngestError(f"{source}: cannot read: {exc.strerror}") from None
    folder = title_folder(cache_dir, name)
    # A folder without a catalog entry is what a crashed ingest leaves.
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    try:
        media = media_path(folder)
        try:
            _copy_private(os.path.abspath(source), media, progress)
        except OSError as exc:  # ENOSPC, EIO, a file made unreadable meanwhile
            raise IngestError(f"cannot copy {source} into the cache: {exc.strerror}") from None
        before = file_identity(os.stat(media))
        try:
            index, tracks = _index(container, media, folder)
        except MediaError as exc:
            raise IngestError(str(exc)) from None
        after = file_identity(os.stat(media))
        if after != before or after[2] != index.size:
            raise IngestError(f"{media}: the file changed while it was being indexed; "
                              f"add {source} again")
        try:
            catalog.add_title(
                name, container=container, media_path=media, folder=folder,
                size=index.size, duration_ns=index.duration_ns, bitrate=index.bitrate,
                state="complete", now=now, tracks=tracks)
        except TitleExists as exc:
            raise IngestError(str(exc)) from None
        # what SETUP checks the file against: the one that was indexed
        return catalog.update_title(name, media_inode=after[1], media_mtime_ns=after[3])
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def remove_title(catalog, name: str, *, keep_files: bool = False):
    """Remove title ``name`` from the catalog, then its cache folder."""
    title = catalog.remove_title(name)
    if not keep_files and title.folder:
        shutil.rmtree(title.folder, ignore_errors=True)
    return title
