"""RTSP 1.0 (RFC 2326) for kvod, sans-IO: events, the connection, header values."""

from appliance.rtsp.connection import RTSPConnection, response_for
from appliance.rtsp.errors import (CSeqError, HeaderError, LocalProtocolError,
                                   RangeError, RemoteProtocolError, RTSPError,
                                   SessionHeaderError, TransportError, reason_phrase)
from appliance.rtsp.events import (NEED_DATA, ConnectionClosed, Event, Headers,
                                   InterleavedFrame, Request, Response)
from appliance.rtsp.headers import (NptRange, TransportSpec, format_cseq, format_range,
                                    format_rtp_info, format_session, format_transport,
                                    parse_content_length, parse_cseq, parse_range,
                                    parse_rtp_info, parse_session, parse_transport)

__all__ = [
    "NEED_DATA", "CSeqError", "ConnectionClosed", "Event", "HeaderError", "Headers",
    "InterleavedFrame", "LocalProtocolError", "NptRange", "RTSPConnection", "RTSPError",
    "RangeError", "RemoteProtocolError", "Request", "Response", "SessionHeaderError",
    "TransportError", "TransportSpec", "format_cseq", "format_range", "format_rtp_info",
    "format_session", "format_transport", "parse_content_length", "parse_cseq",
    "parse_range", "parse_rtp_info", "parse_session", "parse_transport", "reason_phrase",
    "response_for",
]
