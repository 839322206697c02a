"""``kvod bench streams``: CPU and timeliness of N paced MPEG-TS streams.

With ``--transport tcp`` every stream is interleaved on a TCP connection
of its own (as an RTSP client that asked for RTP/AVP/TCP gets it), to a
drain in another process on loopback that reads and discards; there is
no arrival sample then, only the engine's own lateness counters.

N streams of one title (ffmpeg-made, constant mux rate) play at their
media rate through the C engine (one thread per core). N - K of them go to
the capacity sink: by default the namespace ``ifb`` "perfect NIC", all from
one shared server socket (``--ports shared``) or one connected socket each.
K sample streams go to real receivers on 127.0.0.1 in a separate process,
which timestamps every arrival in the kernel (SO_TIMESTAMPNS), so the
sample's lateness is measured on arrival, not claimed by the sender.

Figures: CPU ms per stream-second (getrusage user + system of this process
over the measuring window; the receivers' process is not counted), the
fraction of packets within 1 ms and 5 ms of schedule and the p99 lateness
(from the engine's own counters for all N, and on arrival for the sample),
and with ``--search`` the largest N that keeps >= 99.9% within 5 ms.
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Callable, Optional

from rtpengine.engine import Engine, batching, now_ns
from rtpengine.hintfile import HintFile
from rtpengine.bench.stats import percentile

SEC = 1_000_000_000
MS = 1_000_000
Progress = Optional[Callable[[float], None]]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


# --- the TCP drain: accepts the interleaved connections, reads and discards --------

TCP_DRAIN = r'''
import resource, select, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
lst.setblocking(False)
print(lst.getsockname()[1], flush=True)
poll = select.epoll()
poll.register(lst.fileno(), select.EPOLLIN)
poll.register(sys.stdin.fileno(), select.EPOLLIN | select.EPOLLHUP)
conns = {}
buf = bytearray(1 << 20)
while True:
    for fd, _ in poll.poll(1.0):
        if fd == sys.stdin.fileno():
            sys.exit(0)
        if fd == lst.fileno():
            while True:
                try:
                    c, _ = lst.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                conns[c.fileno()] = c
                poll.register(c.fileno(), select.EPOLLIN)
            continue
        try:
            if not conns[fd].recv_into(buf):
                poll.unregister(fd)
                conns.pop(fd).close()
        except BlockingIOError:
            pass
'''


# --- the sample receivers, in their own process ---------------------------------

RECEIVER = r'''
import json, select, socket, struct, sys, time
SO_TIMESTAMPNS = 35
k = int(sys.argv[1])
socks = []
for _ in range(k):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    socks.append(s)
offset = time.time_ns() - time.monotonic_ns()
print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
got = [[] for _ in socks]
poll = select.epoll()
for i, s in enumerate(socks):
    poll.register(s.fileno(), select.EPOLLIN)
fds = {s.fileno(): i for i, s in enumerate(socks)}
poll.register(sys.stdin.fileno(), select.EPOLLIN | select.EPOLLHUP)
done = False
while not done:
    for fd, _ in poll.poll(1.0):
        if fd == sys.stdin.fileno():
            done = True
            continue
        i = fds[fd]
        s = socks[i]
        while True:
            try:
                data, anc, _, _ = s.recvmsg(2048, 64)
            except BlockingIOError:
                break
            stamp = time.time_ns()
            for level, kind, value in anc:
                if kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("@ll", value[:16])
                    stamp = sec * 1000000000 + nsec
            seq = struct.unpack_from("!H", data, 2)[0]
            got[i].append((seq, stamp - offset))
json.dump(got, sys.stdout)
'''


def run_once(media: str, hint: str, sessions: int, seconds: float, *, sample: int = 20,
             strategy: str = "auto", sink: str = "nic", shared: bool = True,
             threads: int = 0, lookahead_ns: int = 0, burst_ns: int = 0,
             offload: bool = False, pacing: str = "engine", transport: str = "udp",
             progress: Progress = None) -> dict:
    """Play ``sessions`` paced streams for ``seconds``; return the figures.
    ``transport`` "tcp": interleaved, a loopback connection each.
    ``pacing`` is every stream's (auto, engine, kernel); shared ports stay
    engine-paced (see Engine.open_stream), so ``paced`` counts who paced."""
    with HintFile(hint) as hf:
        send_ns = [r.send_ns for r in hf]
        payload = max(r.length for r in hf)
        title_ns = hf.header.duration_ns
    bits = os.path.getsize(media) * 8 / (title_ns / SEC)
    warm = 0.5
    if title_ns < (seconds + warm + 1) * SEC:
        raise ValueError(f"title lasts {title_ns / SEC:.1f} s, the run wants {seconds + warm + 1} s")
    if transport not in ("udp", "tcp"):
        raise ValueError(f"unknown transport {transport!r} (udp or tcp)")
    if transport == "tcp" and sink != "loopback":
        raise ValueError("--transport tcp sends to a loopback drain: use --sink loopback")
    sample = min(sample, sessions) if transport == "udp" else 0
    _raise_fd_limit(3 * sessions + 256)
    streams = []
    with ExitStack() as stack:
        rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(sample)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(rx.kill)
        ports = json.loads(rx.stdout.readline())
        engine = stack.enter_context(Engine(threads=threads, strategy=strategy,
                                            lookahead_ns=lookahead_ns, burst_ns=burst_ns,
                                            pacing=pacing))
        m = stack.enter_context(open(media, "rb"))
        h = stack.enter_context(open(hint, "rb"))

        # the capacity sink
        if sink == "nic":
            from rtpengine.bench.netns_sink import netns_sink
            the_sink = stack.enter_context(netns_sink(offload=offload))
            host = the_sink.dest[0]

            def sink_socket(connect_to):
                if connect_to is None:
                    return the_sink.socket(connect=False, sndbuf=8 << 20)
                s = the_sink.socket(connect=False)
                s.connect(connect_to)
                return s
        elif sink == "loopback":
            host = "127.0.0.1"
            drains = []
            for _ in range(32):
                d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                d.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
                d.bind(("127.0.0.1", 0))
                stack.callback(d.close)
                drains.append(d.getsockname()[1])

            def sink_socket(connect_to):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                if connect_to is None:
                    s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)
                    s.bind(("127.0.0.1", 0))
                else:
                    s.connect(connect_to)
                return s
        else:
            raise ValueError(f"unknown sink {sink!r} (nic or loopback)")

        drain_port = None
        if transport == "tcp":
            drain = subprocess.Popen([sys.executable, "-c", TCP_DRAIN, str(sessions)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            stack.callback(drain.kill)
            drain_port = int(drain.stdout.readline())

        def dest_of(i: int) -> tuple[str, int]:
            if sink == "nic":
                return (host, 10000 + i)
            return ("127.0.0.1", drains[i % len(drains)])

        shared_sink = sink_socket(None) if shared else None
        shared_rx = None
        if shared:
            stack.callback(shared_sink.close)
            shared_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            shared_rx.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)
            shared_rx.bind(("127.0.0.1", 0))
            stack.callback(shared_rx.close)
        params = []
        for i in range(sessions):
            kw = dict(ssrc=i + 1, seq0=random.randrange(65536), ts0=random.randrange(2**32))
            if drain_port is not None:
                s = socket.create_connection(("127.0.0.1", drain_port))
                st = engine.open_stream(s, m, h, interleaved=0, **kw)
                s.close()
            elif i < sample:
                dest = ("127.0.0.1", ports[i])
                if shared:
                    st = engine.open_stream(shared_rx, m, h, dest=dest, **kw)
                else:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.connect(dest)
                    st = engine.open_stream(s, m, h, **kw)
                    s.close()
            elif shared:
                st = engine.open_stream(shared_sink, m, h, dest=dest_of(i), **kw)
            else:
                s = sink_socket(dest_of(i))
                st = engine.open_stream(s, m, h, **kw)
                s.close()
            streams.append(st)
            params.append(kw)
        stack.callback(lambda: [s.close() for s in streams])

        # viewers arrive at random within the first 100 ms
        base = now_ns() + 50 * MS
        starts = [base + random.randrange(100 * MS) for _ in streams]
        for st, at in zip(streams, starts):
            st.play(start_record=0, at_ns=at)
        time.sleep(warm)
        stats0 = [s.stats() for s in streams]
        est0 = engine.stats()
        cpu0, t0 = _cpu(), time.monotonic()
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        end = t0 + seconds
        while (now := time.monotonic()) < end:
            if progress:
                progress((now - t0) / seconds)
            time.sleep(min(0.2, end - now))
        cpu, wall = _cpu() - cpu0, time.monotonic() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
        stats1 = [s.stats() for s in streams]
        est1 = engine.stats()
        used = engine.strategy
        paced = engine.status()["paced_streams"]
        for s in streams:
            s.pause()
        sent, messages, calls, rounds = (est1[k] - est0[k] for k in
                                         ("packets", "messages", "syscalls", "rounds"))
        floor = None
        if sink == "nic" and messages:
            floor = _kernel_floor(media, payload, the_sink, sessions if shared else 0,
                                  sent / messages, bits)
        rx.stdin.close()
        arrivals = json.loads(rx.stdout.read())
        rx.wait(timeout=30)

    def delta(field):
        return sum(getattr(b, field) - getattr(a, field) for a, b in zip(stats0, stats1))

    packets = delta("packets_sent")
    late1, late5 = delta("late_1ms"), delta("late_5ms")
    # the sample, on arrival: lateness against each packet's schedule
    lateness = []
    for i, got in enumerate(arrivals):
        seq0, start = params[i]["seq0"], starts[i]
        for seq, t in got:
            k = (seq - seq0) & 0xFFFF  # titles here have < 65536 packets
            lateness.append(t - (start + send_ns[k]))
    n_arr = len(lateness)
    stream_s = sessions * wall
    return {
        "sessions": sessions, "sample": sample, "seconds": round(wall, 3),
        "strategy": used, "transport": transport,
        "ports": "tcp" if transport == "tcp" else "shared" if shared else "per-session",
        "skips": delta("skips") if transport == "tcp" else 0,
        "sink": sink + (" (segmentation offload)" if offload and sink == "nic" else ""),
        "pacing": pacing, "paced": paced,
        "threads": engine.threads, "bitrate_mbps": round(bits / 1e6, 3),
        "packets": packets, "send_errors": delta("send_errors"),
        "packets_dropped": delta("packets_dropped"),
        "cpu_s": round(cpu, 4),
        "cpu_ms_per_stream_s": round(cpu * 1000 / stream_s, 4),
        "syscalls_per_s": round(calls / wall),
        "rounds_per_s": round(rounds / wall),
        "page_faults_per_s": round(faults / wall),
        "packets_per_syscall": round(sent / max(1, calls), 2),
        "packets_per_message": round(sent / max(1, messages), 2),
        "kernel_floor": floor,
        "engine_within_1ms": round(1 - late1 / packets, 6) if packets else None,
        "engine_within_5ms": round(1 - late5 / packets, 6) if packets else None,
        "engine_max_late_ms": round(max(s.max_late_ns for s in stats1) / MS, 3),
        "sample_packets": n_arr,
        "sample_within_1ms": round(sum(1 for x in lateness if x <= MS) / n_arr, 6) if n_arr else None,
        "sample_within_5ms": round(sum(1 for x in lateness if x <= 5 * MS) / n_arr, 6) if n_arr else None,
        "sample_p99_late_ms": round(percentile(lateness, 0.99) / MS, 3) if n_arr else None,
        "sample_max_early_ms": round(-min(lateness, default=0) / MS, 3) if n_arr else None,
    }


def _kernel_floor(media: str, payload: int, sink, dests: int, per_message: float,
                  bits: float) -> dict:
    """What the kernel alone spends on sends of this shape: the bare C loop
    (rtpengine/bench/bare_gso.c), unpaced, ``payload``-byte packets in
    messages of as many packets as the engine's averaged, to as many
    clients from one socket, into the same sink; as ms of CPU per
    stream-second at this bitrate."""
    from rtpengine.bench.datapath import GIB, run_bare
    segs = max(1, round(per_message))
    r = run_bare(media, payload, sink, segs=segs, dests=min(dests, 65535), total=256 << 20)
    ms = r["cpu_s_per_gib"] * (bits / 8) / GIB * 1000
    return {"packets_per_message": segs, "cpu_s_per_gib": r["cpu_s_per_gib"],
            "cpu_ms_per_stream_s": round(ms, 4)}


def _ok(r: dict) -> bool:
    return (r["engine_within_5ms"] or 0) >= 0.999 and \
        (r["sample_within_5ms"] is None or r["sample_within_5ms"] >= 0.999)


def run_scale(counts: list[int], *, bitrate: str = "4M", seconds: float = 10.0,
              sample: int = 20, strategy: str = "auto", sink: str = "nic",
              shared: bool = True, search: bool = False, max_sessions: int = 16000,
              lookahead_ns: int = 0, burst_ns: int = 0, offload: bool = False,
              pacing: str = "engine", media_kind: str = "mpegts",
              transport: str = "udp", progress: Progress = None) -> dict:
    """Runs for each of ``counts``; with ``search``, then the largest N
    keeping >= 99.9% within 5 ms (doubling, then bisecting, a few runs).
    ``media_kind`` "mp4" streams the video track of the same title remuxed
    into MP4 (RFC 6184 packets pointing into the file) instead of RFC 2250."""
    import tempfile

    from rtpengine.bench.media import bench_mp4, bench_title
    from rtpengine.index.mp4 import index_mp4
    from rtpengine.index.mpegts import index_mpegts
    media = (bench_mp4 if media_kind == "mp4" else bench_title)(
        bitrate=bitrate, seconds=max(30, int(seconds) + 5))
    lookahead, burst = batching(lookahead_ns, burst_ns)
    result: dict = {"title": media, "lookahead_ms": lookahead / 1e6, "transport": transport,
                    "burst_ms": burst / 1e6, "pacing": pacing,
                    "runs": [], "search": None}
    with tempfile.TemporaryDirectory(prefix="kvod-bench-") as tmp:
        hint = os.path.join(tmp, "bench.hint")
        if media_kind == "mp4":
            index_mp4(media, lambda i: hint if i == 0 else os.path.join(tmp, f"t{i}.hint"))
        else:
            index_mpegts(media, hint)
        steps = len(counts) + (8 if search else 0)
        done = [0]

        def one(n: int, secs: float) -> dict:
            def prog(f: float) -> None:
                if progress:
                    progress((done[0] + f) / steps)
            r = run_once(media, hint, n, secs, sample=sample, strategy=strategy, sink=sink,
                         shared=shared, lookahead_ns=lookahead_ns, burst_ns=burst_ns,
                         offload=offload, pacing=pacing, transport=transport,
                         progress=prog)
            done[0] += 1
            return r

        for n in counts:
            result["runs"].append(one(n, seconds))
        if search:
            tried = {r["sessions"]: _ok(r) for r in result["runs"]}
            good = max([n for n, ok in tried.items() if ok], default=0)
            bad = min([n for n, ok in tried.items() if not ok], default=None)
            probes = []
            n = max(good * 2, 500) if bad is None else (good + bad) // 2
            for _ in range(8):
                if bad is not None and bad - good <= max(50, good // 20):
                    break
                if n > max_sessions:
                    break
                r = one(n, min(seconds, 5.0))
                probes.append(r)
                if _ok(r):
                    good = n
                else:
                    bad = n
                n = good * 2 if bad is None else (good + bad) // 2
            result["search"] = {"max_sessions_within_5ms": good, "first_failing": bad,
                                "probes": probes}
    if progress:
        progress(1.0)
    return result


def _paced(run: dict) -> str:
    paced = run.get("paced", {})
    return f"{paced.get('kernel', 0)}k/{paced.get('engine', run['sessions'])}e"


def format_table(result: dict) -> str:
    """The human-readable table of :func:`run_scale`'s result."""
    lines = [f"title: {result['title']}, engine lookahead {result['lookahead_ms']} ms, "
             f"burst {result['burst_ms']} ms (packets may leave that early), "
             f"pacing {result.get('pacing', 'engine')} (kernel: SO_TXTIME, on time only "
             f"under fq; paced column: kernel/engine streams)",
             f"{'streams':>8} {'strategy':>9} {'ports':>11} {'paced':>11} {'Mb/s':>5} "
             f"{'CPU ms/stream-s':>15} {'floor':>6} {'pkt/msg':>7} {'calls/s':>8} "
             f"{'<=1ms':>9} {'<=5ms':>9} "
             f"{'max late':>9} | {'sample <=1ms':>12} {'<=5ms':>9} {'p99 late':>9} "
             f"{'early max':>9}"]
    rows = result["runs"] + (result["search"]["probes"] if result["search"] else [])
    for r in rows:
        floor = r.get("kernel_floor")
        lines.append(
            f"{r['sessions']:>8} {r['strategy']:>9} {r['ports']:>11} {_paced(r):>11} "
            f"{r['bitrate_mbps']:>5.2f} "
            f"{r['cpu_ms_per_stream_s']:>15.4f} "
            + (f"{floor['cpu_ms_per_stream_s']:>6.3f} " if floor else f"{'-':>6} ")
            + f"{r['packets_per_message']:>7.2f} {r['syscalls_per_s']:>8,} "
            f"{r['engine_within_1ms']:>9.4%} {r['engine_within_5ms']:>9.4%} "
            f"{r['engine_max_late_ms']:>7.2f}ms | "
            + (f"{r['sample_within_1ms']:>12.4%} {r['sample_within_5ms']:>9.4%} "
               f"{r['sample_p99_late_ms']:>7.3f}ms {r['sample_max_early_ms']:>7.3f}ms"
               if r["sample_packets"] else f"{'-':>12} {'-':>9} {'-':>9} {'-':>9}"))
    if result["search"]:
        s = result["search"]
        lines.append(f"most streams with >= 99.9% of packets within 5 ms: "
                     f"{s['max_sessions_within_5ms']}"
                     + (f" (fails at {s['first_failing']})" if s["first_failing"] else
                        " (not limited within the search range)"))
    lines.append("floor: the kernel's own cost for sends of that shape (a bare C loop, unpaced, "
                 "same packets per message and clients, same sink), ms per stream-second")
    lines.append("a well-known C++ RTSP server measured here needs 5-17 ms per stream-second")
    return "\n".join(lines)
