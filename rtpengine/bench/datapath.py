"""``kvod bench datapath``: the research's data-path comparison, rerun.

Halvorsen, Dalseng and Griwodz ("Assessment of Linux' Data Path
Implementations for Download and Streaming") measured the CPU cost of
moving stored media to the network with RTP headers through Linux's data
paths. This sends one title unpaced through every engine strategy in turn,
in one run, to the same sink, and reports per strategy: CPU seconds per GiB
(getrusage user + system of this process, which includes the kernel's work
on the send path), packets per second, system calls per GiB, and the ratios
to ``read_writev`` and ``rtp_sendfile`` measured side by side. A bare C loop
doing the same GSO sends (``bench/bare_gso.c``, compiled now into
``build/``) is the floor the engine is held against.

Where the krtp module answers on /dev/krtp, its two calls run too
(``krtpsendfile``, ``krtpmsend``). Their packets are sent by the module's
kernel threads, so their CPU is this process's plus those threads' (from
/proc: ``krtp/N``), the same work getrusage counts for a user-space
strategy's own threads; they make no system call on the data path after
PLAY (``kernel_send_calls`` counts the module's socket calls).

Sinks: ``loopback`` (a socket on 127.0.0.1 that never reads: the kernel
also delivers each packet to it and drops it) or ``nic`` (an ``ifb`` device
in a private network namespace, which frees every packet: a perfect NIC;
its UDP segmentation offload off by default, so GSO pays for software
segmentation).
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import time
from contextlib import ExitStack
from typing import Callable, Optional

from rtpengine import krtp
from rtpengine.bench.media import cache_dir
from rtpengine.engine import STRATEGIES, Engine
from rtpengine.hintfile import HEADER_SIZE, RECORD, HintHeader

GIB = 1 << 30
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BARE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_gso.c")
# in the research's order, then the modern ones
ORDER = ["read_send_rtp", "read_writev", "mmap_writev", "rtp_sendfile",
         "sendfile_more", "sendmmsg", "gso", "gso_zerocopy", "uring_gso"]
# The research's own figures, as ratios of CPU use to its rtp_sendfile.
# Only krtpsendfile's is known to us (0.73x: the kernel engine that adds RTP
# headers itself, DESIGN.md: "about 27% against the best stock mechanism");
# the paper's per-mechanism table was not available here, so every other
# strategy prints "n/a" rather than a made-up number.
RESEARCH_VS_RTP_SENDFILE = {"krtpsendfile": 0.73}
Progress = Optional[Callable[[float], None]]


def parse_size(text: str) -> int:
    """``1GiB``, ``512MiB``, ``64M``, ``1000000`` -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    return int(float(t.rstrip("KMGT")) * scale)


def make_media(size: int) -> str:
    """A file of ``size`` random bytes in the benchmark cache, made once."""
    path = os.path.join(cache_dir(), f"datapath-{size}.bin")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        left = size
        block = os.urandom(1 << 20)
        while left:
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    os.replace(tmp, path)
    return path


def make_hints(media: str, payload: int, path: str) -> int:
    """Unpaced hint records cutting ``media`` into ``payload``-byte
    packets (the last shorter); returns the record count."""
    size = os.path.getsize(media)
    n = -(-size // payload)
    body = bytearray(n * RECORD.size)
    pack = RECORD.pack_into
    for i in range(n):
        off = i * payload
        pack(body, i * RECORD.size, off, min(payload, size - off), 0, 0, 0, 0, b"")
    header = HintHeader(clock_rate=90000, payload_type=33, record_count=n,
                        duration_ns=0, blob_offset=0, blob_size=0)
    with open(path, "wb") as f:
        f.write(header.pack())
        f.write(body)
    assert os.path.getsize(path) == HEADER_SIZE + n * RECORD.size
    return n


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _LoopbackSink:
    """A 127.0.0.1 socket nobody reads: the kernel queues a little, then drops."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.rx.bind(("127.0.0.1", 0))
        self.dest = self.rx.getsockname()
        self.name = None

    def socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.dest)
        return s

    def close(self) -> None:
        self.rx.close()


def krtp_strategies() -> list[str]:
    """The krtp calls this machine can run (none without the module)."""
    return list(krtp.STRATEGIES) if krtp.available()[0] else []


def _krtp_threads_cpu() -> float:
    """CPU seconds of the krtp module's pacing threads (kernel threads krtp/N)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith("krtp/"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])     # utime, stime
    return total / tick


def _send_all(stream, nrec: int, progress: Progress):
    """Play ``stream`` unpaced until it stops; its last stats."""
    stream.play(unpaced=True)
    while True:
        st = stream.stats()
        if st.state != "playing":
            return st
        if progress:
            progress(st.next_record / nrec)
        time.sleep(0.005)


def _check_sent(what: str, st, nrec: int) -> None:
    if st.packets_sent != nrec:
        raise RuntimeError(f"{what}: sent {st.packets_sent} of {nrec} packets "
                           f"({st.packets_dropped} dropped, errno {st.last_errno})")


def run_krtp(call: str, media: str, hints: str, nrec: int, sink,
             progress: Progress = None) -> dict:
    """Send the whole title once through the module's ``call``; its figures."""
    size = os.path.getsize(media)
    with krtp.KrtpEngine(strategy=call) as engine, open(media, "rb") as m, open(hints, "rb") as h:
        sock = sink.socket()
        stream = engine.open_stream(sock, m, h, ssrc=1, seq0=0, ts0=0)
        sock.close()
        cpu0, k0, t0 = _cpu(), _krtp_threads_cpu(), time.monotonic()
        st = _send_all(stream, nrec, progress)
        wall = time.monotonic() - t0
        cpu = _cpu() - cpu0 + _krtp_threads_cpu() - k0
    _check_sent(call, st, nrec)
    gib = size / GIB
    return {"strategy": call, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
            "packets": st.packets_sent, "syscalls": 0, "kernel_send_calls": st.syscalls,
            "cpu_s_per_gib": round(cpu / gib, 4),
            "packets_per_s": round(st.packets_sent / wall),
            "syscalls_per_gib": 0, "zc_copied": st.copied_octets}


def run_strategy(strategy: str, media: str, hints: str, nrec: int, sink,
                 progress: Progress = None) -> dict:
    """Send the whole title once through ``strategy``; its figures."""
    if strategy in krtp.STRATEGIES:
        return run_krtp(strategy, media, hints, nrec, sink, progress)
    size = os.path.getsize(media)
    with Engine(threads=1, strategy=strategy) as engine, \
            open(media, "rb") as m, open(hints, "rb") as h:
        sock = sink.socket()
        stream = engine.open_stream(sock, m, h, ssrc=1, seq0=0, ts0=0)
        sock.close()
        before = engine.stats()
        cpu0, t0 = _cpu(), time.monotonic()
        st = _send_all(stream, nrec, progress)
        cpu, wall = _cpu() - cpu0, time.monotonic() - t0
        after = engine.stats()
        used = engine.strategy
    _check_sent(strategy, st, nrec)
    gib = size / GIB
    calls = after["syscalls"] - before["syscalls"]
    return {"strategy": used, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
            "packets": st.packets_sent, "syscalls": calls,
            "cpu_s_per_gib": round(cpu / gib, 4),
            "packets_per_s": round(st.packets_sent / wall),
            "syscalls_per_gib": round(calls / gib),
            "zc_copied": after["zc_copied"] - before["zc_copied"]}


def build_bare() -> str:
    """Compile the bare C loop into build/ (when its source is newer)."""
    out = os.path.join(ROOT, "build", "bench_bare_gso")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(BARE_SRC):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-o", out + ".tmp", BARE_SRC], check=True, timeout=120)
        os.replace(out + ".tmp", out)
    return out


def run_bare(media: str, payload: int, sink, *, segs: int = 64, dests: int = 0,
             total: int = 0) -> dict:
    """The bare C loop's figures for the same sends to the same sink: at
    most ``segs`` packets a message, to ``dests`` clients from one socket
    in turn (0: one connected socket), ``total`` bytes (0: the file)."""
    exe = build_bare()
    host, port = sink.dest
    cmd = [exe, media, str(payload), host, str(port), str(segs), str(dests), str(total)]
    if sink.name:
        cmd = ["ip", "netns", "exec", sink.name] + cmd
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError(f"bare loop: {r.stderr.strip()}")
    cpu, packets, calls = r.stdout.split()
    # what was sent: the loop ends after the batch that passes ``total``
    gib = (int(packets) * payload if total else os.path.getsize(media)) / GIB
    return {"strategy": "bare C loop (gso)", "cpu_s": float(cpu), "wall_s": round(wall, 4),
            "packets": int(packets), "syscalls": int(calls),
            "cpu_s_per_gib": round(float(cpu) / gib, 4),
            "packets_per_s": round(int(packets) / wall),
            "syscalls_per_gib": round(int(calls) / gib)}


def _ratios(results: dict) -> None:
    for key in ("read_writev", "rtp_sendfile"):
        base = results.get(key, {}).get("cpu_s_per_gib")
        for r in results.values():
            r[f"vs_{key}"] = round(r["cpu_s_per_gib"] / base, 4) if base else None


def run_datapath(size: int = GIB, payloads: tuple[int, ...] = (1316,),
                 sink: str = "loopback", offload: bool = False,
                 strategies: Optional[list[str]] = None, bare: bool = True,
                 repeat: int = 1, progress: Progress = None) -> dict:
    """Every strategy (and the bare loop) for every payload size, one run.

    With ``repeat`` > 1 every strategy runs that many times, interleaved
    with the others, and the run with the least CPU counts: on a machine
    shared with other work, the least disturbed run is the truest.

    Returns ``{"runs": {payload: {"strategies": {name: figures},
    "bare_gso": figures, "engine_vs_bare": ratio}}, ...}``.
    """
    names = strategies or ORDER + krtp_strategies()
    for n in names:
        if n in krtp.STRATEGIES:
            ok, why = krtp.available()
            if not ok:
                raise ValueError(f"{n} needs the krtp module: {why}")
        elif n not in STRATEGIES or n == "auto":
            raise ValueError(f"unknown strategy {n!r}")
    media = make_media(size)
    repeat = max(1, repeat)
    steps = len(payloads) * (len(names) + bare) * repeat
    done = 0
    result = {"size": size, "sink": sink, "repeat": repeat, "offload": offload if sink == "nic" else None,
              "media": media, "research_vs_rtp_sendfile": RESEARCH_VS_RTP_SENDFILE,
              "runs": {}}

    def step_progress(frac: float) -> None:
        if progress:
            progress((done + min(frac, 1.0)) / steps)

    with ExitStack() as stack:
        if sink == "nic":
            from rtpengine.bench.netns_sink import netns_sink
            the_sink = stack.enter_context(netns_sink(offload=offload))
        elif sink == "loopback":
            the_sink = _LoopbackSink()
            stack.callback(the_sink.close)
        else:
            raise ValueError(f"unknown sink {sink!r} (loopback or nic)")
        for payload in payloads:
            hints = os.path.join(cache_dir(), f"datapath-{size}-{payload}.hint")
            nrec = make_hints(media, payload, hints)
            runs: dict = {}
            best_bare = None
            try:
                for _ in range(repeat):
                    for name in names:
                        r = run_strategy(name, media, hints, nrec, the_sink, step_progress)
                        if name not in runs or r["cpu_s"] < runs[name]["cpu_s"]:
                            runs[name] = r
                        done += 1
                    if bare:
                        r = run_bare(media, payload, the_sink)
                        if best_bare is None or r["cpu_s"] < best_bare["cpu_s"]:
                            best_bare = r
                        done += 1
                _ratios(runs)
                entry = {"packets": nrec, "strategies": runs}
                if bare:
                    entry["bare_gso"] = best_bare
                    if "gso" in runs:
                        entry["engine_gso_vs_bare"] = round(
                            runs["gso"]["cpu_s_per_gib"]
                            / entry["bare_gso"]["cpu_s_per_gib"], 4)
                result["runs"][str(payload)] = entry
            finally:
                os.unlink(hints)
    return result


def format_table(result: dict) -> str:
    """The human-readable table of :func:`run_datapath`'s result."""
    lines = [f"sink: {result['sink']}"
             + (f" (UDP segmentation offload {'on' if result['offload'] else 'off'})"
                if result["sink"] == "nic" else "")
             + f", title {result['size'] / GIB:.3g} GiB, unpaced, one engine thread"
             + (f", least CPU of {result['repeat']} runs each" if result.get("repeat", 1) > 1
                else "")]
    for payload, run in result["runs"].items():
        lines.append("")
        lines.append(f"payload {payload} bytes ({run['packets']} packets)")
        lines.append(f"{'strategy':<22} {'CPU s/GiB':>10} {'packets/s':>11} "
                     f"{'syscalls/GiB':>13} {'x read_writev':>14} {'x rtp_sendfile':>15} "
                     f"{'research x rtp_sendfile':>24}")

        def fmt(x, spec):
            return "n/a" if x is None else format(x, spec)

        for name, r in run["strategies"].items():
            lines.append(f"{name:<22} {r['cpu_s_per_gib']:>10.3f} {r['packets_per_s']:>11,} "
                         f"{r['syscalls_per_gib']:>13,} {fmt(r['vs_read_writev'], '.3f'):>14} "
                         f"{fmt(r['vs_rtp_sendfile'], '.3f'):>15} {'n/a':>24}")
        for name, ratio in result["research_vs_rtp_sendfile"].items():
            lines.append(f"{name + ' (research)':<22} {'n/a':>10} {'n/a':>11} {'n/a':>13} "
                         f"{'n/a':>14} {'n/a':>15} {ratio:>24.2f}")
        bare = run.get("bare_gso")
        if bare:
            lines.append(f"{'bare C loop (gso)':<22} {bare['cpu_s_per_gib']:>10.3f} "
                         f"{bare['packets_per_s']:>11,} {bare['syscalls_per_gib']:>13,}")
            if "engine_gso_vs_bare" in run:
                lines.append(f"engine gso / bare C loop: {run['engine_gso_vs_bare']:.3f}")
    lines.append("")
    lines.append("research figures: Halvorsen, Dalseng, Griwodz; only krtpsendfile's "
                 "ratio (0.73x rtp_sendfile) was available, the others print n/a")
    if not any(name in run["strategies"] for run in result["runs"].values()
               for name in krtp.STRATEGIES):
        lines.append(f"krtpsendfile, krtpmsend: not measured ({krtp.available()[1]})")
    return "\n".join(lines)
