"""Indexing a transport stream while it fills: every record handed out is
final (the whole-file index starts with exactly those records)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpengine.index.errors import MediaError
from rtpengine.hintfile import RECORD_SIZE, HintFile
from rtpengine.index.mpegts import index_mpegts
from rtpengine.index.mpegts_growing import GrowingTsIndex, estimate_duration_ns


@pytest.fixture(scope="module")
def reference(ts_file, tmp_path_factory):
    """The 10 s title's bytes, its index and its records as index_mpegts makes them."""
    hint = str(tmp_path_factory.mktemp("ref") / "ref.hint")
    index = index_mpegts(ts_file, hint)
    with HintFile(hint) as h:
        records = h.records_bytes()
    with open(ts_file, "rb") as f:
        data = f.read()
    return data, index, records, hint


def grow(data: bytes, cuts: list[int], hint_path) -> tuple[list[int], bytes, object]:
    """Feed ``data`` in pieces ending at ``cuts``; the ready counts, the
    records handed out along the way, and the final index."""
    readies, handed = [], b""
    with GrowingTsIndex("t") as ix:
        for cut in sorted(cuts) + [len(data)]:
            ready = ix.feed(data, cut, complete=cut == len(data))
            assert ready >= (readies[-1] if readies else 0)
            handed += ix.records(len(handed) // RECORD_SIZE, ready)
            readies.append(ready)
        index = ix.finish(len(data), hint_path)
        handed += ix.records(len(handed) // RECORD_SIZE, ix.ready())
    return readies, handed, index


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=1_500_000), max_size=12))
def test_records_handed_out_while_growing_are_the_final_ones(reference, cuts, tmp_path):
    data, index, records, _ = reference
    cuts = [c for c in cuts if c < len(data)]
    readies, handed, got = grow(data, cuts, tmp_path / "g.hint")
    assert handed == records
    assert got == index
    with HintFile(tmp_path / "g.hint") as h:
        assert h.records_bytes() == records
        assert h.header.duration_ns == index.duration_ns


def media_end(records: bytes, n: int) -> int:
    """Where record n-1 ends in the media (0 for none)."""
    if n == 0:
        return 0
    off, length = struct.unpack_from("<QI", records, (n - 1) * RECORD_SIZE)
    return off + length


def test_records_come_soon_after_the_bytes(reference):
    data, index, records, _ = reference
    step = 64 * 1024
    with GrowingTsIndex("t") as ix:
        lags = [cut - media_end(records, ix.feed(data, cut))
                for cut in range(step, len(data), step)]
    # only the bytes since the last PCR (and the open record) wait
    assert max(lags[1:]) < 20 * 1316, lags


def test_waits_for_the_pat_and_pmt(reference):
    data, *_ = reference
    with GrowingTsIndex("t") as ix:
        assert ix.feed(data, 100) == 0
        assert ix.feed(data, 188) == 0
        assert ix.program is None or ix.ready() == 0
        assert ix.feed(data, 200_000) > 0
        assert ix.program is not None


def test_not_a_transport_stream_is_refused_at_once(tmp_path):
    mp4 = b"\x00\x00\x00\x20ftypisom" + bytes(2000)
    with GrowingTsIndex("t") as ix, pytest.raises(MediaError, match="sync byte"):
        ix.feed(mp4, len(mp4))


def test_no_pat_in_a_complete_file_and_truncation_are_errors(reference, tmp_path):
    data, *_ = reference
    stuffing = (b"\x47\x1f\xff\x10" + b"\xff" * 184) * 100
    with GrowingTsIndex("t") as ix:
        assert ix.feed(stuffing, len(stuffing)) == 0
        with pytest.raises(MediaError, match="PAT"):
            ix.feed(stuffing, len(stuffing), complete=True)
    with GrowingTsIndex("t") as ix, pytest.raises(MediaError, match="truncated"):
        ix.feed(data[:-5], len(data) - 5, complete=True)
    with GrowingTsIndex("t") as ix:
        ix.feed(data, 300_000)
        with pytest.raises(MediaError, match="indexed at the end"):
            ix.finish(len(data), tmp_path / "x.hint")
        with pytest.raises(IndexError):
            ix.records(0, ix.ready() + 1)


def test_duration_estimate_from_head_and_tail(reference):
    data, index, *_ = reference
    head = data[:256 * 1024]
    tail_offset = len(data) - 64 * 1024 - 100  # not on a packet boundary
    estimate = estimate_duration_ns(head, data[tail_offset:], tail_offset, len(data),
                                    index.pcr_pid)
    assert estimate == pytest.approx(index.duration_ns, rel=0.02)
    assert estimate_duration_ns(head, b"", len(data), len(data), index.pcr_pid) is None
    assert estimate_duration_ns(b"", data[tail_offset:], tail_offset, len(data),
                                index.pcr_pid) is None


def test_a_seek_ahead_index_matches_the_full_index_from_its_first_keyframe(reference):
    from rtpengine.hintfile import HintRecord
    from rtpengine.index.mpegts_growing import first_pcr
    data, index, records, _ = reference
    full = [HintRecord.unpack_from(records, i * RECORD_SIZE)
            for i in range(len(records) // RECORD_SIZE)]
    with GrowingTsIndex("front") as front:
        front.feed(data, 200_000)
        program, origin = front.program, first_pcr(data[:200_000], front.program.pcr_pid)
    start = len(data) // 2 // 188 * 188
    with GrowingTsIndex("seek", start=start, program=program, origin_pcr=origin) as seg:
        assert seg.feed(data, start + 50_000) >= 0
        ready = seg.feed(data, len(data) - 100_000)
        first = seg.first_keyframe()
        assert first is not None and ready > first
        got = [HintRecord.unpack_from(seg.records(0, ready), i * RECORD_SIZE)
               for i in range(ready)]
    by_offset = {r.offset: r for r in full}
    matched = 0
    for rec in got[first:]:
        want = by_offset[rec.offset]
        assert (rec.length, rec.flags) == (want.length, want.flags)
        assert abs(rec.send_ns - want.send_ns) <= 2
        assert abs(rec.rtp_ts - want.rtp_ts) <= 1
        matched += 1
    assert matched > 100


def test_seek_ahead_index_arguments():
    with pytest.raises(ValueError):
        GrowingTsIndex("x", start=188)  # no program or first PCR
    from rtpengine.index.mpegts import TsProgram
    program = TsProgram(1, 0x100, 0x101, (), 0)
    with pytest.raises(ValueError):
        GrowingTsIndex("x", start=100, program=program, origin_pcr=0)


def test_concurrent_feeds_of_one_index_do_not_race(ts_file):
    """The fill feeds from a worker thread and, for the probe's bytes, from
    the reactor: feeds of one index must serialise (they once raced into
    kvod_ts_index_scan with an empty range)."""
    import threading

    from rtpengine.index.mpegts_growing import GrowingTsIndex
    data = open(ts_file, "rb").read()
    for _ in range(20):
        index = GrowingTsIndex("race")
        upto = len(data) // 2
        errors = []

        def feed():
            try:
                index.feed(data, upto)
            except Exception as exc:  # noqa: BLE001 - any error fails the test
                errors.append(exc)
        threads = [threading.Thread(target=feed) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert index.scanned == upto - upto % 188
        index.close()
