"""The engine over hint files a fill is still growing: kvod_stream_open with
KVOD_HINTS_GROWING and kvod_stream_set_hints, over real UDP sockets.

Packets are checked byte for byte against the reference packetiser for the
whole track, as in test_engine.py.
"""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest

from rtpengine._kvod_engine import ffi, lib
from rtpengine.engine import Engine, EngineError, now_ns
from rtpengine.hintfile import GrowingHintFile, HintFile, HintRecord
from tests.helpers.engine import (MS, chunk_records, expected, open_stream,
                               wait_state, write_hints)

PACKETS = 200
SIZE = 500


@pytest.fixture
def track(tmp_path):
    """200 records of 500 distinct bytes, 5 ms apart; the full hint file
    (the reference) and the packed records to grow a hint file with."""
    media = tmp_path / "media.bin"
    media.write_bytes(b"".join(struct.pack("!I", i) * (SIZE // 4) for i in range(PACKETS)))
    recs = chunk_records(PACKETS * SIZE, 0, chunk=SIZE, gap_ns=5 * MS)
    full = write_hints(tmp_path / "full.hint", recs)
    return str(media), full, [r.pack() for r in recs]


def growing(path, records: list[bytes]) -> GrowingHintFile:
    hints = GrowingHintFile(path, clock_rate=90000, payload_type=33)
    hints.append(b"".join(records))
    return hints


def set_hints(stream, path, count=None, **kw) -> None:
    with open(path, "rb") as f:
        stream.set_hints(f, count, **kw)


def test_a_growing_stream_waits_at_its_last_record_and_goes_on(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    kw = dict(ssrc=7, seq0=65500, ts0=4)
    want = expected(full, media, **kw)
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:30]) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, **kw)
        assert stream.stats().record_count == 0  # the header's count
        set_hints(stream, path, 30, growing=True)
        stream.play()
        st = wait_state(stream, "waiting")
        assert (st.next_record, st.packets_sent, st.record_count) == (30, 30, 30)
        time.sleep(0.2)
        assert stream.stats().state == "waiting"
        assert rx.settle() == want[:30]

        hints.append(b"".join(packed[30:120]))
        resumed = now_ns()
        set_hints(stream, path, hints.count, growing=True)
        st = wait_state(stream, "waiting")
        assert (st.next_record, st.record_count) == (120, 120)
        assert rx.settle() == want[:120]
        # the first new record left at once, the rest on the hint's schedule
        assert rx.times[30] - resumed < 100 * MS  # at once, not at a poll; room for load
        assert rx.times[119] - rx.times[30] >= 89 * 5 * MS * 0.9

        hints.append(b"".join(packed[120:]))
        set_hints(stream, full)  # the finished file: header count, no more growth
        st = wait_state(stream, "ended")
        assert st.packets_sent == PACKETS
    assert rx.collect(PACKETS) == want


def test_growth_while_playing_keeps_every_packet_in_order(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    kw = dict(ssrc=8, seq0=1, ts0=1)
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:10]) as hints, Engine() as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, **kw)
        set_hints(stream, path, 10, growing=True)
        stream.play()
        for end in range(20, PACKETS + 1, 10):  # faster than the 5 ms pace
            time.sleep(0.02)
            hints.append(b"".join(packed[end - 10:end]))
            set_hints(stream, path, end, growing=end < PACKETS)
        st = wait_state(stream, "ended")
    assert st.packets_sent == PACKETS
    assert rx.collect(PACKETS) == expected(full, media, **kw)


def test_play_at_the_end_of_a_growing_track_waits_for_records(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    path = str(tmp_path / "growing.hint")
    with growing(path, []) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, ssrc=1, seq0=1, ts0=1)
        stream.play(start_record=0)
        assert wait_state(stream, "waiting").packets_sent == 0
        hints.append(b"".join(packed[:5]))
        set_hints(stream, path, 5, growing=True)
        assert wait_state(stream, "waiting").packets_sent == 5
        # the last growth step adds nothing: a waiting stream ends
        set_hints(stream, path, 5, growing=False)
        assert wait_state(stream, "ended").packets_sent == 5
    assert rx.settle() == expected(full, media, ssrc=1, seq0=1, ts0=1)[:5]


def test_not_growing_ends_at_the_last_record_as_before(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:5]) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, ssrc=1, seq0=1, ts0=1)
        set_hints(stream, path, hints.count)
        stream.play(unpaced=True)
        assert wait_state(stream, "ended").packets_sent == 5


def test_fill_limit_and_growth_together(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:50]) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, ssrc=1, seq0=1, ts0=1)
        set_hints(stream, path, 50, growing=True)
        stream.set_fill_limit(20 * SIZE)
        stream.play(unpaced=True)
        st = wait_state(stream, "waiting")
        assert st.next_record == 20  # held by the fill limit
        hints.append(b"".join(packed[50:60]))
        set_hints(stream, path, 60, growing=True)
        time.sleep(0.05)
        assert stream.stats().next_record == 20  # more records, same limit
        stream.set_fill_limit(2**64 - 1)
        st = wait_state(stream, "waiting")
        assert st.next_record == 60  # now held by the last record
        stream.set_fill_limit(2**64 - 1)  # nothing new: still waiting
        assert stream.stats().state == "waiting"
    assert len(rx.settle()) == 60


def test_remap_moves_to_the_same_media_offset_in_records_cut_otherwise(track, tmp_path,
                                                                      receivers):
    media, full, packed = track
    rx = receivers()
    # the same bytes cut in 250-byte records: record 2k starts where old record k did
    halves = chunk_records(PACKETS * SIZE, 0, chunk=SIZE // 2, gap_ns=2_500_000)
    other = write_hints(tmp_path / "halves.hint", halves)
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, full, ssrc=3, seq0=3, ts0=3)
        stream.set_fill_limit(40 * SIZE)
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").next_record == 40
        set_hints(stream, other, remap=True)  # resumes, and the fill limit holds it again
        st = wait_state(stream, "waiting")
        assert (st.next_record, st.record_count, st.state) == (80, 2 * PACKETS, "waiting")
        stream.set_fill_limit(2**64 - 1)
        st = wait_state(stream, "ended")
    got = rx.collect(40 + 2 * PACKETS - 80)
    payload = b"".join(p[12:] for p in got)
    assert payload == open(media, "rb").read()  # every byte once, in order
    assert st.packets_sent == 40 + 2 * PACKETS - 80
    assert [struct.unpack_from("!H", p, 2)[0] for p in got] == list(range(3, 3 + len(got)))


def test_remap_from_the_end_of_the_records(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    first = write_hints(tmp_path / "first.hint",
                        [HintRecord.unpack_from(p) for p in packed[:10]])
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, first, ssrc=3, seq0=3, ts0=3)
        stream.play(unpaced=True)
        assert wait_state(stream, "ended").next_record == 10
        set_hints(stream, full, remap=True)
        assert stream.stats().next_record == 10
        stream.play(unpaced=True)
        assert wait_state(stream, "ended").packets_sent == PACKETS
    assert rx.collect(PACKETS) == expected(full, media, ssrc=3, seq0=3, ts0=3)


def test_set_hints_errors_leave_the_stream_as_it_was(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:20]) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, ssrc=1, seq0=1, ts0=1)
        set_hints(stream, path, 20, growing=True)
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").next_record == 20

        def refused(err, words, *args, **kw):
            with pytest.raises(EngineError) as exc:
                set_hints(stream, *args, **kw)
            assert exc.value.errno == err, exc.value
            assert words in str(exc.value), exc.value
            st = stream.stats()
            assert (st.state, st.next_record, st.record_count) == ("waiting", 20, 20)

        refused(errno.ERANGE, "the stream is at record 20", path, 10, growing=True)
        refused(errno.EBADMSG, "30 records asked for, the hint file holds 20", path, 30)
        # an appended record that points past the media is caught
        hints.append(HintRecord(PACKETS * SIZE, 1, 0, 0, 0, b"").pack())
        refused(errno.ERANGE, "record 20: bytes", path, 21, growing=True)
        bad = tmp_path / "bad.hint"
        bad.write_bytes(b"NOTAHINT" + bytes(100))
        refused(errno.EBADMSG, "bad magic", str(bad))
        with pytest.raises(EngineError) as exc:
            stream.set_hints(-1, 5)
        assert exc.value.errno == errno.EBADF
        with pytest.raises(ValueError):
            set_hints(stream, path, -1)
        with open(path, "rb") as h:
            assert lib.kvod_stream_set_hints(e._ptr, stream.id, h.fileno(), 20, 8) \
                == -errno.EINVAL
            assert lib.kvod_stream_set_hints(e._ptr, stream.id + 1, h.fileno(), 20, 0) \
                == -errno.ENOENT
            assert lib.kvod_stream_set_hints(ffi.NULL, 0, h.fileno(), 20, 0) == -errno.EINVAL
        # still works after all that
        set_hints(stream, full, remap=True)
        assert wait_state(stream, "ended").packets_sent == PACKETS


def test_open_refuses_unknown_flags(track, receivers):
    media, full, _ = track
    rx = receivers()
    with Engine(threads=1) as e, open(media, "rb") as m, open(full, "rb") as h, \
            rx.sender() as sock:
        p = ffi.new("struct kvod_stream_params *")
        p.sock_fd, p.media_fd, p.hint_fd = sock.fileno(), m.fileno(), h.fileno()
        p.payload_type = lib.KVOD_PT_FROM_HINT
        p.flags = lib.KVOD_HINTS_REMAP
        assert lib.kvod_stream_open(e._ptr, p) == -errno.EINVAL


def test_the_old_mapping_is_released(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    path = str(tmp_path / "growing.hint")

    def maps(name):
        with open(f"/proc/{os.getpid()}/maps") as f:
            return sum(name in line for line in f)
    with growing(path, packed[:20]) as hints, Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, path, growing=True, ssrc=1, seq0=1, ts0=1)
        for n in range(21, 60):
            hints.append(packed[n - 1])
            set_hints(stream, path, n, growing=True)
        assert maps("growing.hint") == 1
        stream.close()
        assert maps("growing.hint") == 0


def test_hintfile_reads_a_growing_file_with_its_count(track, tmp_path):
    _, full, packed = track
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:7]) as hints:
        assert len(HintFile(path)) == 0  # the header's count
        with HintFile(path, record_count=7) as h:
            assert h.records_bytes() == b"".join(packed[:7])
        hints.append(b"".join(packed[7:9]))
        assert hints.count == 9
        with pytest.raises(Exception, match="promises"):
            HintFile(path, record_count=10)
        with pytest.raises(Exception, match="whole"):
            hints.append(b"x" * 31)


def test_remap_refuses_hints_that_do_not_reach_the_stream(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    short = write_hints(tmp_path / "short.hint",
                        [HintRecord.unpack_from(p) for p in packed[:30]])
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, full, ssrc=3, seq0=3, ts0=3)
        stream.set_fill_limit(40 * SIZE)
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").next_record == 40
        with pytest.raises(EngineError) as exc:
            set_hints(stream, short, remap=True)  # ends at record 30: behind the stream
        assert exc.value.errno == errno.ERANGE and "end before" in str(exc.value)
        assert stream.stats().record_count == PACKETS


def test_restart_takes_other_hints_for_a_seek(track, tmp_path, receivers):
    media, full, packed = track
    rx = receivers()
    later = write_hints(tmp_path / "later.hint",
                        [HintRecord.unpack_from(p) for p in packed[150:]])
    with Engine(threads=1) as e:
        stream = open_stream(e, rx.sender(), media, full, ssrc=3, seq0=3, ts0=3)
        stream.set_fill_limit(40 * SIZE)
        stream.play(unpaced=True)
        assert wait_state(stream, "waiting").next_record == 40
        stream.pause()
        stream.set_fill_limit(2**64 - 1)
        set_hints(stream, later, restart=True)
        assert stream.stats().next_record == 0
        stream.play(start_record=10, unpaced=True)  # record 160 of the track
        assert wait_state(stream, "ended").packets_sent == 40 + 40
        with pytest.raises(EngineError) as exc:
            set_hints(stream, full, remap=True, restart=True)
        assert exc.value.errno == errno.EINVAL
    got = rx.collect(80)
    want = expected(full, media, ssrc=3, seq0=3, ts0=3)
    assert [p[12:] for p in got[40:]] == [p[12:] for p in want[160:]]


def test_a_failed_append_leaves_no_part_of_a_record(track, tmp_path, monkeypatch):
    _, _, packed = track
    path = str(tmp_path / "growing.hint")
    with growing(path, packed[:3]) as hints:
        real_write = os.write
        calls = []

        def half_then_full(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:40]))  # a record and a bit
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(OSError):
            hints.append(b"".join(packed[3:6]))
        monkeypatch.setattr(os, "write", real_write)
        assert hints.count == 3
        assert os.path.getsize(path) == 64 + 3 * 32
        hints.append(b"".join(packed[3:6]))
        with HintFile(path, record_count=6) as h:
            assert h.records_bytes() == b"".join(packed[:6])
