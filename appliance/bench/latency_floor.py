"""The floor under ``kvod bench latency``: a server that does no work.

It answers DESCRIBE, SETUP, PLAY and TEARDOWN with fixed replies and, at
PLAY, sends one RTP packet to the client's port before its reply, as the
daemon does. It runs on the same reactor (Twisted, epoll) in its own
process, and the bench times it with the same client in the same run, so
its figures are what the client, the kernel and the machine's wake-ups
cost by themselves: what is left of a start-up when the server's own
work is taken away. A target below them cannot be met by any server
measured with this client on this machine.

Run as ``python3 -m appliance.bench.latency_floor PORT``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from typing import Optional

from appliance.bench.daemon import free_tcp_port, wait_listening

_CLIENT_PORT_RE = re.compile(rb"client_port=(\d+)")
_CSEQ_RE = re.compile(rb"(?i)\r\ncseq:[ \t]*(\d+)")
_SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=floor\r\nt=0 0\r\n"
        b"m=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:trackID=0\r\n")
# an RTP header (PT 33) and seven TS null packets: a datagram of the daemon's size
_PACKET = b"\x80\x21\x00\x01\x00\x00\x00\x00\x12\x34\x56\x78" + \
    (b"\x47\x1f\xff\x10" + b"\xff" * 184) * 7


def reply(head: bytes, sender: socket.socket, peer_host: str) -> bytes:
    """The fixed reply to one request head (no body); at PLAY, the RTP
    packet goes to the port its SETUP named first."""
    method = head.split(b" ", 1)[0]
    cseq = _CSEQ_RE.search(head)
    lines = [b"RTSP/1.0 200 OK", b"CSeq: " + (cseq.group(1) if cseq else b"0")]
    body = b""
    if method == b"DESCRIBE":
        body = _SDP
        lines += [b"Content-Type: application/sdp", b"Content-Length: %d" % len(body)]
    elif method == b"SETUP":
        port = _CLIENT_PORT_RE.search(head)
        rtp = int(port.group(1)) if port else 0
        sender.connect((peer_host, rtp))
        server = sender.getsockname()[1]
        lines += [b"Session: F100D0F100D0F100;timeout=60",
                  b"Transport: RTP/AVP;unicast;client_port=%d-%d;server_port=%d-%d"
                  % (rtp, rtp + 1, server, server + 1)]
    elif method == b"PLAY":
        sender.send(_PACKET)
        lines += [b"Session: F100D0F100D0F100", b"Range: npt=0.000-"]
    else:
        lines += [b"Session: F100D0F100D0F100"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    from twisted.internet import protocol, reactor

    class Floor(protocol.Protocol):
        def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
            self.transport.setTcpNoDelay(True)
            self.buffer = b""
            self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(reply(head, self.sender, self.transport.getPeer().host))

        def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted API)
            self.sender.close()

    reactor.listenTCP(port, protocol.Factory.forProtocol(Floor), backlog=128,
                      interface="127.0.0.1")
    reactor.run()


class FloorServer:
    """The no-work server in a child process, for the length of a bench."""

    def __init__(self) -> None:
        self.port = free_tcp_port()
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-m", "appliance.bench.latency_floor", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(self.port, 15)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stderr.close()
            self.proc = None


if __name__ == "__main__":
    main(int(sys.argv[1]))
