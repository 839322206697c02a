"""Commands on krtp streams inside the guest: the fill limit, pause,
continue, seek, and closing the file that holds the streams."""

from __future__ import annotations

import errno
import os
import time

import pytest

from rtpengine import krtp
from tests.kernel.guest.conftest import (SEC, chunk_records, expected, open_stream,
                                         wait_state, write_hints)


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
