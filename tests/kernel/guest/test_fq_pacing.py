"""Kernel pacing under the fq qdisc, in a real kernel (the build machine's
own has no fq): the user-space engine hands a kernel-paced stream's
packets over ahead of time with SO_TXTIME and fq holds each until its
time. Runs in the QEMU guest (tests/test_krtp_kernel.py), fq on lo.

The robust check under software emulation is "never early": arrival
stamps (SO_TIMESTAMPNS) against the schedule. The same stream paced by
the engine with an equally large user lookahead arrives up to that
lookahead early, which shows the check can fail.
"""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

from rtpengine.engine import Engine, now_ns
from rtpengine.qdisc import FqDetector
from tests.helpers.engine import MS, Receiver, chunk_records, expected, open_stream, wait_state
from tests.helpers.engine import write_hints as write_engine_hints

LOOKAHEAD = 200 * MS
GAP = 3 * MS
COUNT = 120


def tc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def fq_on_lo():
    """fq as lo's root qdisc for the test, removed after it."""
    r = tc("qdisc", "replace", "dev", "lo", "root", "fq")
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        r = tc("qdisc", "del", "dev", "lo", "root")
        assert r.returncode == 0, r.stderr


@pytest.fixture
def paced_title(tmp_path):
    media = tmp_path / "paced.bin"
    media.write_bytes(os.urandom(COUNT * 700))
    hints = write_engine_hints(tmp_path / "paced.hint",
                               chunk_records(COUNT * 700, 0, chunk=700, gap_ns=GAP))
    return str(media), hints


def test_detection_follows_the_root_qdisc():
    before = FqDetector(ttl=0).detect("127.0.0.1")
    assert not before.fq and before.interface == "lo", before
    r = tc("qdisc", "replace", "dev", "lo", "root", "fq")
    assert r.returncode == 0, r.stderr
    try:
        during = FqDetector(ttl=0).detect("127.0.0.1")
        assert during.fq and during.interface == "lo", during
        assert "root qdisc is fq" in during.reason
    finally:
        assert tc("qdisc", "del", "dev", "lo", "root").returncode == 0
    after = FqDetector(ttl=0).detect("127.0.0.1")
    assert not after.fq, after


def run_paced(title, pacing: str, engine_kw: dict):
    """Play the title paced; returns (packets in sequence order, how early
    each arrived in ns (positive: before its time), the stream's stats, its
    pacing reason)."""
    media, hints = title
    rx = Receiver(rcvbuf=16 << 20)
    kw = dict(ssrc=0x1234, seq0=100, ts0=5)
    try:
        with Engine(threads=1, strategy="gso", **engine_kw) as e:
            stream = open_stream(e, rx.sender(), media, hints, pacing=pacing, **kw)
            reason = stream.pacing_reason
            start = now_ns() + 300 * MS
            stream.play(at_ns=start)
            rx.collect(COUNT, timeout=60)
            st = wait_state(stream, "ended", timeout=60)
            rx.settle(0.3)
        # fq may release two packets from different CPUs (the sender's, its
        # timer's), and loopback then delivers each CPU's backlog on its own:
        # arrival order is not wire order, so packets are matched by sequence
        seq = [(struct.unpack_from("!H", p, 2)[0] - kw["seq0"]) & 0xFFFF for p in rx.packets]
        arrived = sorted(zip(seq, rx.packets, rx.times))
        want = expected(hints, media, **kw)
        assert [p for _, p, _ in arrived] == want, (
            f"{len(seq)} of {len(want)} packets, missing "
            f"{sorted(set(range(len(want))) - set(seq))[:10]}, repeated "
            f"{sorted(k for k in set(seq) if seq.count(k) > 1)[:10]}, stats {st}")
        early = [start + k * GAP - t for k, _, t in arrived]
        return [p for _, p, _ in arrived], early, st, reason
    finally:
        rx.close()


def test_kernel_paced_stream_is_never_early(fq_on_lo, paced_title):
    _, early, st, reason = run_paced(paced_title, "auto",
                                     dict(kernel_lookahead_ns=LOOKAHEAD))
    assert st.pacing == "kernel" and "fq" in reason, (st, reason)
    # handed over up to 200 ms ahead, released by fq on time
    assert max(early) <= 2 * MS, sorted(early)[-5:]
    assert st.packets_sent == COUNT and st.send_errors == 0


def test_engine_paced_stream_with_the_same_lookahead_is_early(fq_on_lo, paced_title):
    """The control: the check above can fail."""
    _, early, st, _ = run_paced(paced_title, "engine", dict(lookahead_ns=LOOKAHEAD))
    assert st.pacing == "engine"
    assert max(early) >= 50 * MS, sorted(early)[-5:]
