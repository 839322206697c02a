"""``kvod bench datapath`` and ``kvod bench streams``: the data-path
benchmarks as click commands, for the ``kvod bench`` group.

Kept apart from ``appliance/cli.py`` so the group only has to add them
(:func:`add_bench_commands`); the benchmarks themselves live in
``rtpengine`` and import lazily, so ``kvod --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import sys

import click


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool):
    """A progress bar on stderr fed fractions 0..1."""
    if quiet:
        yield lambda fraction: None
        return
    with click.progressbar(length=1000, label=label, file=sys.stderr) as bar:
        done = [0]

        def progress(fraction: float) -> None:
            step = int(min(max(fraction, 0.0), 1.0) * 1000)
            if step > done[0]:
                bar.update(step - done[0])
                done[0] = step
        yield progress


@click.command("datapath")
@click.option("--size", default="1GiB", show_default=True, help="Size of the title sent.")
@click.option("--payload", default="1316", show_default=True,
              help="RTP payload bytes; a comma list runs each (e.g. 512,1024,1316).")
@click.option("--sink", type=click.Choice(["loopback", "nic"]), default="loopback",
              show_default=True,
              help="loopback: a 127.0.0.1 socket that never reads; nic: an ifb device "
                   "in a private network namespace (root) that frees every packet.")
@click.option("--offload", is_flag=True,
              help="nic sink: leave UDP segmentation to the device (default: software).")
@click.option("--strategy", "strategies", multiple=True,
              help="Only these strategies (repeatable); default all.")
@click.option("--repeat", default=1, show_default=True,
              help="Runs of each strategy, interleaved; the least CPU counts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_datapath(size: str, payload: str, sink: str, offload: bool,
                   strategies: tuple[str, ...], repeat: int, as_json: bool) -> None:
    """CPU per GiB of every send strategy, side by side (the research's table)."""
    from rtpengine.bench_datapath import format_table, parse_size, run_datapath
    from rtpengine.netns_sink import SinkError
    payloads = tuple(int(p) for p in payload.split(",") if p.strip())
    try:
        with progress_bar("datapath", as_json and not sys.stderr.isatty()) as progress:
            result = run_datapath(size=parse_size(size), payloads=payloads, sink=sink,
                                  offload=offload, strategies=list(strategies) or None,
                                  repeat=repeat, progress=progress)
    except (SinkError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@click.command("streams")
@click.option("--sessions", default="1000", show_default=True,
              help="Paced streams (a comma list runs each).")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the title.")
@click.option("--seconds", default=10.0, show_default=True, help="Length of each run.")
@click.option("--sample", default=20, show_default=True,
              help="Streams also sent to real receivers on loopback, timed on arrival.")
@click.option("--strategy", default="auto", show_default=True, help="Engine send strategy.")
@click.option("--sink", type=click.Choice(["nic", "loopback"]), default="nic",
              show_default=True, help="Where the other streams go (nic needs root).")
@click.option("--ports", type=click.Choice(["shared", "per-session"]), default="shared",
              show_default=True, help="One server port for all, or one per session.")
@click.option("--lookahead-ms", default=2.0, show_default=True,
              help="How early a packet may leave to share a batch (engine lookahead).")
@click.option("--offload", is_flag=True,
              help="The nic sink takes GSO datagrams whole, as a NIC with UDP "
                   "segmentation offload does (default: the kernel segments in software).")
@click.option("--burst-ms", default=20.0, show_default=True,
              help="A stream that sends also sends what it has due this soon, in one "
                   "GSO message (engine burst, as [engine] burst_ms; at least the "
                   "lookahead).")
@click.option("--pacing", type=click.Choice(["engine", "kernel", "auto"]), default="engine",
              show_default=True,
              help="Who keeps packets to time: the engine, the kernel (SO_TXTIME: on time "
                   "only under the fq qdisc; shared ports stay engine-paced), or auto (fq seen).")
@click.option("--search", is_flag=True,
              help="Then search for the most streams keeping >= 99.9% within 5 ms.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_streams(sessions: str, bitrate: str, seconds: float, sample: int,
                  strategy: str, sink: str, ports: str, lookahead_ms: float,
                  offload: bool, burst_ms: float, pacing: str, search: bool,
                  as_json: bool) -> None:
    """CPU per stream-second and timeliness of N paced streams."""
    from rtpengine.bench_scale import format_table, run_scale
    from rtpengine.netns_sink import SinkError
    counts = [int(n) for n in sessions.split(",") if n.strip()]
    try:
        with progress_bar("streams", as_json and not sys.stderr.isatty()) as progress:
            result = run_scale(counts, bitrate=bitrate, seconds=seconds, sample=sample,
                               strategy=strategy, sink=sink, shared=ports == "shared",
                               search=search, lookahead_ns=int(lookahead_ms * 1e6),
                               burst_ns=int(burst_ms * 1e6), offload=offload,
                               pacing=pacing,
                               progress=progress)
    except (SinkError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@click.command("index")
@click.option("--size-mb", default=200, show_default=True, help="Size of the title indexed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_index(size_mb: int, as_json: bool) -> None:
    """MPEG-TS indexing speed (MB/s) on a page-cached file."""
    from rtpengine import bench_index as bi
    result = bi.run(size_mb=size_mb)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"indexed {result['path']} ({result['size_bytes'] / 2**20:.1f} MiB, "
               f"{result['records']} records, {result['runs']} runs, page-cached)")
    click.echo(f"  best   {result['mb_per_s_best']:10.1f} MB/s")
    click.echo(f"  median {result['mb_per_s_median']:10.1f} MB/s   (target >= 300 MB/s)")
    click.echo(f"  {result['records_per_s'] / 1e6:.2f} M records/s")


@click.command("latency")
@click.option("--sessions", default=50, show_default=True, help="Sessions timed.")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the title.")
@click.option("--ports", type=click.Choice(["per-session", "shared"]), default="per-session",
              show_default=True, help="The daemon's [rtsp] server_ports.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_latency(sessions: int, bitrate: str, ports: str, as_json: bool) -> None:
    """Start-up latency of a real daemon: PLAY or DESCRIBE to the first RTP packet."""
    from appliance.bench_latency import run_latency
    from rtpengine.bench_media import bench_title
    media = bench_title(bitrate=bitrate, seconds=30)
    with progress_bar("latency", as_json and not sys.stderr.isatty()) as progress:
        result = run_latency(media, sessions, progress=progress, ports=ports)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"start-up latency over {result['sessions']} sessions on loopback, "
               f"{ports} server ports "
               "(a well-known C++ server measured here: 0.3 ms / 1.4 ms):")
    for key, label in (("play_to_first_rtp_ms", "PLAY -> first RTP"),
                       ("describe_to_first_rtp_ms", "DESCRIBE -> first RTP")):
        click.echo(f"  {label:<22} p50 {result[key]['p50']:.3f} ms  p99 {result[key]['p99']:.3f} ms")


def add_bench_commands(group: click.Group) -> None:
    """Add the benchmarks to the ``kvod bench`` group."""
    for command in (bench_index, bench_datapath, bench_streams, bench_latency):
        group.add_command(command)
