"""A small blocking RTSP client and RTP receiver, for benchmarks and tests.

Built on the same sans-IO ``RTSPConnection`` as the server, in the client
role. It is a measuring tool, not a player: it speaks just enough RTSP to
set up UDP streams and records every RTP packet with its arrival time.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from appliance.rtsp import (
    ConnectionClosed,
    Request,
    Response,
    RTSPConnection,
    format_transport,
    parse_session,
    parse_transport,
)
from appliance.rtsp.headers import TransportSpec


class RtspClientError(Exception):
    """The server did not answer as RTSP says it must."""


class RtspClient:
    """One RTSP control connection, one request at a time."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0):
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = RTSPConnection(our_role="client")
        self.cseq = 0
        self._pending: list = []

    def url(self, path: str) -> str:
        """The rtsp:// URL of ``path`` on this server."""
        return f"rtsp://{self.host}:{self.port}/{path.lstrip('/')}"

    def request(self, method: str, url: str, headers=(), body: bytes = b"") -> Response:
        """Send one request and wait for its response."""
        self.cseq += 1
        req = Request(method=method, target=url,
                      headers=(("CSeq", str(self.cseq)), ("User-Agent", "kvod-bench"))
                      + tuple(headers), body=body)
        self.sock.sendall(self.conn.send(req))
        return self.read_response()

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for malformed-request tests)."""
        self.sock.sendall(data)

    def read_response(self) -> Response:
        """Wait for the next response on the connection."""
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if isinstance(event, Response):
                    return event
                if isinstance(event, ConnectionClosed):
                    raise RtspClientError("server closed the connection")
            data = self.sock.recv(65536)
            self._pending.extend(self.conn.receive_data(data))
            if not data and not self._pending:
                raise RtspClientError("server closed the connection")

    def setup_udp(self, url: str, client_ports: tuple[int, int],
                  session: str | None = None) -> tuple[str, tuple[int, int], Response]:
        """SETUP over UDP unicast; returns (session id, server ports, response)."""
        spec = TransportSpec(profile="RTP/AVP", lower_transport="UDP", delivery="unicast",
                             client_port=client_ports)
        headers = [("Transport", format_transport(spec))]
        if session:
            headers.append(("Session", session))
        resp = self.request("SETUP", url, headers)
        if resp.status != 200:
            raise RtspClientError(f"SETUP {url}: {resp.status}")
        session_id = parse_session(resp.headers.get("Session"))[0]
        reply = parse_transport(resp.headers.get("Transport"))[0]
        return session_id, reply.server_port, resp

    def close(self) -> None:
        """Close the control connection (without TEARDOWN)."""
        self.sock.close()


@dataclass
class RtpReceiver:
    """An RTP/RTCP UDP port pair on loopback that records what arrives."""

    host: str = "127.0.0.1"
    rcvbuf: int = 4 << 20
    packets: list = field(default_factory=list)  # (arrival monotonic ns, bytes)
    rtcp: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rtp_sock, self.rtcp_sock = bind_pair(self.host)
        self.rtp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self.ports = (self.rtp_sock.getsockname()[1], self.rtcp_sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # poll, not select: a test or bench may hold more than 1024 descriptors
        with selectors.DefaultSelector() as selector:
            for sock in (self.rtp_sock, self.rtcp_sock):
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                self._receive([key.fileobj for key, _ in selector.select(0.05)])

    def _receive(self, ready: list) -> None:
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                continue
            if sock is self.rtp_sock:
                self.packets.append((time.monotonic_ns(), data))
            else:
                self.rtcp.append((time.monotonic_ns(), data))

    def got_bye(self) -> bool:
        """True once an RTCP packet carrying BYE (type 203) has arrived."""
        for _, data in list(self.rtcp):
            i = 0
            while i + 4 <= len(data):
                if data[i + 1] == 203:
                    return True
                i += 4 * (int.from_bytes(data[i + 2:i + 4], "big") + 1)
        return False

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` RTP packets have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.packets) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        return len(self.packets) >= count

    def close(self) -> None:
        """Stop receiving and close both sockets."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.rtp_sock.close()
        self.rtcp_sock.close()


def bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """An even/odd UDP port pair chosen by the kernel."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise OSError("no free even/odd UDP port pair")
