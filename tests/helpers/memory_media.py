"""An in-memory media backend for the sans-IO session layer's tests: it
implements the media interface (``appliance/rtsp/media_api.py``) with
streams of one record a second and a keyframe every 2 s."""

from __future__ import annotations

from appliance.rtsp.media_api import MediaUnavailable, PlayStart

SECOND = 1_000_000_000

class MemoryStream:
    """A stream with one record a second and a keyframe every 2 s."""

    def __init__(self, ports, duration_ns):
        self.server_ports = ports
        self.ssrc = 0x1234ABCD
        self.duration_ns = duration_ns
        self.next_record = 0
        self.sent = 0
        self.playing = False
        self.closed = False
        self.end_ns = None
        self.scale = 1

    def needs_seek(self, npt_ns):
        return False

    def keyframe_at_or_before(self, npt_ns):
        index = min(npt_ns // SECOND, self.duration_ns // SECOND - 1) // 2 * 2
        return index, index * SECOND

    def position_ns(self):
        return self.next_record * SECOND

    def set_scale(self, scale, npt_ns):
        self.scale = scale
        return self.keyframe_at_or_before(npt_ns)

    def stop_at(self, npt_ns, start_record=None):
        start = self.next_record if start_record is None else start_record
        if npt_ns is not None and npt_ns < start * SECOND:
            raise ValueError("the range ends before the stream's position")
        self.end_ns = npt_ns
        return npt_ns

    def play(self, record):
        assert not self.closed
        if record is not None:
            self.next_record = record
        self.playing = True
        return PlayStart(seq=(100 + self.sent) & 0xFFFF, rtptime=self.next_record * 90000,
                         npt_ns=self.next_record * SECOND)

    def advance(self, packets):
        """What the engine would do while playing."""
        if self.playing:
            self.sent += packets
            self.next_record += 1

    def pause(self):
        self.playing = False

    def has_ended(self):
        return False

    def close(self):
        self.closed = True
        self.playing = False


class MemoryMedia:
    def __init__(self, fail=False):
        self.opened = []
        self.fail = fail
        self.port = 20000

    def open_stream(self, *, session_id, title, track, client_host, client_ports, quirks):
        if self.fail:
            raise MediaUnavailable("no ports")
        self.port += 2
        stream = MemoryStream((self.port, self.port + 1), title.duration_ns)
        self.opened.append((session_id, client_host, client_ports, stream))
        self.quirks = quirks
        return stream


def movie_catalog():
    """An in-memory catalog holding "movie": a complete 10 s MPEG-TS title of
    one track, whose files the in-memory media never opens."""
    from catalog import open_catalog
    db = open_catalog(None)
    db.add_title("movie", container="mpegts", media_path="/nonexistent/media.ts",
                 duration_ns=10 * SECOND, size=1000, state="complete", now=0.0,
                 tracks=[dict(track_index=0, media_type="video", codec="MP2T", payload_type=33,
                              clock_rate=90000, hint_path="/nonexistent/track0.hint", packets=10)])
    return db
