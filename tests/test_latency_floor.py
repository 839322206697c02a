"""The no-work server under the latency bench answers as an RTSP server
must for the bench's client to go on."""

from __future__ import annotations

import socket

from appliance.bench.latency_floor import reply
from appliance.rtsp import RTSPConnection, Response


def _parse(data: bytes) -> Response:
    conn = RTSPConnection(our_role="client")
    events = conn.receive_data(data)
    assert len(events) == 1 and isinstance(events[0], Response), events
    return events[0]


def test_a_session_is_answered_and_play_sends_one_packet_first():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        describe = _parse(reply(b"DESCRIBE rtsp://h/t RTSP/1.0\r\nCSeq: 7", sender, "127.0.0.1"))
        assert describe.status == 200 and describe.headers.get("CSeq") == "7"
        assert b"m=video 0 RTP/AVP 33" in describe.body
        setup = _parse(reply(b"SETUP rtsp://h/t/trackID=0 RTSP/1.0\r\ncseq: 8\r\n"
                             b"Transport: RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1),
                             sender, "127.0.0.1"))
        assert f"client_port={port}-{port + 1}" in setup.headers.get("Transport")
        assert setup.headers.get("Session").startswith("F100D")
        play = _parse(reply(b"PLAY rtsp://h/t/ RTSP/1.0\r\nCSeq: 9", sender, "127.0.0.1"))
        assert play.status == 200 and play.headers.get("CSeq") == "9"
        receiver.settimeout(2)
        packet = receiver.recv(2048)
        assert packet[:2] == b"\x80\x21" and len(packet) == 12 + 7 * 188
    finally:
        sender.close()
        receiver.close()
