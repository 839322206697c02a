"""The fuzz campaign at test size (``make fuzz`` runs it long), and the
parsers' time against input length.

Each target runs on a few thousand mutated inputs and a hypothesis draw,
the session state machine on some sequences; any fault fails the test
with the input. The linear-time checks compare CPU time per call of an
input against one ten times longer, built to hurt a quadratic parser
(repeated delimiters, quotes, byte-at-a-time feeding): a linear parser
stays near 10x, a quadratic one near 100x, so a bound of 35x fails the
second without being a flaky timing test.
"""

from __future__ import annotations

import logging
import time

import pytest

from appliance.auth.errors import AuthHeaderError
from appliance.auth.header import parse_authorization
from appliance.rtsp import RemoteProtocolError, RTSPConnection, parse_transport
from appliance.rtsp.errors import TransportError
from rtpengine.rtcp import RtcpError, SdesChunk, SourceDescription, build_receiver_report
from rtpengine.rtcp import parse_compound
from tests.fuzz.properties import run_hypothesis, run_machine
from tests.fuzz.run import campaign, run_target
from tests.fuzz.targets import targets

TARGETS = {t.name: t for t in targets()}


@pytest.fixture(autouse=True)
def quiet_gate():
    # the gate logs each refusal; thousands of lines say nothing here
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_find_no_fault(name):
    result = run_target(TARGETS[name], 3000, seed=12)
    assert result.inputs == 3000
    assert not result.faults, result.faults[0][1] + repr(result.faults[0][0][:300])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_hypothesis_finds_no_fault(name):
    assert run_hypothesis(TARGETS[name], 150) >= 100


@pytest.mark.parametrize("gated", [False, True], ids=["open", "behind-auth"])
def test_session_state_machine(gated):
    assert run_machine(40, steps=25, gated=gated) > 100


def test_campaign_counts_and_prints_every_source(capsys):
    results = campaign(900, 5, 2, seed=3)
    out = capsys.readouterr().out
    names = {r.name for r in results}
    assert set(TARGETS) | {"session_walk", "session_machine", "session_auth"} <= names
    mutated = sum(r.inputs for r in results[:len(TARGETS)])
    assert mutated == 900 - 900 * 2 // (sum(t.weight for t in TARGETS.values()) + 2)
    total = sum(r.inputs for r in results)
    assert out.splitlines()[-1].split()[:2] == ["total", str(total)]


def test_a_target_that_breaks_its_invariant_is_reported():
    from dataclasses import replace

    def broken(data: bytes) -> None:
        if b";" in data:
            raise KeyError("a bug")

    result = run_target(replace(TARGETS["transport"], check=broken), 200, seed=1)
    assert result.faults and "KeyError: 'a bug'" in result.faults[0][1]


# -- time against length -----------------------------------------------------


def _cpu_per_call(fn, arg, allowed=()) -> float:
    """Best of three: CPU seconds per call of ``fn(arg)``, over at least 20 ms."""
    best = float("inf")
    for _ in range(3):
        calls, started = 0, time.process_time()
        while True:
            try:
                fn(arg)
            except allowed:
                pass
            calls += 1
            spent = time.process_time() - started
            if spent >= 0.02:
                break
        best = min(best, spent / calls)
    return best


def _ratio(fn, make, n: int, allowed=()) -> float:
    return _cpu_per_call(fn, make(10 * n), allowed) / _cpu_per_call(fn, make(n), allowed)


LINEAR = 35


@pytest.mark.parametrize("make", [
    lambda n: "Digest a=1" + ", " * n,
    lambda n: 'Digest a="' + '\\"' * n + '"',
    lambda n: 'Digest a="' + "x" * n,              # unterminated: scanned to the end
    lambda n: "Basic " + "QUFB" * (n // 4),
    lambda n: "Digest " + "a" * n + "=b",
], ids=["empty-elements", "escapes", "unterminated", "token68", "long-name"])
def test_authorization_parser_is_linear(make):
    assert len(make(400)) <= 4096
    assert _ratio(parse_authorization, make, 190, AuthHeaderError) < LINEAR


@pytest.mark.parametrize("make", [
    lambda n: "RTP/AVP;unicast" + ";" * n,
    lambda n: 'RTP/AVP;unicast;x="' + "a" * n + '"',
    lambda n: "RTP/AVP;unicast;client_port=5000-5001" + "," * n,
    lambda n: 'RTP/AVP;x="' + '"' * n,
], ids=["semicolons", "quoted", "commas", "quotes"])
def test_transport_parser_is_linear(make):
    assert _ratio(parse_transport, make, 380, TransportError) < LINEAR


def _feed_bytewise(data: bytes) -> None:
    conn = RTSPConnection("server")
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1])


@pytest.mark.parametrize("make", [
    lambda n: b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + b"a" * n + b"\r\n\r\n",
    lambda n: b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + b"X: a\r\n" * (n // 6) + b"\r\n",
    lambda n: b"\r\n" * (n // 2) + b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
], ids=["long-header", "many-headers", "blank-lines"])
def test_rtsp_connection_fed_byte_by_byte_is_linear(make):
    assert len(make(7000)) < 8192
    # per byte fed, the cost must not grow with what is buffered
    assert _ratio(_feed_bytewise, make, 700, RemoteProtocolError) < LINEAR


def test_rtsp_connection_fed_whole_is_linear_in_messages():
    message = b"GET_PARAMETER rtsp://h/x RTSP/1.0\r\nCSeq: 2\r\nSession: 12345678\r\n\r\n"
    assert _ratio(lambda d: RTSPConnection("server").receive_data(d),
                  lambda n: message * n, 40) < LINEAR


def test_rtcp_parser_is_linear():
    def compound(n: int) -> bytes:
        sdes = SourceDescription((SdesChunk(7, tuple((2, b"viewer") for _ in range(n))),))
        return build_receiver_report(1) + sdes.pack()
    assert len(compound(1000)) < 65535
    assert _ratio(parse_compound, compound, 100, RtcpError) < LINEAR


# -- what the campaign found, kept -------------------------------------------


@pytest.mark.parametrize("data", [
    b"DESCRIBE rtsp://127.0.0.1:8554/x RTSP/1.0\r\nAccept: application/sdp\r\nCSeq: 02\r\n\r\n",
    b"PAUSE rtsp://127.0.0.1:8554/x/ RTSP/1.0\r\nCSeq:07\r\nSession: 12345678\r\n\r\n",
    b"SETWP rtsp://127.0.0.1:8554/x/trackID=0 RTSP/1.0\r\nCSeq:  0003 \r\n\r\n",
])
def test_cseq_is_echoed_as_the_client_wrote_it(data):
    # found by the campaign (rtsp_server target): "CSeq: 02" was answered "CSeq: 2"
    TARGETS["rtsp_server"].check(data)
    (request,) = RTSPConnection("server").receive_data(data)
    from appliance.rtsp import response_for
    assert response_for(request, 200).headers.get("CSeq") == request.headers.get("CSeq")


def test_a_target_that_is_not_a_uri_is_a_bad_request():
    # found by the campaign (seed 2, rtsp_server target): urlsplit raised
    # ValueError in the session layer, answered 500 with a traceback logged
    data = (b"DESCRIBE rtsp://127.0.0.1:8554[/x RTSP/1.0\r\nCSeq: 3\r\n"
            b"Accept: application/sdp\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        RTSPConnection("server").receive_data(data)
    assert info.value.status == 400
    TARGETS["rtsp_server"].check(data)
    TARGETS["rtsp_server"].check(data + b"\r\n")   # the gated harness too
    from appliance.auth import AccessRules
    assert AccessRules.parse(["/ open"]).rule_for("rtsp://h[/x").access == "any"
