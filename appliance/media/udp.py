"""RTP over UDP unicast: the C engine, and RTCP.

The real ``MediaBackend`` of the session layer. Each stream leases a server
port pair (``appliance.media.server_ports``): an even RTP port whose socket is
handed to the engine, which sends every packet, and the next odd port for
RTCP, which Twisted serves: receiver reports in, sender reports and BYE out.
The pair is the stream's own, or one pair shared by every stream
(``[rtsp] server_ports``). Python does nothing per packet; it polls the
engine's counters once a second.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import zlib
from typing import Callable

from twisted.internet.task import LoopingCall

from appliance.rtsp.client_quirks import NO_QUIRKS, ClientQuirks
from appliance.cache.fill import HintUpdate
from appliance.rtsp.media_api import MediaFilesBad, MediaUnavailable, PlayStart
from appliance.rtsp.sessions import log_fields
from appliance.media.rtcp_demux import report_blocks
from appliance.media.server_ports import PerSessionPorts, SharedPorts
from appliance.media.start_points import StartPoints
from appliance.media.trick_play import TrickFiles
from rtpengine import rtcp
from rtpengine.engine import Engine, EngineError
from rtpengine.hintfile import HintError, HintFile
from rtpengine.rtp import RtpHeader, random_seq, random_ssrc, random_ts, seq_add, ts_add
from rtpengine.index.ts_trailer import TAIL_BYTES, pes_flush_trailer

log = logging.getLogger(__name__)

# the counters every stream adds to the daemon's totals (the last three:
# interleaved streams' slow readers; a backend without them counts 0)
TRAFFIC_KEYS = ("packets_sent", "payload_octets", "late_5ms", "send_errors",
                "skips", "packets_skipped", "stalled")
# How often ended streams are noticed (BYE) and counters refreshed.
POLL_INTERVAL = 1.0
# Pause between the end-of-stream trailer and the RTCP BYE.
TRAILER_TO_BYE = 0.25
# Sender reports go out in this many slices of the interval, a session's
# tracks together: a thousand streams' reports at once held the reactor for
# tens of milliseconds, in the middle of whatever viewers were starting.
SR_SLICES = 10


class UdpMediaStream:
    """One track streamed to one client over an RTP/RTCP UDP port pair."""

    def __init__(self, backend: "UdpMediaBackend", *, session_id: str, title, track,
                 client_host: str, client_ports: tuple[int, int],
                 quirks: ClientQuirks = NO_QUIRKS):
        self.backend = backend
        self.session_id = session_id
        self.label = f"{session_id}/{track.track_index}"
        self.log = logging.LoggerAdapter(log, log_fields(session_id, title.name))
        self.title_name = title.name
        self.client_host = client_host
        self.client_ports = client_ports
        self.ssrc = random_ssrc()
        #: the slice of the sender-report interval this stream reports in
        self.sr_slice = zlib.crc32(session_id.encode()) % SR_SLICES
        self.seq0 = random_seq()
        self.ts0 = random_ts()
        self.clock_rate = track.clock_rate
        self.quirks = quirks
        self.media_path = title.media_path
        self.container = getattr(title, "container", "mpegts")
        self.payload_type = track.payload_type
        # a title still filling: hints that grow, and the fill to listen to
        self.fill = backend.fill_for(title.name) if title.state != "complete" else None
        self.track_index = track.track_index
        update = self.fill.hints(self.track_index) if self.fill is not None else HintUpdate(
            track.hint_path, None, False)
        self.hints = self._open_hints(title, update)
        self.main_hint_path = update.path
        self.segment = None
        # the records the engine plays while a Range end plays a prefix
        self._end_count: int | None = None
        #: the RTSP Scale playing: 1, or a trick stream's (appliance.media.trick_play)
        self.scale = 1
        self._trick = None          # its TrickStream
        self._main_hints: HintFile | None = None   # the title's hints, while it plays
        # 0 (unknown) while the title fills: its duration is only an estimate
        self.duration_ns = (title.duration_ns or self.hints.header.duration_ns
                            if self.fill is None else 0)
        self.waiting_since: float | None = None
        # a fill that stopped already: the stream plays what is there, then ends
        self.fill_error = self.fill.error if self.fill is not None else None
        self.loss_fraction = 0.0
        self.cumulative_lost = 0
        self.jitter = 0
        self.bye_sent = False
        self._bye_call = None
        self._ports = None
        self._stream = None
        try:
            self._lease()
            media_fd = self._open_media(title)
            try:
                hint_fd = os.open(update.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # only a filling title asks for growing hints, which
                    # not every engine backend has (krtp has not)
                    growing = {"growing": True} if update.growing else {}
                    self._stream = self._open_engine_stream(media_fd, hint_fd, growing)
                    if update.count is not None:
                        self._stream.set_hints(hint_fd, update.count, growing=update.growing)
                finally:
                    os.close(hint_fd)
            finally:
                os.close(media_fd)
            if self.fill is not None:
                self.fill.attach(self)
        except BaseException:
            self.close()
            raise

    # -- where the packets go: a UDP port pair (an interleaved stream overrides) --

    def _lease(self) -> None:
        self._ports = self.backend.ports.lease(self)
        self.server_ports = self._ports.server_ports

    def _open_engine_stream(self, media_fd: int, hint_fd: int, growing: dict):
        return self.backend.engine.open_stream(
            self._ports.sock.fileno(), media_fd, hint_fd, dest=self._ports.dest,
            ssrc=self.ssrc, seq0=self.seq0, ts0=self.ts0,
            pacing=self.backend.pacing, peer=self._ports.peer_host, **growing)

    def _play_engine(self, record: int | None):
        return self._stream.play(start_record=record)

    def _release_engine_stream(self, stream) -> None:
        stream.close()

    def _send_rtp_packet(self, packet: bytes) -> bool:
        return self._ports is not None and self._ports.send_rtp(packet)

    def _send_rtcp_packet(self, data: bytes) -> None:
        if self._ports is not None:
            self._ports.send_rtcp(data)

    # -- the title's files: what the catalog recorded, or refused --------------

    def _bad_files(self, why: str, *, damaged: bool) -> MediaFilesBad:
        log.warning("stream %s: %s", self.label, why)
        if damaged:
            self.backend.on_damaged(self.title_name, why)
        return MediaFilesBad(why, damaged=damaged)

    def _open_hints(self, title, update: HintUpdate) -> HintFile:
        try:
            return HintFile(update.path, record_count=update.count)
        except HintError as exc:
            raise self._bad_files(f"the hint file of {title.name} is damaged: {exc}",
                                  damaged=True) from None
        except OSError as exc:
            # unreadable (permissions, a folder in its place): not damaged,
            # the operator can mend it; named in the log
            raise self._bad_files(f"cannot read {update.path}: {exc.strerror}",
                                  damaged=False) from None

    def _open_media(self, title) -> int:
        try:
            fd = os.open(title.media_path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            size = st.st_size
        except OSError as exc:
            raise self._bad_files(f"cannot read {title.media_path}: {exc.strerror}",
                                  damaged=False) from None
        # a complete title's file is as long as the hints were made for:
        # one cut short or grown (or another file put there) is not it
        if title.state == "complete" and title.size is not None and size != title.size:
            os.close(fd)
            raise self._bad_files(f"{title.media_path} is {size} bytes, the catalog "
                                  f"recorded {title.size}", damaged=True)
        # the same size, but another file or rewritten since it was indexed
        if title.state == "complete" and title.media_inode is not None and (
                st.st_ino, st.st_mtime_ns) != (title.media_inode, title.media_mtime_ns):
            os.close(fd)
            raise self._bad_files(f"{title.media_path} was replaced or rewritten since it "
                                  f"was indexed", damaged=True)
        return fd

    # -- MediaStream ----------------------------------------------------------

    def needs_seek(self, npt_ns: int) -> bool:
        """Whether starting at ``npt_ns`` must wait for the fill (ahead of it)."""
        fill = self.fill
        return (fill is not None and not fill.covered(npt_ns)
                and fill.segment_for(npt_ns) is None)

    def _files_damaged(self, why: str) -> None:
        """The title's cached files were cut short or changed under this
        stream: end it (RTCP BYE) and have the title marked damaged."""
        log.warning("stream %s: %s; ending it with BYE", self.label, why)
        try:
            self._end_early()
        finally:
            self.backend.on_damaged(self.title_name, why)

    def _damage_error(self, exc: Exception) -> MediaUnavailable:
        why = f"the files of {self.title_name} changed under the stream ({exc})"
        self._files_damaged(why)
        return MediaUnavailable(why)

    def keyframe_at_or_before(self, npt_ns: int) -> tuple[int, int]:
        try:
            return self._keyframe_at_or_before(npt_ns)
        except HintError as exc:
            raise self._damage_error(exc) from None

    def _keyframe_at_or_before(self, npt_ns: int) -> tuple[int, int]:
        fill = self.fill
        if fill is not None:
            # the hints that reach npt: the main ones, or a seek segment's
            target = None if fill.covered(npt_ns) else fill.segment_for(npt_ns)
            if target is not self.segment:
                self._switch_hints(target, fill)
        if not len(self.hints):
            return 0, 0
        if npt_ns == 0 and fill is None and self._trick is None:
            # most plays start at the beginning: its keyframe is found once
            # per hint file, not by every stream's fresh reader (a read of
            # its first 8 KiB and a search in Python, 40 µs before PLAY's
            # first packet)
            key = (self.hints.path, len(self.hints), self.hints.identity())
            found = self.backend.start_points.get(key)
            if found is None:
                found = self.backend.start_points.remember(key, self._search(0))
            return found
        return self._search(npt_ns)

    def _search(self, npt_ns: int) -> tuple[int, int]:
        index = self.hints.keyframe_at_or_before(npt_ns)
        return index, self.hints.record(index).send_ns

    def _switch_hints(self, segment, fill) -> None:
        """Send from the main hints (``segment`` None) or a seek segment's,
        positioned by the play() that follows."""
        update = fill.hints(self.track_index) if segment is None else HintUpdate(
            segment.path, segment.hints.count, True)
        try:
            self._apply(update, restart=True)
        except (EngineError, OSError, ValueError) as exc:
            self.log.error("stream %s: cannot move to %s: %s", self.label, update.path, exc)
            return
        if self.segment is not None:
            fill.release(self.segment)
        if segment is not None:
            segment.users += 1
        self.segment = segment

    def _apply(self, update: HintUpdate, *, remap: bool = False, restart: bool = False) -> None:
        self._use_hints(update.path, update.count, growing=update.growing, remap=remap,
                        restart=restart)
        hints = HintFile(update.path, record_count=update.count)
        self.hints.close()
        self.hints = hints

    def position_ns(self) -> int:
        index = self._stream.stats().next_record
        if self._trick is not None:
            return self._trick.title_time(index)
        if index >= len(self.hints):
            return self.duration_ns
        try:
            return self.hints.record(index).send_ns
        except HintError as exc:
            raise self._damage_error(exc) from None

    def set_scale(self, scale: int, npt_ns: int) -> tuple[int, int]:
        """Play at RTSP ``scale`` from title time ``npt_ns``: the keyframes
        only (faster, or backwards), or the title (1). Returns (record,
        title time) to :meth:`play` from; :attr:`scale` says the scale used
        (1 where there is no trick stream: a title still filling, MP4)."""
        if scale != 1 and (self.fill is not None or self.container != "mpegts"):
            scale = 1
        if scale == 1:
            if self._trick is not None:
                self._use_hints(self._main_hints.path, None, restart=True)
                self.hints.close()
                self.hints, self._main_hints, self._trick = self._main_hints, None, None
            self.scale = 1
            return self.keyframe_at_or_before(npt_ns)
        main = self._main_hints or self.hints
        try:
            path, trick = self.backend.tricks.stream(main, self.media_path, scale)
        except (OSError, ValueError) as exc:
            self.log.warning("stream %s: no trick play at scale %d: %s", self.label, scale, exc)
            return self.set_scale(1, npt_ns)
        self._use_hints(path, None, restart=True)
        if self._trick is not None:
            self.hints.close()
        self._main_hints = main
        self.hints = HintFile(path)
        self._trick = trick
        self._end_count = None
        self.scale = scale
        return trick.start_for(npt_ns, scale)

    def _use_hints(self, path: str, count: int | None, **flags) -> None:
        """The engine sends from ``count`` records of the hint file ``path``
        (``flags`` as :meth:`rtpengine.engine.Stream.set_hints` takes them)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._stream.set_hints(fd, count, **flags)
        finally:
            os.close(fd)

    def stop_at(self, npt_ns: int | None, start_record: int | None = None) -> int | None:
        """End after the records sent at or before ``npt_ns`` (None: at the
        title's end), for a play from ``start_record`` (None: where the
        stream is). The engine plays a prefix of the hint file: the same
        file with a smaller record count. A title still filling cannot end
        early (its records are the fill's to hand out): None. ValueError
        when the end lies before where the stream is."""
        if self.fill is not None or self.segment is not None or self._trick is not None:
            return None
        total = len(self.hints)
        count = total if npt_ns is None or not total else min(
            total, self.hints.index_at(npt_ns) + 1)
        if count == (self._end_count or total):
            return npt_ns
        try:
            self._use_hints(self.main_hint_path, count, restart=start_record is not None)
        except EngineError as exc:
            if exc.errno != errno.ERANGE:
                raise
            raise ValueError(f"the range ends before the stream's position: {exc}") from None
        self._end_count = None if count == total else count
        return npt_ns

    def play(self, record: int | None) -> PlayStart:
        self.waiting_since = None
        self._cancel_bye()
        # the engine says where it started, read under the lock that
        # orders it with the sends (dropped packets used up their sequence
        # numbers, as network loss would)
        try:
            start = self._play_engine(record)
        except EngineError as exc:
            if exc.errno != errno.EFAULT:
                raise
            raise self._damage_error(exc) from None
        self.bye_sent = False
        rtptime = start.rtp_ts
        if self.container == "mp4":
            # RTP-Info's rtptime is the RTP time of the Range start (RFC 2326
            # 12.33), the send time all tracks share; MP4 video's first packet
            # carries its presentation time, later than that by the B-frame delay
            rtptime = ts_add(self.ts0, start.send_ns * self.clock_rate // 1_000_000_000)
        return PlayStart(seq=start.seq, rtptime=rtptime, npt_ns=start.send_ns)

    def pause(self) -> None:
        self._stream.pause()

    def has_ended(self) -> bool:
        return self._stream is not None and self._stream.stats().state in ("ended", "failed")

    def _cancel_bye(self) -> None:
        if self._bye_call is not None and self._bye_call.active():
            self._bye_call.cancel()
        self._bye_call = None

    # -- FillListener: the fill of a title this stream plays ------------------------

    def hints_grew(self, update: HintUpdate) -> None:
        """More records: hand them to the engine and to the seek table. A
        stream on a seek segment moves to the main hints once they reach
        where it is (the engine refuses them until then)."""
        if self._stream is None:
            return
        segment = self.segment
        if segment is not None and update.path != segment.path:
            if update.path != self.hints_path_main():
                return
            try:
                self._apply(update, remap=True)
            except EngineError as exc:
                if exc.errno != errno.ERANGE:
                    self.log.error("stream %s: main hints refused: %s", self.label, exc)
                return  # not there yet
            except (OSError, ValueError) as exc:
                self.log.error("stream %s: main hints refused: %s", self.label, exc)
                return
            self.segment = None
            if self.fill is not None:
                self.fill.release(segment)
            self.log.info("stream %s: caught up with the fill's main hints", self.label)
            return
        if segment is None and update.path != self.hints_path_main():
            return  # another viewer's seek segment
        try:
            self._apply(update)
        except (EngineError, OSError, ValueError) as exc:
            self.log.error("stream %s: new hints of %s refused: %s", self.label, update.path, exc)
            return
        if not update.growing and not self.duration_ns:
            self.duration_ns = self.hints.header.duration_ns

    def hints_path_main(self) -> str:
        """The title's own hint file."""
        return self.main_hint_path

    def fill_stopped(self, error) -> None:
        """The fill gave up: a stream waiting for bytes ends at the next tick."""
        self.fill_error = error

    def title_changed(self) -> None:
        """What this stream sent belongs to an old version: end it now."""
        self.log.warning("stream %s: the title changed at the origin; ending the stream",
                    self.label)
        self._end_early()

    def _end_early(self) -> None:
        if self._stream is None or self.bye_sent:
            return
        self._stream.pause()
        self._send_rtcp(bye=True)

    def close(self) -> None:
        if self.fill is not None:
            self.fill.detach(self)
            if self.segment is not None:
                self.fill.release(self.segment)
                self.segment = None
            self.fill = None
        self._cancel_bye()
        if self._stream is not None:
            try:
                final = self._stream.stats()
                if not self.bye_sent and final.packets_sent:
                    self._send_rtcp(bye=True)
                self.backend.retire(final)
            finally:
                stream, self._stream = self._stream, None
                self._release_engine_stream(stream)
        if self._ports is not None:
            self._ports.close()
            self._ports = None
        self.hints.close()
        if self._main_hints is not None:
            self._main_hints.close()
        self.backend.forget(self)

    def engine_stats(self):
        """The engine's counters of this stream, or None once it is closed."""
        return self._stream.stats() if self._stream is not None else None

    def status(self) -> dict:
        """Engine counters and the client's RTCP figures, JSON-able."""
        out = {"client": f"{self.client_host}:{self.client_ports[0]}-{self.client_ports[1]}",
               "server_ports": list(self.server_ports) if self.server_ports else None,
               "ssrc": f"{self.ssrc:08X}",
               "ports": self.backend.ports.mode,
               "loss_fraction": self.loss_fraction, "cumulative_lost": self.cumulative_lost,
               "jitter": self.jitter}
        if self._stream is not None:
            stats = self._stream.stats()
            out.update(state=stats.state, strategy=stats.strategy, refused=list(stats.refused),
                       pacing=stats.pacing,
                       packets_sent=stats.packets_sent, payload_octets=stats.payload_octets,
                       packets_dropped=stats.packets_dropped, send_errors=stats.send_errors,
                       shared=stats.shared,
                       late_1ms=stats.late_1ms, late_5ms=stats.late_5ms,
                       max_late_ms=round(stats.max_late_ns / 1e6, 3),
                       next_record=stats.next_record, records=stats.record_count)
        return out

    # -- RTCP -------------------------------------------------------------------

    def receiver_report(self, packets) -> None:
        """Take loss and jitter from a client's RTCP and note it is alive."""
        for block in report_blocks(packets):
            if block.ssrc == self.ssrc:
                self.loss_fraction = block.fraction_lost / 256
                self.cumulative_lost = block.cumulative_lost
                self.jitter = block.jitter
        self.backend.on_alive(self.session_id)

    def needs_tick(self, unsettled: set[int]) -> bool:
        """Whether this second's :meth:`tick` has anything to do, given the
        ids of the engine's ``unsettled`` streams (waiting, ended, failed):
        a stream that plays, pauses or sits idle has nothing to end, except
        one that waited last time (its wait is over)."""
        return self.waiting_since is not None or (
            self._stream is not None and self._stream.id in unsettled)

    def tick(self) -> None:
        """Once a second: BYE when the track has ended, or when it has waited
        for bytes longer than the stall timeout (or for a fill that stopped)."""
        if self._stream is None or self.bye_sent:
            return
        stats = self._stream.stats()
        state = stats.state
        if state == "failed":
            self._files_damaged(
                f"the files of {self.title_name} were cut short or changed under the "
                f"stream ({errno.errorcode.get(stats.last_errno, stats.last_errno)}: "
                f"{os.strerror(stats.last_errno)})")
            return
        if state == "waiting":
            now = time.monotonic()
            if self.waiting_since is None:
                self.waiting_since = now
            if self.fill_error is not None or \
                    now - self.waiting_since >= self.backend.stall_timeout:
                why = self.fill_error or f"no bytes for {now - self.waiting_since:.0f} s"
                self.log.warning("stream %s: waited for bytes that did not come (%s); ending it "
                            "with BYE", self.label, why)
                self._end_early()
            return
        self.waiting_since = None
        if state != "ended" or self._bye_call is not None:
            return
        delay = 0.0
        if self.quirks.flush_pes_at_end and self.container == "mpegts" and \
                self._send_flush_trailer():
            # ffmpeg reads RTCP before RTP when both are waiting: a BYE right
            # behind the trailer would end its session before the trailer.
            delay = TRAILER_TO_BYE
        self._bye_call = self.backend.reactor.callLater(delay, self._end)

    def _end(self) -> None:
        if self._stream is not None and not self.bye_sent:
            self._send_rtcp(bye=True)
            self.log.info("stream %s: ended, BYE sent", self.label)

    def _send_flush_trailer(self) -> bool:
        """One RTP packet after the last record that closes open PES packets."""
        stats = self._stream.stats()
        with open(self.media_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - TAIL_BYTES - size % 188))
            trailer = pes_flush_trailer(f.read())
        if not trailer:
            return False
        # every packet skipped or dropped used its sequence number
        seq = seq_add(self.seq0, stats.packets_sent + stats.packets_dropped
                      + getattr(stats, "packets_skipped", 0))
        header = RtpHeader(self.payload_type, seq, stats.last_rtp_ts, self.ssrc)
        return self._send_rtp_packet(header.pack() + trailer)

    def send_sender_report(self) -> None:
        """An RTCP SR (+SDES CNAME) while the stream is sending."""
        if self._stream is None or self.bye_sent:
            return
        stats = self._stream.stats()
        if stats.state in ("playing", "waiting"):
            self._send_rtcp(bye=False, stats=stats)

    def _send_rtcp(self, *, bye: bool, stats=None) -> None:
        """An SR (+SDES, +BYE) from ``stats``, or from the engine's figures now."""
        if stats is None:
            stats = self._stream.stats()
        now_mono = time.monotonic_ns()
        # The RTP time "now" extrapolates from the last packet's schedule, so
        # receivers can map RTP time to wall time (RFC 3550 section 6.4.1).
        rtp_now = stats.last_rtp_ts
        if stats.state in ("playing", "waiting") and stats.packets_sent:
            elapsed = max(now_mono - stats.last_due_ns, 0)
            rtp_now = ts_add(stats.last_rtp_ts, elapsed * self.clock_rate // 1_000_000_000)
        if self.container == "mp4" and stats.packets_sent and \
                0 < stats.next_record <= len(self.hints):
            # MP4 video leaves in decode order with presentation-time stamps
            # (B-frames); its send times are the one timeline all tracks
            # share, so the SR anchors on the last packet's send time
            elapsed = max(now_mono - stats.last_due_ns, 0)
            sent = self.hints.record(stats.next_record - 1).send_ns + elapsed
            rtp_now = ts_add(self.ts0, sent * self.clock_rate // 1_000_000_000)
        data = rtcp.build_sender_report(
            self.ssrc, time.time(), rtp_now, stats.packets_sent & 0xFFFFFFFF,
            stats.payload_octets & 0xFFFFFFFF)
        data += rtcp.build_sdes_cname(self.ssrc, self.backend.cname)
        if bye:
            data += rtcp.build_bye(self.ssrc)
            self.bye_sent = True
        self._send_rtcp_packet(data)


class UdpMediaBackend:
    """Opens UDP streams for the session layer and runs their RTCP timers."""

    def __init__(self, *, engine: Engine, reactor, ports: PerSessionPorts | SharedPorts,
                 sr_interval: float, cname: str,
                 on_alive: Callable[[str], None] = lambda session_id: None,
                 fill_for: Callable[[str], object] = lambda name: None,
                 on_damaged: Callable[[str, str], None] = lambda name, why: None,
                 stall_timeout: float = 20.0, pacing: str = "auto",
                 tcp_max_lag: float = 2.0, tcp_stall: float = 20.0,
                 tcp_send_buffer: int = 131072):
        """``on_damaged(name, why)``: a stream found title ``name``'s cached
        files cut short or changed (the cache marks it damaged).
        ``tcp_max_lag``: an interleaved stream this many seconds behind (its
        client reads slower than the media) skips to the next keyframe;
        ``tcp_stall``: a connection that takes no byte for this long is
        closed; ``tcp_send_buffer``: the SO_SNDBUF of such a connection
        (``appliance.media.interleaved``)."""
        self.tcp_send_buffer = tcp_send_buffer
        self.tcp_max_lag = tcp_max_lag
        self.tcp_stall = tcp_stall
        self.engine = engine
        self.pacing = pacing  # [engine] pacing, for every stream's open_stream
        self.fill_for = fill_for
        self.on_damaged = on_damaged
        self.stall_timeout = stall_timeout
        self.reactor = reactor
        self.ports = ports
        self.sr_interval = sr_interval
        self.cname = cname
        self.on_alive = on_alive
        self.streams: set[UdpMediaStream] = set()
        self.tricks = TrickFiles()
        self.start_points = StartPoints()
        # what closed streams sent, so that the totals only ever grow
        self._retired = dict.fromkeys(TRAFFIC_KEYS, 0)
        self._sr_loop = LoopingCall(self._send_reports)
        self._sr_tick = 0
        self._poll_loop = LoopingCall(self._poll)
        self._sr_loop.clock = self._poll_loop.clock = reactor

    def start(self) -> None:
        """Bind the shared port pair if there is one (OSError if it cannot
        be bound), and start the RTCP timers."""
        self.ports.start()
        self._sr_loop.start(self.sr_interval / SR_SLICES, now=False)
        self._poll_loop.start(POLL_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop the timers and close every stream."""
        for loop in (self._sr_loop, self._poll_loop):
            if loop.running:
                loop.stop()
        for stream in list(self.streams):
            stream.close()
        self.ports.stop()

    @property
    def interleaving(self) -> bool:
        """Whether streams may go interleaved on the RTSP connection: the
        user-space engine frames them (krtp sends UDP only)."""
        return isinstance(self.engine, Engine)

    def open_stream(self, *, session_id: str, title, track, client_host: str,
                    client_ports: tuple[int, int] | None,
                    quirks: ClientQuirks = NO_QUIRKS,
                    interleaved: tuple | None = None) -> UdpMediaStream:
        """A stream to ``client_ports`` over UDP, or with ``interleaved=(link,
        (rtp, rtcp))`` on the RTSP connection ``link`` (an
        :class:`appliance.media.interleaved.InterleavedLink`)."""
        try:
            if interleaved is not None:
                # the link makes its own stream: that module builds on this one
                link, channels = interleaved
                stream = link.open_stream(self, channels, session_id=session_id,
                                          title=title, track=track,
                                          client_host=client_host, quirks=quirks)
            else:
                stream = UdpMediaStream(self, session_id=session_id, title=title,
                                        track=track, client_host=client_host,
                                        client_ports=client_ports, quirks=quirks)
        except (EngineError, OSError) as exc:
            raise MediaUnavailable(str(exc)) from exc
        self.streams.add(stream)
        return stream

    def forget(self, stream: UdpMediaStream) -> None:
        self.streams.discard(stream)

    def retire(self, final) -> None:
        """Add a closing stream's last counters to the totals."""
        for key in TRAFFIC_KEYS:
            self._retired[key] += getattr(final, key, 0)

    def traffic(self) -> dict[str, int]:
        """What every stream since start sent: packets, payload bytes, late
        packets and failed sends (monotonic, for /metrics)."""
        totals = dict(self._retired)
        for stream in list(self.streams):
            stats = stream.engine_stats()
            if stats is not None:
                for key in TRAFFIC_KEYS:
                    totals[key] += getattr(stats, key, 0)
        return totals

    def set_sr_interval(self, seconds: float) -> None:
        """Send sender reports every ``seconds`` from the next one on."""
        self.sr_interval = seconds
        self._sr_loop.interval = seconds / SR_SLICES

    def playing(self, name: str) -> bool:
        """Whether a stream of title ``name`` is open (it must not be evicted)."""
        return any(s.title_name == name for s in self.streams)

    def _send_reports(self) -> None:
        """The sender reports of one slice of the streams: each stream
        reports every ``sr_interval``, a tenth of them at a time."""
        now_slice = self._sr_tick % SR_SLICES
        self._sr_tick += 1
        for stream in list(self.streams):
            if stream.sr_slice == now_slice:
                stream.send_sender_report()

    def _poll(self) -> None:
        # one engine call names the streams with something to end, instead
        # of a stats call per stream (a thousand streams: about 13 ms a
        # second of the reactor, in one block); krtp has no such call: all tick
        unsettled = getattr(self.engine, "unsettled", None)
        ids = unsettled() if unsettled is not None else None
        for stream in list(self.streams):
            if ids is not None and not stream.needs_tick(ids):
                continue
            try:
                stream.tick()
            except EngineError:
                log.exception("stream %s: engine error", stream.label)
