"""``kvod bench download``: the research's content-download case, rerun.

Halvorsen, Dalseng and Griwodz measured plain download (no RTP headers)
through Linux's existing mechanisms (their Table 3: ``read_write``,
``mmap_send``, ``sendfile`` over UDP and over TCP) and found ``sendfile``
over TCP "by far the most efficient". This sends one file through each, in
one run, with a small C loop (``bench/download.c``, compiled now into
``build/``) so that only the system calls are measured, and reports CPU
seconds per GiB (getrusage of the loop), system calls per GiB and Gb/s,
the ratio to ``sendfile`` of the same protocol and send size, and the
research's figures beside (its Table 2, CPU seconds for 1 GB on Linux
2.6.5, and the ratios they make), "not published" where it has none.

Sinks: UDP goes to the namespace sink (an ``ifb`` device that frees every
packet, ``rtpengine.bench.netns_sink``; needs root) or, without root, a
loopback socket nobody reads. TCP needs a reader: a child process reading
a loopback connection; loopback delivers in the sender's context, so part
of the receive path is in the sender's figures, the same for every
mechanism.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Callable, Optional

from rtpengine.bench.datapath import GIB, ROOT, make_media, _LoopbackSink

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "download.c")
MECHANISMS = ("read_write", "mmap_send", "sendfile")
CITATION = ("Halvorsen, Dalseng, Griwodz: Assessment of Linux' Data Path Implementations "
            "for Download and Streaming, Table 2 (Linux 2.6.5, CPU s per 1 GB)")
# Table 2 of the research, download rows: CPU seconds to move 1 GB by send size
RESEARCH_TABLE2 = {
    ("udp", "read_write"): {512: 8.71, 1024: 5.84, 2048: 8.14},
    ("udp", "mmap_send"): {512: 9.40, 1024: 7.14, 2048: 6.54},
    ("udp", "sendfile"): {512: 6.05, 1024: 3.95, 2048: 5.74},
    ("tcp", "read_write"): {512: 7.11, 1024: 5.98, 2048: 5.50},
    ("tcp", "mmap_send"): {512: 7.99, 1024: 7.83, 2048: 7.64},
    ("tcp", "sendfile"): {512: 2.78, 1024: 2.00, 2048: 1.53},
}
RESEARCH_TCP_SENDFILE_WHOLE = 1.04
# section 4.4: rtp_sendfile (streaming, a header per packet) against download
RESEARCH_RTP_SENDFILE_VS_UDP_SENDFILE = 1.21
RESEARCH_RTP_SENDFILE_VS_KSENDFILE = 1.29
Progress = Optional[Callable[[float], None]]


def build() -> str:
    """Compile the C loop into build/ (when its source is newer)."""
    out = os.path.join(ROOT, "build", "bench_download")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(SRC):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out + ".tmp", SRC],
                       check=True, timeout=120)
        os.replace(out + ".tmp", out)
    return out


_READER = ("import socket,sys\n"
           "l=socket.socket(fileno=int(sys.argv[1]))\n"
           "c,_=l.accept()\n"
           "b=bytearray(1<<20)\n"
           "while c.recv_into(b):\n"
           "    pass\n")


class TcpReader:
    """A child process that accepts one loopback connection and reads it to the end."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.proc = subprocess.Popen([sys.executable, "-c", _READER,
                                      str(self.listener.fileno())],
                                     pass_fds=[self.listener.fileno()],
                                     stdin=subprocess.DEVNULL)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.listener.getsockname())

    def close(self) -> None:
        self.listener.close()
        self.proc.wait(60)


def run_mechanism(exe: str, mechanism: str, media: str, chunk: int, sock: socket.socket) -> dict:
    """Send ``media`` through ``mechanism`` in ``chunk`` sends on ``sock``."""
    t0 = time.monotonic()
    r = subprocess.run([exe, mechanism, media, str(chunk), str(sock.fileno())],
                       capture_output=True, text=True, timeout=3600, pass_fds=[sock.fileno()])
    wall = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError(f"{mechanism}: {r.stderr.strip()}")
    cpu, calls, sent = r.stdout.split()
    gib = int(sent) / GIB
    return {"cpu_s": float(cpu), "wall_s": round(wall, 4), "calls": int(calls),
            "bytes": int(sent), "cpu_s_per_gib": round(float(cpu) / gib, 4),
            "calls_per_gib": round(int(calls) / gib), "gbit_s": round(int(sent) * 8 / wall / 1e9, 3)}


def _udp_sink(kind: str, stack):
    if kind == "nic":
        from rtpengine.bench.netns_sink import netns_sink
        return stack.enter_context(netns_sink(offload=False))
    sink = _LoopbackSink()
    stack.callback(sink.close)
    return sink


def run_download(size: int = 256 << 20, chunks: tuple[int, ...] = (512, 1024, 2048),
                 sink: str = "nic", repeat: int = 1, rtp_sendfile: bool = True,
                 progress: Progress = None) -> dict:
    """Every mechanism over UDP and TCP for every send size, one run; the
    least CPU of ``repeat`` runs counts."""
    from contextlib import ExitStack
    exe = build()
    media = make_media(size)
    rows: list[dict] = []
    plan = [(p, m, c) for c in chunks for p in ("udp", "tcp") for m in MECHANISMS]
    plan += [("tcp", "sendfile_whole", 0)]
    steps = len(plan) * repeat + (len(chunks) if rtp_sendfile else 0)
    done = 0
    with ExitStack() as stack:
        udp = _udp_sink(sink, stack)
        for protocol, mechanism, chunk in plan:
            best = None
            for _ in range(repeat):
                if protocol == "udp":
                    sock = udp.socket()
                    reader = None
                else:
                    reader = TcpReader()
                    sock = reader.connect()
                try:
                    r = run_mechanism(exe, mechanism, media, chunk or size, sock)
                finally:
                    sock.close()
                    if reader is not None:
                        reader.close()
                best = r if best is None or r["cpu_s"] < best["cpu_s"] else best
                done += 1
                if progress:
                    progress(done / steps)
            rows.append(dict(protocol=protocol, mechanism=mechanism, chunk=chunk, **best))
        streaming = {}
        if rtp_sendfile:
            from rtpengine.bench.datapath import make_hints, run_strategy
            for chunk in chunks:
                hints = os.path.join(os.path.dirname(media), f"download-{size}-{chunk}.hint")
                nrec = make_hints(media, chunk, hints)
                streaming[chunk] = run_strategy("rtp_sendfile", media, hints, nrec, udp)
                done += 1
                if progress:
                    progress(done / steps)
    _ratios(rows)
    return {"size": size, "sink": sink, "citation": CITATION, "rows": rows,
            "rtp_sendfile": {str(c): _gaps(r, rows, c) for c, r in streaming.items()}}


def _ratios(rows: list[dict]) -> None:
    # the whole-file call is held against sendfile of the largest send size,
    # as the research's 1.04 s stands beside its 2048 B figure
    largest = max(r["chunk"] for r in rows)
    for row in rows:
        chunk = row["chunk"] or largest
        base = next((r for r in rows if r["protocol"] == row["protocol"]
                     and r["mechanism"] == "sendfile" and r["chunk"] == chunk), None)
        row["vs_sendfile"] = round(row["cpu_s_per_gib"] / base["cpu_s_per_gib"], 3) \
            if base else None
        research = research_figure(row["protocol"], row["mechanism"], row["chunk"])
        row["research_cpu_s_per_gb"] = research
        research_base = research_figure(row["protocol"], "sendfile", row["chunk"])
        if row["mechanism"] == "sendfile_whole":
            research_base = research_figure("tcp", "sendfile", 2048)
            row["research_vs_sendfile"] = round(RESEARCH_TCP_SENDFILE_WHOLE / research_base, 3)
        else:
            row["research_vs_sendfile"] = round(research / research_base, 3) \
                if research is not None and research_base else None


def research_figure(protocol: str, mechanism: str, chunk: int) -> Optional[float]:
    """The research's Table 2 CPU seconds for that row, or None (not published)."""
    if mechanism == "sendfile_whole":
        return RESEARCH_TCP_SENDFILE_WHOLE if protocol == "tcp" else None
    return RESEARCH_TABLE2.get((protocol, mechanism), {}).get(chunk)


def _gaps(streaming: dict, rows: list[dict], chunk: int) -> dict:
    udp_sendfile = next(r for r in rows if r["protocol"] == "udp"
                        and r["mechanism"] == "sendfile" and r["chunk"] == chunk)
    return {"cpu_s_per_gib": streaming["cpu_s_per_gib"],
            "vs_udp_sendfile": round(streaming["cpu_s_per_gib"]
                                     / udp_sendfile["cpu_s_per_gib"], 3),
            "research_vs_udp_sendfile": RESEARCH_RTP_SENDFILE_VS_UDP_SENDFILE,
            "research_vs_ksendfile": RESEARCH_RTP_SENDFILE_VS_KSENDFILE}


def _fmt(value, digits: int = 2) -> str:
    return "not published" if value is None else f"{value:.{digits}f}"


def format_table(result: dict, http: Optional[dict] = None) -> str:
    """The figures as a text table, the research's beside ours."""
    lines = [f"kvod bench download: {result['size'] / GIB:.2f} GiB per run, UDP sink "
             f"{result['sink']}, TCP to a loopback reader",
             f"research: {result['citation']}", "",
             f"{'proto':5} {'mechanism':15} {'send B':>7} {'CPU s/GiB':>10} {'calls/GiB':>10} "
             f"{'Gb/s':>7} {'x sendfile':>10} | {'research s/GB':>14} {'x sendfile':>10}"]
    for r in result["rows"]:
        chunk = "file" if r["mechanism"] == "sendfile_whole" else str(r["chunk"])
        lines.append(
            f"{r['protocol']:5} {r['mechanism']:15} {chunk:>7} {r['cpu_s_per_gib']:>10.3f} "
            f"{r['calls_per_gib']:>10} {r['gbit_s']:>7.2f} {_fmt(r['vs_sendfile'], 3):>10} | "
            f"{_fmt(r['research_cpu_s_per_gb']):>14} {_fmt(r['research_vs_sendfile'], 3):>10}")
    for chunk, g in result.get("rtp_sendfile", {}).items():
        lines.append(f"streaming rtp_sendfile (engine) at {chunk} B: {g['cpu_s_per_gib']:.3f} "
                     f"CPU s/GiB = {g['vs_udp_sendfile']:.2f} x UDP sendfile "
                     f"(research: {g['research_vs_udp_sendfile']:.2f} x; and "
                     f"{g['research_vs_ksendfile']:.2f} x ksendfile, a call Linux does not have: "
                     "not measured)")
    if http:
        lines += ["", f"HTTP download of the same {http['size'] / GIB:.2f} GiB title, "
                      f"{http['downloads']} downloads each, curl on loopback (server CPU only):"]
        for name, r in http["servers"].items():
            lines.append(f"  {name:44} {r['cpu_s_per_gib']:>7.3f} CPU s/GiB {r['gbit_s']:>7.2f} Gb/s")
        lines.append("  research: not published (the paper measured no HTTP server)")
        hls = http.get("hls")
        if hls:
            lines.append(f"HLS playlist + first segment ({hls['target_duration_s']} s target), "
                         f"{hls['titles']} 4 Mb/s titles: uncached p50 {hls['miss_ms']['p50']} ms "
                         f"(max {hls['miss_ms']['max']}), cached p50 {hls['hit_ms']['p50']} ms "
                         f"(max {hls['hit_ms']['max']})")
    return "\n".join(lines)
