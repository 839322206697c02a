"""The UDP backend's once-a-second look at its streams: one engine call
names the streams with something to end, and only those (and any that
waited last time) are ticked."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from appliance.media.interleaved import InterleavedMediaStream
from appliance.media.udp import UdpMediaBackend, UdpMediaStream


class _Engine:
    def __init__(self, unsettled):
        self.ids = unsettled
        self.calls = 0

    def unsettled(self):
        self.calls += 1
        return self.ids


class _Stream:
    """Just what _poll reads: UdpMediaStream's needs_tick over an engine id."""

    needs_tick = UdpMediaStream.needs_tick

    def __init__(self, sid, waiting_since=None):
        self._stream = SimpleNamespace(id=sid)
        self.waiting_since = waiting_since
        self.ticked = 0
        self.label = str(sid)

    def tick(self):
        self.ticked += 1


def _backend(engine) -> UdpMediaBackend:
    return UdpMediaBackend(engine=engine, reactor=Clock(), ports=None, sr_interval=5,
                           cname="test")


def test_only_unsettled_streams_and_ones_that_waited_are_ticked():
    engine = _Engine({2})
    backend = _backend(engine)
    playing, ended, waited, closed = _Stream(1), _Stream(2), _Stream(3, 10.0), _Stream(4)
    closed._stream = None
    backend.streams.update((playing, ended, waited, closed))
    backend._poll()
    assert engine.calls == 1                          # one call for every stream
    assert (playing.ticked, ended.ticked, waited.ticked, closed.ticked) == (0, 1, 1, 0)


def test_without_the_call_every_stream_is_ticked():
    backend = _backend(SimpleNamespace())             # krtp's engine has no such call
    streams = [_Stream(i) for i in range(3)]
    backend.streams.update(streams)
    backend._poll()
    assert [s.ticked for s in streams] == [1, 1, 1]


def test_an_interleaved_stream_is_ticked_while_it_plays():
    # its slow reader's skips are noted every second
    assert InterleavedMediaStream.needs_tick(object(), set()) is True
