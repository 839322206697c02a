"""RTP interleaved on an RTSPS (TLS) connection: the engine writes into a
socket pair, the reactor encrypts what comes out of it.

The engine frames and paces RTP for a TCP connection by writing ``$`` frames
to its socket; on a TLS connection the bytes must be encrypted first, and
TLS here is OpenSSL in user space under Twisted (the kernel's TLS would need
the session keys handed over, which neither Python's ssl nor pyOpenSSL
does). So the engine gets one end of a Unix stream socket pair in place of
the connection, and this relay reads the other end, up to 256 KiB a time,
and writes it into the TLS transport: Python and OpenSSL per chunk of many
frames, never per packet. Order holds: everything written on the connection
from the first interleaved stream on goes through the engine and so through
the pair, behind what TLS had buffered before.

Back-pressure runs through it: the relay is the TLS transport's producer, so
when TLS's buffer fills (the client reads slowly) it stops reading the pair,
the pair's small buffers fill, and the engine sees the slow reader as on a
TCP connection (skips to keyframes, then ends a stalled one).
"""

from __future__ import annotations

import logging
import socket

from twisted.internet.interfaces import ISSLTransport

log = logging.getLogger(__name__)

# bytes read from the pair per reactor wake-up
READ_BYTES = 256 << 10


def is_tls(transport) -> bool:
    """Whether ``transport`` is a TLS connection (RTSPS)."""
    return ISSLTransport.providedBy(transport)


class TlsRelay:
    """Moves the engine's bytes from a socket pair into a TLS transport."""

    def __init__(self, transport, send_buffer: int | None = None, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: F811 (the running one)
        self.reactor = reactor
        self.transport = transport
        self.engine_end, self._ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if send_buffer is not None:
            # what the pair holds is lag the engine cannot see, as a TCP send buffer is
            for end, opt in ((self.engine_end, socket.SO_SNDBUF), (self._ours, socket.SO_RCVBUF)):
                end.setsockopt(socket.SOL_SOCKET, opt, send_buffer)
        self._ours.setblocking(False)
        self.relayed = 0
        self._reading = False
        self.closed = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    # -- the reactor's reader (IReadDescriptor) -------------------------------

    def fileno(self) -> int:
        return self._ours.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted API)
        return "RTSPS relay"

    def doRead(self) -> None:  # noqa: N802 (Twisted API)
        try:
            data = self._ours.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("RTSPS relay: %s", exc)
            data = b""
        if not data:
            self.close()
            return
        self.relayed += len(data)
        self.transport.write(data)

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        self.close()

    # -- the TLS transport's producer (IPushProducer) -----------------------------

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        if not self._reading and not self.closed:
            self._reading = True
            self.reactor.addReader(self)

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.close()

    def close(self) -> None:
        """Stop relaying and close both ends (twice is fine)."""
        if self.closed:
            return
        self.pauseProducing()
        self.closed = True
        self.engine_end.close()
        self._ours.close()
        try:
            self.transport.unregisterProducer()
        except Exception:  # the transport may be gone already
            pass
