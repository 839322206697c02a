"""fq detection (rtpengine.qdisc): the rtnetlink parsers on crafted and
random bytes, the verdict on qdisc trees, the cache, and the live query on
this machine (lo has no fq here)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtpengine import qdisc
from rtpengine.qdisc import (FqDetector, NetlinkError, Qdisc, fq_verdict, parse_messages,
                             parse_qdiscs, parse_route_oif)

ROOT = qdisc.TC_H_ROOT
SEQ = 77


def nlmsg(kind: int, payload: bytes, seq: int = SEQ, flags: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload
    return raw + b"\0" * (-len(raw) % 4)


def rtattr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def route(oif: int | None, seq: int = SEQ) -> bytes:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 0, 0, 1, 0)
    body += rtattr(qdisc.RTA_DST, bytes([127, 0, 0, 1]))
    if oif is not None:
        body += rtattr(qdisc.RTA_OIF, struct.pack("=i", oif))
    return nlmsg(qdisc.RTM_NEWROUTE, body, seq)


def qd(ifindex: int, handle: int, parent: int, kind: str | None, seq: int = SEQ) -> bytes:
    body = struct.pack("=BBHiIII", 0, 0, 0, ifindex, handle, parent, 1)
    if kind is not None:
        body += rtattr(qdisc.TCA_KIND, kind.encode() + b"\0")
    body += rtattr(2, b"\x01\x02\x03\x04\x05")  # TCA_OPTIONS-like: ignored
    return nlmsg(qdisc.RTM_NEWQDISC, body, seq, qdisc.NLM_F_MULTI)


def done(seq: int = SEQ) -> bytes:
    return nlmsg(qdisc.NLMSG_DONE, struct.pack("=i", 0), seq, qdisc.NLM_F_MULTI)


def error(err: int, seq: int = SEQ) -> bytes:
    return nlmsg(qdisc.NLMSG_ERROR, struct.pack("=i", -err) + b"\0" * 16, seq)


# --- parsers on crafted answers -------------------------------------------------

def test_route_answer_gives_the_output_interface():
    assert parse_route_oif(route(3), SEQ) == 3
    # another request's answer first, then ours
    assert parse_route_oif(route(9, seq=1) + route(4), SEQ) == 4


@pytest.mark.parametrize("data, words", [
    (route(None), "no output interface"),
    (route(0), "interface index 0"),
    (error(errno.ENETUNREACH), "unreachable"),
    (b"", "no answer"),
    (route(2, seq=SEQ + 1), "no answer"),
    (route(2)[:20], "does not fit"),
    (route(2)[:10], "truncated netlink header"),
    (nlmsg(qdisc.RTM_NEWROUTE, b"\0" * 5), "truncated route"),
    (nlmsg(qdisc.RTM_NEWROUTE, b"\0" * 12 + struct.pack("=HH", 200, 4)), "attribute length"),
    (nlmsg(qdisc.RTM_NEWROUTE, b"\0" * 12 + struct.pack("=HH", 2, 4)), "attribute length"),
    (nlmsg(qdisc.RTM_NEWROUTE, b"\0" * 12 + struct.pack("=HH", 6, 4) + b"\1\0"), "truncated RTA_OIF"),
    (nlmsg(qdisc.NLMSG_ERROR, b"\1"), "truncated netlink error"),
    (struct.pack("=IHHII", 8, 24, 0, SEQ, 0) + b"\0" * 8, "does not fit"),
])
def test_odd_route_answers_are_errors(data, words):
    with pytest.raises(NetlinkError, match=words):
        parse_route_oif(data, SEQ)


def test_qdisc_dump_chunks():
    found, finished = parse_qdiscs(qd(1, 0, ROOT, "noqueue") + qd(2, 0x10000, ROOT, "fq"), SEQ)
    assert not finished
    assert found == [Qdisc(1, 0, ROOT, "noqueue"), Qdisc(2, 0x10000, ROOT, "fq")]
    found, finished = parse_qdiscs(qd(3, 0, ROOT, None) + done(), SEQ)
    assert finished and found == [Qdisc(3, 0, ROOT, "")]
    # other sequence numbers are not ours; an error is
    assert parse_qdiscs(qd(1, 0, ROOT, "fq", seq=5) + done(seq=5), SEQ) == ([], False)
    with pytest.raises(NetlinkError, match="qdisc dump failed"):
        parse_qdiscs(error(errno.EPERM), SEQ)
    with pytest.raises(NetlinkError, match="truncated qdisc"):
        parse_qdiscs(nlmsg(qdisc.RTM_NEWQDISC, b"\0" * 7), SEQ)


def test_messages_walk_aligned_lengths():
    data = nlmsg(qdisc.NLMSG_DONE, b"\1\2\3") + nlmsg(qdisc.NLMSG_DONE, b"")
    assert [(k, p) for k, _f, _s, p in parse_messages(data)] == [(3, b"\1\2\3"), (3, b"")]


# hypothesis, h11-style: on any bytes the parsers answer or raise their own error
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_never_crash_on_random_bytes(data):
    for parse in (lambda d: parse_route_oif(d, SEQ), lambda d: parse_qdiscs(d, SEQ),
                  lambda d: list(parse_messages(d))):
        try:
            parse(data)
        except NetlinkError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 5), st.integers(0, 2**32 - 1),
                          st.sampled_from([ROOT, 0x10001, 0x10002, 0x20001, 0xFFFFFFF1]),
                          st.sampled_from(["fq", "mq", "mqprio", "pfifo_fast", "", None])),
                max_size=8),
       st.integers(0, 400), st.binary(max_size=4))
def test_mangled_dumps_never_crash(rows, cut, junk):
    """Real-looking dumps, cut anywhere and with junk after: an answer or
    NetlinkError, and any verdict is a bool with a reason."""
    data = b"".join(qd(i, h, p, k) for i, h, p, k in rows) + done()
    data = data[:cut] + junk
    try:
        found, _ = parse_qdiscs(data, SEQ)
    except NetlinkError:
        return
    fq, why = fq_verdict(found, 1)
    assert isinstance(fq, bool) and why


# --- the verdict ------------------------------------------------------------------

@pytest.mark.parametrize("tree, fq, words", [
    ([Qdisc(1, 0x10000, ROOT, "fq")], True, "root qdisc is fq"),
    ([Qdisc(1, 0, ROOT, "noqueue")], False, "noqueue, not fq"),
    ([Qdisc(2, 0x10000, ROOT, "fq")], False, "0 root qdiscs"),
    ([], False, "0 root qdiscs"),
    ([Qdisc(1, 0, ROOT, "fq"), Qdisc(1, 0, ROOT, "fq")], False, "2 root qdiscs"),
    ([Qdisc(1, 0x80010000, ROOT, "mq")] + [Qdisc(1, 0, 0x80010000 + i, "fq") for i in (1, 2, 3)],
     True, "every one of its 3 children fq"),
    ([Qdisc(1, 0x80010000, ROOT, "mq"), Qdisc(1, 0, 0x80010001, "fq"),
      Qdisc(1, 0, 0x80010002, "pfifo_fast")], False, "non-fq children (pfifo_fast)"),
    ([Qdisc(1, 0x80010000, ROOT, "mqprio")], False, "has no child qdiscs"),
    # ingress/clsact hang elsewhere; another interface's children do not count
    ([Qdisc(1, 0x80010000, ROOT, "mq"), Qdisc(1, 0, 0x80010001, "fq"),
      Qdisc(1, 0xFFFF0000, 0xFFFFFFF1, "ingress"), Qdisc(2, 0, 0x80010001, "pfifo")],
     True, "children fq"),
    ([Qdisc(1, 0, ROOT, "mq"), Qdisc(1, 0, 0x1, "fq")], False, "has no child qdiscs"),
    ([Qdisc(1, 0, ROOT, "")], False, "(no kind)"),
])
def test_verdict(tree, fq, words):
    got, why = fq_verdict(tree, 1)
    assert got is fq and words in why, why


# --- the detector: cache and failures ----------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_cached_per_interface_for_a_few_seconds():
    clock, dumps = FakeClock(), []
    trees = [[Qdisc(1, 0, ROOT, "noqueue")], [Qdisc(1, 0x10000, ROOT, "fq")]]

    def dump():
        dumps.append(clock.now)
        return trees[min(len(dumps) - 1, 1)]

    det = FqDetector(ttl=5.0, clock=clock, oif=lambda addr: 1, qdiscs=dump)
    assert not det.detect("127.0.0.1").fq
    clock.now += 4.9
    assert not det.detect("127.0.0.2").fq and len(dumps) == 1   # cached
    clock.now += 0.2
    answer = det.detect("127.0.0.1")
    assert answer.fq and answer.ifindex == 1 and len(dumps) == 2


def test_routes_are_cached_per_address_for_a_few_seconds_and_bounded():
    clock, asked = FakeClock(), []

    def oif(address):
        asked.append(address)
        return 1

    det = FqDetector(ttl=5.0, clock=clock, oif=oif, qdiscs=lambda: [], max_routes=2)
    det.detect("127.0.0.1")
    det.detect("127.0.0.1")
    assert asked == ["127.0.0.1"]                   # the second came from memory
    clock.now += 5.1
    det.detect("127.0.0.1")
    assert asked == ["127.0.0.1"] * 2               # stale: asked again
    det.detect("127.0.0.2")
    det.detect("127.0.0.3")                         # past max_routes: starts empty
    det.detect("127.0.0.1")
    assert asked[-3:] == ["127.0.0.2", "127.0.0.3", "127.0.0.1"]


def test_a_failed_route_lookup_is_not_cached():
    answers = iter([NetlinkError("no route"), 1])

    def oif(address):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    det = FqDetector(oif=oif, qdiscs=lambda: [])
    assert "no egress interface" in det.detect("10.0.0.1").reason
    assert det.detect("10.0.0.1").ifindex == 1


@pytest.mark.parametrize("oif, dump, words", [
    (lambda a: (_ for _ in ()).throw(NetlinkError("route lookup failed: x")), None,
     "no egress interface for 10.0.0.1: route lookup failed"),
    (lambda a: (_ for _ in ()).throw(PermissionError(errno.EPERM, "no")), None,
     "no egress interface"),
    (lambda a: 1, lambda: (_ for _ in ()).throw(NetlinkError("cut short")), "qdiscs unknown: cut short"),
    (lambda a: 1, lambda: (_ for _ in ()).throw(TimeoutError("timed out")), "qdiscs unknown"),
])
def test_failures_are_answers(oif, dump, words):
    det = FqDetector(oif=oif, qdiscs=dump or (lambda: []))
    answer = det.detect("10.0.0.1")
    assert not answer.fq and words in answer.reason, answer


# --- live, on this machine ------------------------------------------------------------

def test_live_loopback_has_no_fq_here():
    """PLATFORM.md: no fq qdisc on this machine; lo is noqueue."""
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        answer = FqDetector().detect(addr)
        assert not answer.fq and answer.interface == "lo", answer
        assert "not fq" in answer.reason
    assert qdisc.query_oif("127.0.0.1") == socket.if_nametoindex("lo")
    kinds = {q.kind for q in qdisc.query_qdiscs() if q.ifindex == socket.if_nametoindex("lo")}
    assert "fq" not in kinds


def test_live_bad_addresses_are_not_fq():
    assert "no egress interface" in FqDetector().detect("not-an-address").reason
