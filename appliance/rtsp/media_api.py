"""What the RTSP session layer needs from the media side, as protocols.

The session layer (``appliance.rtsp.sessions``) is sans-IO: it never opens a
socket or a file. It asks a ``MediaBackend`` for a ``MediaStream`` per
SETUP; the real backend (``appliance.media.udp``) binds UDP ports and drives
the C engine, and tests use an in-memory one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from appliance.rtsp.client_quirks import ClientQuirks


class MediaUnavailable(Exception):
    """The backend cannot open a stream now (no ports, no engine slot)."""


class MediaFilesBad(MediaUnavailable):
    """The title's cached files cannot be served: unreadable, or (``damaged``)
    not what the catalog recorded, so the title was marked damaged."""

    def __init__(self, message: str, *, damaged: bool) -> None:
        super().__init__(message)
        self.damaged = damaged


@dataclass(frozen=True)
class PlayStart:
    """Where a PLAY started: the first packet's sequence number and RTP time."""

    seq: int
    rtptime: int
    npt_ns: int


class MediaStream(Protocol):
    """One track of one session, sending RTP to one client."""

    server_ports: tuple[int, int]
    ssrc: int
    duration_ns: int
    #: the RTSP Scale it plays at (1: normal play)
    scale: int

    def needs_seek(self, npt_ns: int) -> bool:
        """Whether starting at ``npt_ns`` must wait for the fill to fetch
        the bytes there first (a seek ahead of the fill): the session layer
        then answers :class:`~appliance.rtsp.sessions.NeedTitle` with the time."""

    def keyframe_at_or_before(self, npt_ns: int) -> tuple[int, int]:
        """(record index, its npt in ns) of the keyframe to start ``npt_ns`` at."""

    def position_ns(self) -> int:
        """The npt of the next packet to send."""

    def set_scale(self, scale: int, npt_ns: int) -> tuple[int, int]:
        """Play at ``scale`` from ``npt_ns``: (record, npt in ns) to :meth:`play`
        from; :attr:`scale` then says the scale used."""

    def stop_at(self, npt_ns: int | None, start_record: int | None = None) -> int | None:
        """End the stream at ``npt_ns`` (a Range end), or at the title's end
        (None), for a play from ``start_record`` (None: where it is); returns
        the end used in ns, or None when it cannot end early (a title still
        filling plays on). ValueError: the end is before where it is."""

    def play(self, record: int | None) -> PlayStart:
        """Start sending now, from ``record`` or (None) where it stopped."""

    def pause(self) -> None:
        """Stop sending; play(None) continues without a sequence gap."""

    def has_ended(self) -> bool:
        """True once the last packet of the track has been sent."""

    def close(self) -> None:
        """Stop and release sockets, files and the engine stream."""


class MediaBackend(Protocol):
    """Opens streams for the session layer."""

    def open_stream(self, *, session_id: str, title, track, client_host: str,
                    client_ports: tuple[int, int] | None, quirks: ClientQuirks,
                    interleaved: tuple | None = None) -> MediaStream:
        """A stream of ``track`` to ``client_host``; raises MediaUnavailable.
        ``interleaved=(link, (rtp, rtcp))``: on the RTSP connection ``link``
        instead of UDP (only asked of a backend whose ``interleaving`` is true)."""


class InterleavedLink(Protocol):
    """An RTSP connection that streams may be interleaved on (RFC 2326
    10.12): the real one is ``appliance.media.interleaved.InterleavedLink``."""

    def usable(self) -> bool:
        """Whether streams can be interleaved on this connection now."""

    def free_pair(self, wanted: tuple[int, int] | None) -> tuple[int, int] | None:
        """The RTP/RTCP channel pair to use for ``wanted`` (None: any free
        one), or None when it is taken or not a pair."""


def pick_interleaved(spec, link: InterleavedLink | None, media) -> object | None:
    """``spec`` (an ``RTP/AVP/TCP`` TransportSpec) with the channel pair the
    stream will use, or None when it cannot be served: no connection to
    interleave on, a backend that cannot (``media.interleaving`` false),
    multicast, or a pair the connection already uses."""
    if link is None or not getattr(media, "interleaving", False) or not link.usable():
        return None
    if spec.delivery == "multicast":
        return None
    pair = link.free_pair(spec.interleaved)
    if pair is None:
        return None
    return replace(spec, interleaved=pair, client_port=None)
