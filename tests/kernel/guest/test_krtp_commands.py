"""Commands on krtp streams inside the guest: the fill limit, pause,
continue, seek, and closing the file that holds the streams."""

from __future__ import annotations

import errno
import os
import struct
import time

import pytest

from rtpengine import krtp
from tests.helpers.engine import SEC, chunk_records, expected, open_stream, wait_state, write_hints


# --- commands --------------------------------------------------------------------

def test_fill_limit_holds_the_stream_and_releases_it(engine_factory, receivers, tmp_path,
                                                     tmpfs_copy, ts_file):
    media = tmpfs_copy(ts_file)
    size = os.path.getsize(media)
    hints = write_hints(tmp_path / "f.hint", chunk_records(size, 10 * SEC))
    kw = dict(ssrc=9, seq0=1, ts0=2)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    limit = 1316 * 100 + 500
    stream.set_fill_limit(limit)
    stream.play(unpaced=True)
    st = wait_state(stream, "waiting")
    assert st.state == "waiting" and st.next_record == 100 and st.fill_limit == limit
    assert rx.collect(100) == want[:100]
    rx.settle(0.2)
    assert len(rx.packets) == 100
    stream.set_fill_limit(size)
    st = wait_state(stream, "ended")
    assert rx.collect(len(want)) == want


def test_pause_continue_and_seek(engine_factory, receivers, tmp_path, tmpfs_copy, ts_file):
    media = tmpfs_copy(ts_file)
    hints = write_hints(tmp_path / "p.hint", chunk_records(os.path.getsize(media), 10 * SEC))
    kw = dict(ssrc=5, seq0=100, ts0=1000)
    want = expected(hints, media, **kw)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    stream.play()                       # paced: about 100 packets a second
    time.sleep(0.6)
    stream.pause()
    st = wait_state(stream, "paused")
    n = st.packets_sent
    assert 0 < n < len(want) and st.next_record == n
    rx.collect(n)
    time.sleep(0.3)
    rx.drain()
    assert len(rx.packets) == n         # nothing while paused
    stream.play(unpaced=True)           # continues where it stopped
    wait_state(stream, "ended")
    assert rx.collect(len(want)) == want
    # a seek starts again at a record; sequence numbers go on
    stream.seek(10)
    assert stream.stats().next_record == 10
    stream.play(unpaced=True)
    wait_state(stream, "ended")
    again = expected(hints, media, ssrc=5, seq0=(100 + len(want)) & 0xFFFF, ts0=1000, start=10)
    assert rx.collect(len(want) + len(again))[len(want):] == again
    # play from a record beyond the last is refused, at the last ends at once
    with pytest.raises(krtp.KrtpError) as exc:
        stream.play(start_record=len(want) + 1)
    assert exc.value.errno == errno.ERANGE
    stream.play(start_record=len(want))
    assert stream.stats().state == "ended"


def test_streams_of_one_file_close_with_it(engine_factory, receivers, tmp_path, tmpfs_copy,
                                           short_ts_file):
    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "c.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    e = engine_factory()
    streams = []
    for i in range(8):
        rx = receivers()
        s = open_stream(e, rx.sender(), media, hints, ssrc=i, seq0=i, ts0=i)
        s.play()
        streams.append(s)
    time.sleep(0.3)
    assert e.info().streams == 8
    e.close()                            # while they play
    with krtp.KrtpEngine() as probe:
        assert probe.info().streams == 0


def test_what_the_module_does_not_stream_goes_to_user_space(engine_factory, receivers,
                                                            tmp_path, tmpfs_copy,
                                                            short_ts_file):
    """A title still filling (growing hints) is streamed by the user-space
    engine the kernel engine keeps; a krtp stream takes an unchanged hint
    switch and refuses a growing one."""
    from rtpengine.engine import Stream as UserspaceStream

    media = tmpfs_copy(short_ts_file)
    hints = write_hints(tmp_path / "u.hint", chunk_records(os.path.getsize(media), 3 * SEC))
    kw = dict(ssrc=4, seq0=40, ts0=400)
    want = expected(hints, media, **kw)
    e = engine_factory()
    rx = receivers()
    sock = rx.sender()
    with open(media, "rb") as m, open(hints, "rb") as h:
        filling = e.open_stream(sock, m, h, growing=True, **kw)
        assert isinstance(filling, UserspaceStream)
        filling.play(unpaced=True)
        assert rx.collect(len(want)) == want
        filling.set_hints(h, len(want), growing=False)      # the fill completed
    assert wait_state(filling, "ended").packets_sent == len(want)
    status = e.status()
    assert status["backend"] == "krtp" and "userspace" in status
    filling.close()
    rx2 = receivers()
    with open(media, "rb") as m, open(hints, "rb") as h:
        stream = e.open_stream(rx2.sender(), m, h, **kw)
        stream.set_hints(h, len(want))                      # same records: fine
        with pytest.raises(krtp.KrtpError) as exc:
            stream.set_hints(h, len(want), growing=True)
    assert exc.value.errno == errno.EOPNOTSUPP
    sock.close()


def test_play_says_where_it_starts(engine_factory, receivers, tmp_path, tmpfs_copy, ts_file):
    # as the user-space engine's play(): the first packet's seq, RTP time, npt
    media = tmpfs_copy(ts_file)
    recs = chunk_records(os.path.getsize(media), 10 * SEC)
    hints = write_hints(tmp_path / "s.hint", recs)
    kw = dict(ssrc=7, seq0=65530, ts0=0xFFFFFF00)
    rx = receivers()
    stream = open_stream(engine_factory(), rx.sender(), media, hints, **kw)
    start = stream.play()
    first = struct.unpack_from("!HI", rx.collect(1)[0], 2)
    assert (start.record, start.seq, start.rtp_ts, start.send_ns) == (0, *first, 0)
    time.sleep(0.3)
    start = stream.play(start_record=500)       # a seek while playing
    st = wait_state(stream, "ended")
    got = rx.settle()
    before = st.packets_sent - (len(recs) - 500)
    assert struct.unpack_from("!HI", got[before], 2) == (start.seq, start.rtp_ts)
    assert start.record == 500 and start.send_ns == recs[500].send_ns
    assert start.seq == (65530 + before) & 0xFFFF
