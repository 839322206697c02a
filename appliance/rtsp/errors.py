"""RTSP errors and the RFC 2326 status table.

The errors say whose fault a problem is and what to answer: a
``LocalProtocolError`` is ours (a bad event we tried to build or send), a
``RemoteProtocolError`` is the peer's and carries the status to reply with.
Header parsers raise a ``HeaderError`` subclass that also carries the status
(461 for a bad Transport, 457 for a bad Range ...), so the session layer can
answer without a table of its own.
"""

from __future__ import annotations

# RFC 2326 section 7.1.1.
_REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Time-out",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    452: "Conference Not Found",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    458: "Parameter Is Read-Only",
    459: "Aggregate operation not allowed",
    460: "Only aggregate operation allowed",
    461: "Unsupported transport",
    462: "Destination unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version not supported",
    551: "Option not supported",
}

_CLASS_REASONS = {1: "Informational", 2: "Success", 3: "Redirection",
                  4: "Client Error", 5: "Server Error"}


def reason_phrase(status: int) -> str:
    """The RFC 2326 reason phrase for ``status``.

    An extension code not in the table gets the generic name of its class,
    so a response can always be built.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status {status} is not a three-digit code")
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


class RTSPError(Exception):
    """Base class of every error this package raises."""


class LocalProtocolError(RTSPError, ValueError):
    """We tried to build or send something RTSP does not allow."""


class RemoteProtocolError(RTSPError):
    """The peer sent something RTSP does not allow.

    ``status`` is the response to send before closing, e.g. 400, 413, 505.
    ``events`` holds what the same ``receive_data`` call completed before
    the error, so pipelined requests ahead of a bad one can be answered.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.events: list[object] = []

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.message!r}, status={self.status})"


class HeaderError(RTSPError, ValueError):
    """A header value that does not parse; ``status`` is the answer to send."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class TransportError(HeaderError):
    """A Transport header we cannot use (answer 461 Unsupported transport)."""

    status = 461


class RangeError(HeaderError):
    """A Range header we cannot use (answer 457 Invalid Range)."""

    status = 457


class SessionHeaderError(HeaderError):
    """A Session header that cannot name any session we issued (answer 454)."""

    status = 454


class CSeqError(HeaderError):
    """A CSeq header that is not a sequence number (answer 400)."""

    status = 400
