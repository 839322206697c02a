"""A track's samples as columns, expanded from its MP4 sample tables.

``rtpengine.index.mp4.read_tracks`` parses the boxes and hands over the
tables (``stsz``/``stz2``, ``stsc`` + ``stco``/``co64``, ``stts``,
``ctts``, ``stss``, or a fragmented file's truns in the same shape); this
module turns them into one row per sample: file offset, size, decode
time, duration, composition offset, sync. The tables are untrusted: every
count is checked against the others before it sizes anything, and every
sample must lie inside the file, so a damaged or lying file is a
:class:`MediaError`, never a wrong byte range.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Optional

from rtpengine.index.errors import MediaError


@dataclass(frozen=True)
class TrackSamples:
    """One track's samples in decode order (index ``i`` is sample ``i + 1``)."""

    track_id: int
    kind: str                       # video | audio
    timescale: int
    offsets: array.array            # Q: file offset of each sample
    sizes: array.array              # I
    decode_times: array.array       # Q: media ticks from the track's first sample
    durations: array.array          # I
    ctos: Optional[array.array]     # I holding int32 composition offsets, None: all 0
    sync: Optional[array.array]     # I: 0-based sync sample indices, None: every sample

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def end_time(self) -> int:
        """The decode time just after the last sample."""
        return self.decode_times[-1] + self.durations[-1] if self.count else 0


def _runs(pairs: Optional[array.array], count: int, what: str, name: str) -> array.array:
    """``(count, value)`` pairs (stts, ctts) expanded to one value per sample."""
    out = array.array("I")
    if pairs is None:
        return out
    total = sum(pairs[0::2])
    if total != count:
        raise MediaError(f"{name}: {what} covers {total} samples, the track has {count}")
    for i in range(0, len(pairs), 2):
        if pairs[i]:
            out.extend(array.array("I", [pairs[i + 1]]) * pairs[i])
    return out


def _offsets(tables: dict, sizes: array.array, name: str) -> array.array:
    """Each sample's file offset, from the chunk offsets and stsc's runs."""
    chunks, stsc, count = tables["chunk_offsets"], tables["stsc"], len(sizes)
    out = array.array("Q")
    sample = 0
    for i in range(0, len(stsc), 3):
        first, per_chunk = stsc[i], stsc[i + 1]
        last = stsc[i + 3] - 1 if i + 3 < len(stsc) else len(chunks)
        if first < 1 or last < first - 1 or last > len(chunks) \
                or (i and first <= stsc[i - 3]):
            raise MediaError(f"{name}: stsc's chunk runs are out of order or name "
                             f"chunks stco lacks")
        if not per_chunk:
            continue   # chunks of no samples: nothing to walk
        for chunk in range(first - 1, last):
            if sample + per_chunk > count:
                raise MediaError(f"{name}: stsc describes more samples than stsz's {count}")
            try:
                out.extend(accumulate(sizes[sample:sample + per_chunk - 1],
                                      initial=chunks[chunk]))
            except OverflowError:
                raise MediaError(f"{name}: chunk {chunk + 1} at offset {chunks[chunk]} "
                                 f"runs past 2^64") from None
            sample += per_chunk
    if sample != count:
        raise MediaError(f"{name}: stsc describes {sample} samples, stsz {count}")
    return out


def expand(trak, file_size: int, name: str) -> TrackSamples:
    """The samples of ``trak`` (a track of ``read_tracks``) in a file of
    ``file_size`` bytes; MediaError if its tables disagree or a sample
    lies outside the file."""
    tables = trak.tables
    count = tables["sample_count"]
    sizes = tables["sizes"]
    if sizes is None:
        sizes = array.array("I", [tables["sample_size"]]) * count
    if len(sizes) != count or not count:
        raise MediaError(f"{name}: track {trak.track_id}: {len(sizes)} sizes for "
                         f"{count} samples")
    if min(sizes) == 0:
        raise MediaError(f"{name}: track {trak.track_id}: an empty sample")
    offsets = _offsets(tables, sizes, f"{name}: track {trak.track_id}")
    ends = max(map(int.__add__, offsets, sizes))
    if ends > file_size:
        raise MediaError(f"{name}: track {trak.track_id}: samples run to offset {ends}, "
                         f"the file holds {file_size} bytes (truncated?)")
    durations = _runs(tables["stts"], count, "stts", f"{name}: track {trak.track_id}")
    decode_times = array.array("Q", accumulate(durations[:-1], initial=0))
    ctos = _runs(tables["ctts"], count, "ctts", f"{name}: track {trak.track_id}") \
        if tables["ctts"] is not None else None
    stss = tables["stss"]
    sync = None
    if stss is not None:
        if (stss and not 1 <= stss[0]) or (stss and stss[-1] > count) \
                or any(b <= a for a, b in zip(stss, stss[1:])):
            raise MediaError(f"{name}: track {trak.track_id}: stss's sync sample numbers "
                             f"are out of order or range")
        sync = array.array("I", (s - 1 for s in stss))
    return TrackSamples(trak.track_id, trak.kind, trak.timescale, offsets, sizes,
                        decode_times, durations, ctos, sync)
