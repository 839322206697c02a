"""Data-path benchmark: CPU time per GiB sent, for every way kvod can send.

One file is sent as 1316-byte RTP packets (7 TS packets, RFC 2250),
unpaced, by each method: the user-space engine's strategies and, where
/dev/krtp answers the handshake, the kernel's krtpsendfile and krtpmsend.
The cost is the CPU time all CPUs spent while it ran, read from
/proc/stat (user, system, irq and softirq), so the kernel's pacing threads
and the network stack's softirqs count as much as the sender's own calls.

Sinks:

- ``loopback``: a UDP socket on 127.0.0.1 that nobody reads; the kernel
  drops what overflows its buffer, after the whole receive path.
- ``dummy``: a dummy (or, without that driver, an ifb) device, which
  frees every packet it is handed (a perfect NIC), with UDP segmentation done in software. The benchmark
  makes the device itself, so it needs root and a network namespace of its
  own (``unshare -n``); it refuses to run where other devices exist. The
  address it sends to (198.18.0.2, the benchmarking range) exists only
  inside that namespace.

    python3 -m rtpengine.bench_krtp [--size-mib 256] [--sink loopback|dummy]
                                        [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .hintfile import HintHeader, HintRecord, write_hint_file

CHUNK = 1316
GIB = 1 << 30
DUMMY = "kvodbench0"
DUMMY_NET = ("198.18.0.1/24", "198.18.0.2")


@dataclass(frozen=True)
class Result:
    method: str
    runs: int
    bytes: int
    cpu_s_per_gib: float        # median over the runs
    wall_s_per_gib: float
    packets: int
    copied_octets: Optional[int] = None     # krtp only: payload that was copied


def _busy_ticks() -> int:
    """Non-idle ticks of all CPUs since boot (guest time is in user already)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    return sum(vals[:8]) - vals[3] - vals[4]


def make_title(folder: str, size: int) -> tuple[str, str]:
    """A ``size``-byte media file and its hint file (1316-byte records)."""
    media = os.path.join(folder, "bench.media")
    with open(media, "wb") as f:
        block = os.urandom(1 << 20)
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    count = (size + CHUNK - 1) // CHUNK
    records = b"".join(HintRecord(i * CHUNK, min(CHUNK, size - i * CHUNK), i * 90, i * 1000,
                                  0, b"").pack() for i in range(count))
    hints = os.path.join(folder, "bench.hint")
    write_hint_file(hints, HintHeader(clock_rate=90000, payload_type=33,
                                      record_count=count, duration_ns=count * 1000), records)
    return media, hints


class _Sink:
    """Where the packets go: a connected UDP socket per stream."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._rx: Optional[socket.socket] = None
        if kind == "loopback":
            self._rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._rx.bind(("127.0.0.1", 0))
            self.address = self._rx.getsockname()
        elif kind == "dummy":
            _make_dummy()
            self.address = (DUMMY_NET[1], 5004)
        else:
            raise ValueError(f"unknown sink {kind!r} (loopback, dummy)")

    def sender(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.connect(self.address)
        return s

    def close(self) -> None:
        if self._rx:
            self._rx.close()


def _make_dummy() -> None:
    # asked of this namespace (sysfs shows the namespace it was mounted in)
    devices = {name for _, name in socket.if_nameindex()}
    if DUMMY in devices:
        return
    if devices - {"lo"}:
        raise SystemExit("the dummy sink wants a network namespace of its own "
                         "(run under `unshare -n`); this one has " + ", ".join(sorted(devices)))
    def ip(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)

    ip("link", "set", "lo", "up")
    # a dummy device, or where that driver is missing an ifb one: both free
    # what they are handed when nothing redirects to them
    made = ip("link", "add", DUMMY, "type", "dummy")
    if made.returncode:
        made = ip("link", "add", DUMMY, "type", "ifb")
    if made.returncode:
        raise SystemExit(f"cannot make a dummy or ifb device: {made.stderr.strip()}")
    for cmd in (["ip", "link", "set", DUMMY, "up"],
                ["ip", "addr", "add", DUMMY_NET[0], "dev", DUMMY],
                # segment UDP GSO batches in software, as a NIC without USO
                ["ethtool", "-K", DUMMY, "tx-udp-segmentation", "off"]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _engines() -> dict[str, Callable[[], object]]:
    """Every method available here: name -> a function making its engine."""
    makers: dict[str, Callable[[], object]] = {}
    try:
        from . import engine
        for name in engine.STRATEGIES:
            if name != "auto":
                makers[name] = (lambda n=name: engine.Engine(threads=1, strategy=n))
    except ImportError:
        pass
    from . import krtp
    ok, _ = krtp.available()
    if ok:
        for name in krtp.STRATEGIES:
            makers[name] = (lambda n=name: krtp.KrtpEngine(strategy=n))
    return makers


def _one_run(make_engine, sink: _Sink, media: str, hints: str, timeout: float):
    eng = make_engine()
    try:
        sock = sink.sender()
        with open(media, "rb") as m, open(hints, "rb") as h:
            stream = eng.open_stream(sock, m, h, ssrc=1, seq0=0, ts0=0)
        sock.close()
        ticks0, t0 = _busy_ticks(), time.monotonic()
        stream.play(unpaced=True)
        deadline = t0 + timeout
        while True:
            st = stream.stats()
            if st.state == "ended" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ticks1, t1 = _busy_ticks(), time.monotonic()
        if st.state != "ended":
            raise RuntimeError(f"not done after {timeout} s: {st}")
        stream.close()
    finally:
        eng.close()
    return (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK"), t1 - t0, st


def run(size: int = 256 << 20, sink: str = "loopback", repeat: int = 3,
        methods: Optional[list[str]] = None, folder: Optional[str] = None,
        timeout: float = 600, progress: Callable[[str], None] = lambda s: None
        ) -> list[Result]:
    """Measure every method (or ``methods``); returns one result each."""
    makers = _engines()
    wanted = methods or list(makers)
    unknown = [m for m in wanted if m not in makers]
    if unknown:
        raise SystemExit(f"not available here: {', '.join(unknown)}; "
                         f"available: {', '.join(makers)}")
    base = folder or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    results = []
    with tempfile.TemporaryDirectory(prefix="kvod-bench-", dir=base) as tmp:
        media, hints = make_title(tmp, size)
        snk = _Sink(sink)
        try:
            for name in wanted:
                cpu, wall = [], []
                for i in range(repeat):
                    c, w, st = _one_run(makers[name], snk, media, hints, timeout)
                    cpu.append(c)
                    wall.append(w)
                    progress(f"{name} run {i + 1}: {c:.2f} s CPU, {w:.2f} s")
                results.append(Result(
                    name, repeat, size, statistics.median(cpu) * GIB / size,
                    statistics.median(wall) * GIB / size, st.packets_sent,
                    getattr(st, "copied_octets", None)))
        finally:
            snk.close()
    return results


def table(results: list[Result]) -> str:
    """Results as text, with each method's cost relative to the cheapest."""
    best = min(r.cpu_s_per_gib for r in results) or 1e-9
    lines = [f"{'method':<14}{'CPU s/GiB':>11}{'wall s/GiB':>12}{'x cheapest':>12}"]
    for r in sorted(results, key=lambda r: r.cpu_s_per_gib):
        lines.append(f"{r.method:<14}{r.cpu_s_per_gib:>11.2f}{r.wall_s_per_gib:>12.2f}"
                     f"{r.cpu_s_per_gib / best:>12.2f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m rtpengine.bench_krtp",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--sink", choices=["loopback", "dummy"], default="loopback")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--method", action="append", dest="methods")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = run(args.size_mib << 20, args.sink, args.repeat, args.methods,
                  progress=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
