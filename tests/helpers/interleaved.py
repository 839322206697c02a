"""RTSP connections carrying interleaved RTP: a loopback TCP pair whose
server side goes to the engine, and a parser of what a client reads on
such a connection (``$`` frames and RTSP messages, RFC 2326 10.12) that
fails on any byte that is neither: a reply written inside a frame shows up
as a bad frame or a bad message."""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass


def tcp_pair(*, sndbuf: int | None = None, rcvbuf: int | None = None
             ) -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a loopback TCP connection; buffer
    sizes are set before connecting, so the window follows them."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    if sndbuf is not None:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.connect(lst.getsockname())
    server, _ = lst.accept()
    lst.close()
    if sndbuf is not None:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return server, client


@dataclass(frozen=True)
class Frame:
    """One ``$`` frame: its channel and the RTP or RTCP packet."""

    channel: int
    data: bytes


@dataclass(frozen=True)
class Message:
    """One RTSP message (head and body) between frames."""

    head: bytes
    body: bytes


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


class StreamParser:
    """Cuts a connection's bytes into frames and RTSP messages; raises
    ValueError on bytes that are neither."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.items: list[Frame | Message] = []

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            if self.buf[0] == 0x24:
                if len(self.buf) < 4:
                    return
                channel, length = struct.unpack_from("!BH", self.buf, 1)
                if len(self.buf) < 4 + length:
                    return
                self.items.append(Frame(channel, bytes(self.buf[4:4 + length])))
                del self.buf[:4 + length]
                continue
            if not self.buf.startswith(b"RTSP/1.0 "[:len(self.buf)]):
                raise ValueError(f"neither a frame nor a reply at {bytes(self.buf[:16])!r}")
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 8192:
                    raise ValueError("an RTSP head without an end")
                return
            head = bytes(self.buf[:end + 4])
            m = _CONTENT_LENGTH.search(head)
            n = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + n:
                return
            self.items.append(Message(head, bytes(self.buf[end + 4:end + 4 + n])))
            del self.buf[:end + 4 + n]

    def frames(self, channel: int) -> list[bytes]:
        return [i.data for i in self.items if isinstance(i, Frame) and i.channel == channel]

    def messages(self) -> list[Message]:
        return [i for i in self.items if isinstance(i, Message)]


def read_all(sock: socket.socket, parser: StreamParser, *, until, timeout: float = 10.0,
             chunk: int = 65536, rate: float | None = None) -> None:
    """Read into ``parser`` until ``until(parser)`` or EOF or the timeout;
    ``rate`` (bytes/s) throttles the reader."""
    sock.settimeout(0.05)
    deadline = time.monotonic() + timeout
    start, got = time.monotonic(), 0
    while not until(parser) and time.monotonic() < deadline:
        if rate is not None:
            ahead = got / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
                continue
        try:
            data = sock.recv(chunk)
        except socket.timeout:
            continue
        if not data:
            return
        got += len(data)
        parser.feed(data)


def frame(channel: int, packet: bytes) -> bytes:
    """A packet as a ``$`` frame."""
    return struct.pack("!BBH", 0x24, channel, len(packet)) + packet
