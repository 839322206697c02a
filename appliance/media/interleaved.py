"""RTP and RTCP interleaved on the RTSP connection (RFC 2326 10.12).

A client that asks for ``RTP/AVP/TCP;interleaved=a-b`` gets its packets on
its RTSP connection as ``$`` frames. The C engine frames and writes them
from the hint records, paced like UDP streams, on its own duplicate of the
connection's socket; Python still reads the connection (requests, and the
client's RTCP on the odd channels).

Two writers share one byte stream, so from the first interleaved SETUP on,
everything the daemon writes on that connection goes through the engine
(``Stream.write``): replies and RTCP are queued behind whole frames, never
inside one. Twisted only buffers what ``transport.write`` is given and
writes it on a later reactor turn, so bytes Twisted still holds at the
switch would leave after frames the engine wrote meanwhile: the switch
takes them out of Twisted's buffer and hands them to the engine first.

One engine stream of the connection stays open until the connection ends,
even after its track is torn down (paused, sending nothing): the engine's
out-queue belongs to the connection's streams, and the reply to TEARDOWN,
and later requests, must still go behind what is queued there.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Callable

from appliance.media.tls_relay import TlsRelay, is_tls
from appliance.media.udp import UdpMediaStream
from appliance.rtsp.client_quirks import NO_QUIRKS, ClientQuirks
from rtpengine import rtcp
from rtpengine.engine import EngineError

log = logging.getLogger(__name__)

#: the most bytes one engine write takes (KVOD_TCP_CTRL_MAX)
WRITE_MAX = 65536


def take_twisted_buffer(transport) -> bytes | None:
    """Remove and return what Twisted's ``transport`` still holds unwritten,
    or None when this transport's buffer cannot be read (not a plain
    ``abstract.FileDescriptor`` of Twisted 22.x, e.g. TLS)."""
    try:
        data, offset = transport.dataBuffer, transport.offset
        temp = transport._tempDataBuffer
        transport._tempDataLen  # noqa: B018 (all four must exist)
    except AttributeError:
        return None
    pending = bytes(data[offset:]) + b"".join(temp)
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return pending


def write_now(transport, data: bytes) -> None:
    """Write ``data`` on ``transport``, straight to its socket when Twisted
    holds nothing unwritten.

    ``transport.write`` only buffers: the bytes leave on the reactor's next
    turn, after an ``epoll_ctl`` to watch for writability and before one to
    stop. A reply that goes now saves the client that turn and the daemon
    both calls, which is most of what a small reply costs. Whatever the
    socket does not take (a full buffer, an error Twisted will report as
    the connection's loss) goes through Twisted, behind nothing, so the
    bytes keep their order. Transports that are not a plain Twisted 22.x
    socket (TLS, a test's) are written through Twisted."""
    try:
        idle = (not transport._tempDataLen and transport.offset == len(transport.dataBuffer)
                and transport.connected and not transport.disconnecting)
        sock = transport.socket
    except AttributeError:
        idle = False
    if idle and data:
        try:
            data = data[sock.send(data):]
        except OSError:
            pass  # EAGAIN, or a failing connection: Twisted writes it, or reports it
    if data:
        transport.write(data)


class InterleavedLink:
    """The interleaved side of one RTSP connection: its channels, the
    streams on them, and the one way bytes are written on it.

    ``on_broken(why)`` is called when the engine refuses a write (the
    client stopped reading, or the connection failed): the adapter ends
    the connection."""

    def __init__(self, transport, *, on_broken: Callable[[str], None] = lambda why: None):
        self.transport = transport
        self.on_broken = on_broken
        self.streams: dict[int, "InterleavedMediaStream"] = {}  # by RTP channel
        self._holder = None     # an engine stream kept for writing (see module doc)
        self._switched = False  # Twisted's buffer handed over: the engine writes
        self.closed = False
        # RTSPS: the engine writes into a socket pair the reactor encrypts from
        self.tls = is_tls(transport)
        self.relay: TlsRelay | None = None

    # -- channels -------------------------------------------------------------

    def usable(self) -> bool:
        """Whether streams can be interleaved here (a socket whose buffer
        the switch can take over)."""
        if self.closed:
            return False
        if self.tls:
            return True     # through a relay (appliance.media.tls_relay)
        try:
            self.transport.getHandle().fileno()
        except (AttributeError, OSError):
            return False
        return all(hasattr(self.transport, a)
                   for a in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen"))

    def free_pair(self, wanted: tuple[int, int] | None) -> tuple[int, int] | None:
        """The channel pair to use for ``wanted`` (None: the lowest free even
        pair), or None when it is taken or not an RTP/RTCP pair."""
        used = {c for rtp in self.streams for c in (rtp, rtp + 1)}
        if wanted is None:
            for rtp in range(0, 255, 2):
                if rtp not in used and rtp + 1 not in used:
                    return rtp, rtp + 1
            return None
        rtp, rtcp_channel = wanted
        # RTCP is the next channel: the engine frames nothing else
        if rtcp_channel != rtp + 1 or rtp in used or rtcp_channel in used:
            return None
        return wanted

    def fileno(self, send_buffer: int | None = None) -> int:
        """The connection's socket, its send buffer set to ``send_buffer``:
        what the kernel holds for a slow reader is lag the engine cannot
        see, so it is kept to about what the path needs. On a TLS connection:
        the engine's end of the relay's socket pair."""
        if self.tls:
            if self.relay is None:
                self.relay = TlsRelay(self.transport, send_buffer)
            return self.relay.engine_end.fileno()
        handle = self.transport.getHandle()
        if send_buffer is not None:
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        return handle.fileno()

    def open_stream(self, backend, channels: tuple[int, int], **kwargs) -> "InterleavedMediaStream":
        """A stream of the backend's on ``channels`` of this connection
        (``kwargs`` as :class:`InterleavedMediaStream` takes them)."""
        return InterleavedMediaStream(backend, link=self, channels=channels, **kwargs)

    def attach(self, channel: int, stream: "InterleavedMediaStream") -> None:
        """``stream`` sends on RTP channel ``channel`` (RTCP on the next)."""
        self.streams[channel] = stream

    def detach(self, channel: int, engine_stream) -> bool:
        """The stream on ``channel`` closes; True if the link keeps its
        engine stream (the connection's last one, kept for writing)."""
        self.streams.pop(channel, None)
        if self.closed or self.streams or not self._switched:
            return False
        if self._holder is not None:
            return False
        engine_stream.pause()
        self._holder = engine_stream
        return True

    def session_ids(self) -> set[str]:
        """The sessions with a track on this connection."""
        return {s.session_id for s in self.streams.values()}

    # -- bytes out --------------------------------------------------------------

    def _writer(self):
        for stream in self.streams.values():
            engine_stream = stream.engine_stream()
            if engine_stream is not None:
                return engine_stream
        return self._holder

    def write(self, data: bytes) -> None:
        """Write ``data`` on the connection: through Twisted while no stream
        is interleaved on it, through the engine from then on (nothing once
        the connection is lost)."""
        if self.closed:
            return
        writer = self._writer()
        if writer is None:
            if self.tls:
                self.transport.write(data)
            else:
                write_now(self.transport, data)
            return
        try:
            if not self._switched:
                self._switched = True
                # over TLS, the relay writes behind what TLS holds already
                held = None if self.tls else take_twisted_buffer(self.transport)
                if held:
                    self._engine_write(writer, held)
            self._engine_write(writer, data)
        except EngineError as exc:
            why = ("the client reads too slowly: its connection's queue is full"
                   if exc.errno == errno.ENOBUFS else str(exc))
            log.warning("RTSP connection %s: cannot write: %s; closing it",
                        self._peer(), why)
            self.on_broken(why)

    @staticmethod
    def _engine_write(writer, data: bytes) -> None:
        for i in range(0, len(data), WRITE_MAX):
            writer.write(data[i:i + WRITE_MAX])

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:
            return "?"

    # -- bytes in ---------------------------------------------------------------

    def frame_received(self, channel: int, data: bytes) -> None:
        """A ``$`` frame from the client: RTCP on a stream's odd channel goes
        to that stream, like a UDP receiver report; anything else is dropped."""
        stream = self.streams.get(channel - 1) if channel % 2 else None
        if stream is None:
            return
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError as exc:
            log.debug("%s: bad interleaved RTCP: %s", stream.label, exc)
            return
        stream.receiver_report(packets)

    def connection_lost(self) -> set[str]:
        """The connection is gone: nothing more is written on it (a BYE
        included), and tracks close instead of being kept for writing.
        Returns the sessions to end, before :meth:`close`."""
        self.closed = True
        return self.session_ids()

    def close(self) -> None:
        """Release the stream kept for writing, and any track the adapter's
        ending of sessions left."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.close()
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.close()
        if self.relay is not None:
            self.relay.close()


class InterleavedMediaStream(UdpMediaStream):
    """One track sent as ``$`` frames on the client's RTSP connection. Like a
    UDP stream in all but where its packets and RTCP go, and that a reader
    slower than the media makes the engine skip or, stalled, end it."""

    def __init__(self, backend, *, link: InterleavedLink, channels: tuple[int, int],
                 session_id: str, title, track, client_host: str,
                 quirks: ClientQuirks = NO_QUIRKS):
        self.link = link
        self.channels = channels
        self._noted_lag = (0, False)  # (skips, stalled) already logged
        # the stall time this stream opens with (a reload changes the next ones')
        self.stall_s = backend.tcp_stall
        super().__init__(backend, session_id=session_id, title=title, track=track,
                         client_host=client_host, client_ports=channels, quirks=quirks)
        link.attach(channels[0], self)

    def _lease(self) -> None:
        self._ports = None
        self.server_ports = None

    def _open_engine_stream(self, media_fd: int, hint_fd: int, growing: dict):
        return self.backend.engine.open_stream(
            self.link.fileno(self.backend.tcp_send_buffer), media_fd, hint_fd,
            ssrc=self.ssrc, seq0=self.seq0,
            ts0=self.ts0, interleaved=self.channels[0],
            max_lag_ms=round(self.backend.tcp_max_lag * 1000),
            stall_ms=round(self.stall_s * 1000), **growing)

    def _play_engine(self, record: int | None):
        # frames sent before the PLAY reply are skipped by clients reading it
        return self._stream.play(start_record=record, after_write=True)

    def engine_stream(self):
        """The engine stream (None once closed), for the link's writes."""
        return self._stream

    def _send_rtp_packet(self, packet: bytes) -> bool:
        self.link.write(_frame(self.channels[0], packet))
        return True

    def _send_rtcp_packet(self, data: bytes) -> None:
        if self._stream is not None:
            self.link.write(_frame(self.channels[1], data))

    def needs_tick(self, unsettled: set[int]) -> bool:
        """Every second, playing or not: a slow reader's skips are noted
        while it plays."""
        return True

    def tick(self) -> None:
        """Once a second: a slow reader's skips and a stalled connection are
        logged (once per change); the rest as for UDP streams."""
        if self._stream is None or self.bye_sent:
            return
        stats = self._stream.stats()
        self._note_lag(stats)
        if stats.state == "failed" and stats.last_errno != errno.EFAULT and \
                stats.last_errno != errno.ENODATA:
            # the connection failed, not the files: nobody to send a BYE to
            self.bye_sent = True
            if not stats.stalled:
                self.log.info("stream %s: its connection failed (%s)", self.label,
                              errno.errorcode.get(stats.last_errno, stats.last_errno))
            return
        super().tick()

    def _note_lag(self, stats) -> None:
        """Log a slow reader's new skips, or its stall, once."""
        if (stats.skips, stats.stalled) == self._noted_lag:
            return
        if stats.stalled:
            self.log.warning("stream %s: the client took nothing for %.0f s; its "
                             "connection was closed", self.label, self.stall_s)
        elif stats.skips:
            self.log.warning("stream %s: the client reads slower than the media; "
                             "skipped to a keyframe %d times (%d packets)",
                             self.label, stats.skips, stats.packets_skipped)
        self._noted_lag = (stats.skips, stats.stalled)

    def _release_engine_stream(self, stream) -> None:
        try:
            self._note_lag(stream.stats())  # a stall often ends the session first
        except EngineError:
            pass
        # after the BYE, which went through the link: the link may keep it
        if not self.link.detach(self.channels[0], stream):
            stream.close()

    def close(self) -> None:
        """As a UDP stream's; its channels become free on the connection."""
        super().close()
        if self.link.streams.get(self.channels[0]) is self:
            del self.link.streams[self.channels[0]]

    def status(self) -> dict:
        """A UDP stream's figures, and the slow-reader counters."""
        out = super().status()
        # short: `kvod status` gives the column 22 characters
        out["client"] = f"{self.client_host} tcp {self.channels[0]}-{self.channels[1]}"
        out["ports"] = "interleaved"
        if self._stream is not None:
            stats = self._stream.stats()
            out.update(skips=stats.skips, packets_skipped=stats.packets_skipped,
                       stalled=stats.stalled, out_queued=stats.out_queued,
                       out_queued_max=stats.out_queued_max, blocked=stats.blocked)
        return out


def _frame(channel: int, packet: bytes) -> bytes:
    return bytes((0x24, channel)) + len(packet).to_bytes(2, "big") + packet
