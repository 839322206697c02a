"""The RTSP 1.0 connection, sans-IO: bytes in, events out, events to bytes.

Framing rules (RFC 2326 sections 4 and 10.12, with choices where it leaves
room):

* Messages end their head with an empty line; CRLF is the rule, a bare LF
  is accepted. Empty lines between messages are skipped (keep-alives).
* Obsolete line folding (a header line that starts with a blank) is
  unfolded into the previous header with one space, as RFC 2326's HTTP/1.1
  grammar allowed it; a folded first line is an error.
* The body length is Content-Length, absent meaning zero (section 4.3);
  several Content-Length headers must agree.
* A ``$`` where a message may start begins an interleaved frame:
  ``$``, channel, 16-bit big-endian length, data.
* A head longer than ``max_head_bytes`` is answered 400: RTSP 1.0 has no
  431, and 413 speaks of the entity body, which is ``max_body_bytes``.

The buffer is scanned once: the search for the end of a head resumes where
the previous search stopped, so feeding a message byte by byte costs
linear time.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from appliance.rtsp.errors import (HeaderError, LocalProtocolError,
                                   RemoteProtocolError)
from appliance.rtsp.events import (NEED_DATA, ConnectionClosed, Event, Headers,
                                   InterleavedFrame, Request, Response, _NeedData)
from appliance.rtsp.headers import format_cseq, parse_content_length

RTSP_VERSION = "RTSP/1.0"
ROLES = ("server", "client")

# Receive states and the one table of their transitions. Whatever the
# parser meets that has no row here is a protocol error.
IDLE = "IDLE"          # between messages
HEAD = "HEAD"          # reading a start line and headers
BODY = "BODY"          # reading a Content-Length body
FRAME = "FRAME"        # reading an interleaved frame
CLOSED = "CLOSED"      # the peer closed cleanly
ERROR = "ERROR"        # a RemoteProtocolError was raised

_RECEIVE_TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "dollar"): FRAME,
    (IDLE, "message"): HEAD,
    (IDLE, "eof"): CLOSED,
    (HEAD, "head"): IDLE,
    (HEAD, "head+body"): BODY,
    (BODY, "body"): IDLE,
    (FRAME, "frame"): IDLE,
}

# What each role may send; ConnectionClosed ends our side.
_SENDABLE: dict[str, tuple[type, ...]] = {
    "server": (Response, InterleavedFrame, ConnectionClosed),
    "client": (Request, InterleavedFrame, ConnectionClosed),
}

_HEAD_END_RE = re.compile(rb"\n\r?\n")
_BLANK_LINES_RE = re.compile(rb"[\r\n]*")
_FRAME_HEADER = struct.Struct("!BBH")
_VERSION_LIKE_RE = re.compile(r"(?:RTSP|HTTP)/[0-9]+\.[0-9]+")
_STATUS_LINE_RE = re.compile(r"(RTSP/[0-9]\.[0-9]) ([0-9]{3})(?: (.*))?")


def _parse_header_lines(lines: list[str]) -> Headers:
    pairs: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not pairs:
                raise RemoteProtocolError("continuation line before any header")
            pairs[-1][1] = pairs[-1][1].rstrip(" \t") + " " + line.strip(" \t")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise RemoteProtocolError(f"header line {line[:40]!r} has no ':'")
        pairs.append([name, value])
    # Headers rejects a name with blanks before the colon and control
    # characters in values; the caller turns that into a 400.
    return Headers([(n, v) for n, v in pairs])


class RTSPConnection:
    """One end of an RTSP connection, as ``our_role`` sees it.

    ``receive_data(data)`` buffers ``data`` and returns every event now
    complete; ``send(event)`` returns the bytes to write. A server receives
    requests and sends responses, a client the other way round; both send
    and receive interleaved frames.

    ``max_head_bytes`` bounds a start line plus headers plus the blank line
    that ends them; ``max_body_bytes`` a Content-Length; ``max_frame_bytes``
    an interleaved frame with its 4-byte header; ``max_headers`` the header
    lines of a message (folded lines count).
    """

    def __init__(self, our_role: str = "server", *, max_head_bytes: int = 8192,
                 max_body_bytes: int = 65536, max_frame_bytes: int = 65535 + 4,
                 max_headers: int = 64) -> None:
        if our_role not in ROLES:
            raise ValueError(f"role {our_role!r} is not 'server' or 'client'")
        self.our_role = our_role
        self.their_role = "client" if our_role == "server" else "server"
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.max_frame_bytes = max_frame_bytes
        self.max_headers = max_headers
        self.receive_state = IDLE
        self.send_closed = False
        self._buf = bytearray()
        self._eof = False
        self._scanned = 0                  # where the head search resumes
        self._pending: tuple[str, Headers, int] | None = None  # head awaiting its body
        self._error: RemoteProtocolError | None = None

    @property
    def mid_message(self) -> bool:
        """Whether part of a message has come and the rest not yet (a
        client that sends a request a byte a minute stays here)."""
        return self.receive_state in (HEAD, BODY, FRAME)

    # ---------------------------------------------------------- receive ---

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer (``b""`` at EOF); return complete events.

        Raises ``RemoteProtocolError`` (with the status to answer) on bad
        input, and again on every later call. Events completed earlier in
        the same call ride on the error as ``exc.events`` so pipelined
        requests before the bad one can still be answered.
        """
        if self._error is not None:
            raise RemoteProtocolError(self._error.message, self._error.status)
        if self._eof and data:
            raise LocalProtocolError("receive_data called with data after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True
        events: list[Event] = []
        try:
            while True:
                event = self._next_event()
                if isinstance(event, _NeedData):
                    return events
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return events
        except RemoteProtocolError as exc:
            self._fail(exc)
            exc.events = events
            raise

    def _fail(self, exc: RemoteProtocolError) -> None:
        self.receive_state = ERROR
        self._error = exc
        self._buf.clear()

    def _transition(self, what: str) -> None:
        try:
            self.receive_state = _RECEIVE_TRANSITIONS[(self.receive_state, what)]
        except KeyError:
            raise RemoteProtocolError(
                f"unexpected {what} while reading {self.receive_state}") from None

    def _next_event(self) -> Event | _NeedData:
        if self.receive_state == CLOSED:
            return NEED_DATA
        if self.receive_state == IDLE:
            skip = _BLANK_LINES_RE.match(self._buf).end()  # type: ignore[union-attr]
            if skip:
                del self._buf[:skip]
            if not self._buf:
                if self._eof:
                    self._transition("eof")
                    return ConnectionClosed()
                return NEED_DATA
            self._transition("dollar" if self._buf[0] == 0x24 else "message")
            self._scanned = 0
        if self.receive_state == FRAME:
            return self._read_frame()
        if self.receive_state == HEAD:
            event = self._read_head()
            if event is not NEED_DATA or self.receive_state != BODY:
                return event
        return self._read_body()

    def _need_more(self) -> _NeedData:
        if self._eof:
            self._transition("eof")  # only IDLE may end; the table refuses the rest
        return NEED_DATA

    def _read_frame(self) -> InterleavedFrame | _NeedData:
        if len(self._buf) < _FRAME_HEADER.size:
            return self._need_more()
        _, channel, length = _FRAME_HEADER.unpack_from(self._buf)
        total = _FRAME_HEADER.size + length
        if total > self.max_frame_bytes:
            raise RemoteProtocolError(
                f"interleaved frame of {total} bytes is over {self.max_frame_bytes}")
        if len(self._buf) < total:
            return self._need_more()
        data = bytes(self._buf[_FRAME_HEADER.size:total])
        del self._buf[:total]
        self._transition("frame")
        return InterleavedFrame(channel, data)

    def _read_head(self) -> Request | Response | _NeedData:
        m = _HEAD_END_RE.search(self._buf, self._scanned)
        if m is None or m.end() > self.max_head_bytes:
            if len(self._buf) > self.max_head_bytes:
                raise RemoteProtocolError(
                    f"message head is over {self.max_head_bytes} bytes", 400)
            # The terminator is at most three bytes: keep two to rescan.
            self._scanned = max(0, len(self._buf) - 2)
            return self._need_more()
        head = bytes(self._buf[:m.start()])
        del self._buf[:m.end()]
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("message head is not UTF-8") from None
        lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
        if len(lines) - 1 > self.max_headers:
            raise RemoteProtocolError(f"{len(lines) - 1} header lines, over {self.max_headers}",
                                      400)
        try:
            headers = _parse_header_lines(lines[1:])
            lengths = headers.get_all("Content-Length")
            length = parse_content_length(lengths) if lengths else 0
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None
        except HeaderError as exc:
            raise RemoteProtocolError(str(exc), exc.status) from None
        if length > self.max_body_bytes:
            raise RemoteProtocolError(
                f"body of {length} bytes is over {self.max_body_bytes}", 413)
        self._pending = (lines[0], headers, length)
        if length:
            self._transition("head+body")
            return NEED_DATA
        self._transition("head")
        return self._build(b"")

    def _read_body(self) -> Request | Response | _NeedData:
        assert self._pending is not None
        length = self._pending[2]
        if len(self._buf) < length:
            return self._need_more()
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self._transition("body")
        return self._build(body)

    def _build(self, body: bytes) -> Request | Response:
        assert self._pending is not None
        start_line, headers, _ = self._pending
        self._pending = None
        try:
            if self.our_role == "server":
                return self._build_request(start_line, headers, body)
            return self._build_response(start_line, headers, body)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None

    @staticmethod
    def _build_request(line: str, headers: Headers, body: bytes) -> Request:
        parts = line.split(" ")
        if len(parts) != 3:
            if _STATUS_LINE_RE.fullmatch(line):
                raise RemoteProtocolError("a server does not accept responses")
            raise RemoteProtocolError(f"request line {line[:80]!r} is malformed")
        method, target, version = parts
        if version != RTSP_VERSION:
            if _VERSION_LIKE_RE.fullmatch(version):
                raise RemoteProtocolError(f"{version} is not supported", 505)
            raise RemoteProtocolError(f"request line {line[:80]!r} is malformed")
        if not headers.get_all("CSeq"):
            raise RemoteProtocolError(f"{method[:20]} request has no CSeq")
        return Request(method, target, headers, body, version)

    @staticmethod
    def _build_response(line: str, headers: Headers, body: bytes) -> Response:
        m = _STATUS_LINE_RE.fullmatch(line)
        if not m:
            raise RemoteProtocolError(f"status line {line[:80]!r} is malformed")
        if m.group(1) != RTSP_VERSION:
            raise RemoteProtocolError(f"{m.group(1)} is not supported", 505)
        return Response(int(m.group(2)), m.group(3) or "", headers, body, m.group(1))

    # ------------------------------------------------------------- send ---

    def send(self, event: Event) -> bytes:
        """The bytes that carry ``event`` to the peer.

        Content-Length is added from the body when the event has none.
        Raises ``LocalProtocolError`` if our role may not send this event
        or our side is already closed.
        """
        if self.send_closed:
            raise LocalProtocolError("send after ConnectionClosed")
        if not isinstance(event, _SENDABLE[self.our_role]):
            raise LocalProtocolError(f"a {self.our_role} cannot send {type(event).__name__}")
        if isinstance(event, ConnectionClosed):
            self.send_closed = True
            return b""
        if isinstance(event, InterleavedFrame):
            return _FRAME_HEADER.pack(0x24, event.channel, len(event.data)) + event.data
        if event.version != RTSP_VERSION:
            raise LocalProtocolError(f"kvod speaks {RTSP_VERSION}, not {event.version}")
        if isinstance(event, Request):
            start = f"{event.method} {event.target} {event.version}"
        else:
            start = f"{event.version} {event.status} {event.reason}".rstrip(" ")
        headers = event.headers
        if event.body and "Content-Length" not in headers:
            headers = headers.with_header("Content-Length", len(event.body))
        lines = [start, *(f"{name}: {value}" for name, value in headers), "", ""]
        return "\r\n".join(lines).encode("utf-8") + event.body

    def send_error(self, status: int) -> bytes:
        """The bytes of a bare error response, for the status a
        ``RemoteProtocolError`` carries (the bad request's CSeq is unknown)."""
        return self.send(Response(status))


def response_for(request: Request, status: int, headers: Iterable[tuple[str, str]] = (),
                 body: bytes = b"") -> Response:
    """A response to ``request`` carrying its CSeq, and its Session if it
    had one and ``headers`` do not set their own (a SETUP reply adds the
    timeout)."""
    extra = Headers(headers)
    if "CSeq" in extra:
        raise LocalProtocolError("response_for sets CSeq from the request")
    # echoed as the client wrote it ("02" stays "02"): some clients match
    # replies to requests by the header's text, not its number
    pairs = [("CSeq", request.headers.get("CSeq") or format_cseq(request.cseq))]
    session = request.headers.get("Session")
    if session is not None and "Session" not in extra:
        pairs.append(("Session", session))   # checked when the request was parsed
    return Response(status, None, Headers._checked((*pairs, *extra)), body)
