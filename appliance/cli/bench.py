"""``kvod bench …``: every benchmark as a click command.

The benchmarks themselves live in ``rtpengine/bench`` (data path) and
``appliance/bench`` (control plane) and import lazily, so ``kvod --help``
stays instant.
"""

from __future__ import annotations

import json
import sys

import click

from appliance.cli.common import human_bytes, progress_bar


@click.group()
def bench() -> None:
    """Measure the data path."""


@bench.command("datapath")
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
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the figure (CPU relative to read_writev) into this SVG or PNG.")
def bench_datapath(size: str, payload: str, sink: str, offload: bool,
                   strategies: tuple[str, ...], repeat: int, as_json: bool,
                   plot_path: str | None) -> None:
    """CPU per GiB of every send strategy, side by side (the research's table)."""
    from rtpengine.bench.datapath import format_table, parse_size, run_datapath
    from rtpengine.bench.netns_sink import SinkError
    payloads = tuple(int(p) for p in payload.split(",") if p.strip())
    try:
        with progress_bar("datapath", as_json and not sys.stderr.isatty()) as progress:
            result = run_datapath(size=parse_size(size), payloads=payloads, sink=sink,
                                  offload=offload, strategies=list(strategies) or None,
                                  repeat=repeat, progress=progress)
    except (SinkError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))
    if plot_path:
        from rtpengine.bench.plot import plot_datapath
        click.echo(f"figure: {plot_datapath(result, plot_path)}", err=True)


@bench.command("streams")
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
@click.option("--media", type=click.Choice(["mpegts", "mp4"]), default="mpegts",
              show_default=True,
              help="mp4: the video track of the same title remuxed into MP4 (RFC 6184).")
@click.option("--transport", type=click.Choice(["udp", "tcp"]), default="udp",
              show_default=True,
              help="tcp: each stream interleaved on a TCP connection of its own, to a "
                   "loopback drain (needs --sink loopback; no arrival sample).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_streams(sessions: str, bitrate: str, seconds: float, sample: int,
                  strategy: str, sink: str, ports: str, lookahead_ms: float,
                  offload: bool, burst_ms: float, pacing: str, search: bool,
                  media: str, transport: str, as_json: bool) -> None:
    """CPU per stream-second and timeliness of N paced streams."""
    from rtpengine.bench.scale import format_table, run_scale
    from rtpengine.bench.netns_sink import SinkError
    counts = [int(n) for n in sessions.split(",") if n.strip()]
    try:
        with progress_bar("streams", as_json and not sys.stderr.isatty()) as progress:
            result = run_scale(counts, bitrate=bitrate, seconds=seconds, sample=sample,
                               strategy=strategy, sink=sink, shared=ports == "shared",
                               search=search, lookahead_ns=int(lookahead_ms * 1e6),
                               burst_ns=int(burst_ms * 1e6), offload=offload,
                               pacing=pacing, media_kind=media, transport=transport,
                               progress=progress)
    except (SinkError, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@bench.command("index")
@click.option("--size-mb", default=200, show_default=True,
              help="Size of the MPEG-TS title indexed.")
@click.option("--media", type=click.Choice(["mpegts", "mp4"]), default="mpegts",
              show_default=True, help="mp4: a two-hour H.264 + AAC film (--minutes).")
@click.option("--minutes", default=120, show_default=True, help="Length of the MP4 film.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_index(size_mb: int, media: str, minutes: int, as_json: bool) -> None:
    """Indexing speed on a page-cached file: MPEG-TS (MB/s) or MP4 (samples/s)."""
    if media == "mp4":
        from rtpengine.bench import index_mp4 as bm
        result = bm.run(minutes=minutes)
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        click.echo(f"indexed {result['path']} ({result['size_bytes'] / 2**20:.1f} MiB, "
                   f"{result['duration_s'] / 60:.0f} min, {result['samples']} samples, "
                   f"{result['records']} records, {result['runs']} runs, page-cached)")
        click.echo(f"  best   {result['seconds_best']:8.3f} s   "
                   f"{result['samples_per_s_best'] / 1e6:.2f} M samples/s   "
                   f"{result['mb_per_s_best']:.0f} MB/s")
        click.echo(f"  median {result['seconds_median']:8.3f} s")
        return
    from rtpengine.bench import index as bi
    result = bi.run(size_mb=size_mb)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"indexed {result['path']} ({result['size_bytes'] / 2**20:.1f} MiB, "
               f"{result['records']} records, {result['runs']} runs, page-cached)")
    click.echo(f"  best   {result['mb_per_s_best']:10.1f} MB/s")
    click.echo(f"  median {result['mb_per_s_median']:10.1f} MB/s   (target >= 300 MB/s)")
    click.echo(f"  {result['records_per_s'] / 1e6:.2f} M records/s")


#: live555 measured on this machine class with the same client and title
#: (issue 15): p50 / p99 ms
LIVE555 = {"describe_to_first_rtp_ms": (0.86, 1.45), "play_to_first_rtp_ms": (0.10, 0.30)}
#: the start-up targets (issue 15): p99 ms
TARGETS = {"describe_to_first_rtp_ms": 1.0, "play_to_first_rtp_ms": 0.3}


@bench.command("latency")
@click.option("--sessions", default=50, show_default=True, help="Sessions timed (per title).")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the title.")
@click.option("--title-minutes", default="0.5", show_default=True,
              help="Lengths of the titles timed side by side, in minutes (e.g. 2,120); "
                   "long ones are made by copying the 30 s title in a loop.")
@click.option("--ports", type=click.Choice(["per-session", "shared"]), default="per-session",
              show_default=True, help="The daemon's [rtsp] server_ports.")
@click.option("--media", type=click.Choice(["mpegts", "mp4"]), default="mpegts",
              show_default=True, help="The title's container (mp4: the same title remuxed).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_latency(sessions: int, bitrate: str, title_minutes: str, ports: str, media: str,
                  as_json: bool) -> None:
    """Start-up latency of a real daemon: PLAY or DESCRIBE to the first RTP packet."""
    from appliance.bench.latency import run_latency
    from rtpengine.bench.media import bench_mp4, long_title
    try:
        minutes = [float(m) for m in title_minutes.split(",") if m.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of minutes: {title_minutes!r}") from None
    if media == "mp4":
        if minutes != [0.5]:
            raise click.BadParameter("--title-minutes is for MPEG-TS titles only")
        titles = {"0.5min mp4": bench_mp4(bitrate=bitrate, seconds=30)}
    else:
        titles = {f"{m:g}min": long_title(m, bitrate) for m in minutes}
    with progress_bar("latency", as_json and not sys.stderr.isatty()) as progress:
        result = run_latency(next(iter(titles.values())), sessions, progress=progress,
                             ports=ports, titles=titles, floor=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"start-up latency over {result['sessions']} fresh sessions per title on "
               f"loopback, {ports} server ports, cached titles at {bitrate}b/s:")
    header = "".join(f"{name + ' title':>21}   " for name in result["titles"])
    click.echo(f"  {'p50 / p99 ms':<30}{header}{'no-work server':>21}   "
               f"{'live555 here':>16}{'target p99':>13}")
    for key, label in (("describe_to_first_rtp_ms", "DESCRIBE -> first RTP"),
                       ("play_to_first_rtp_ms", "PLAY -> first RTP")):
        cells = "".join(f"{t[key]['p50']:>10.3f} / {t[key]['p99']:<10.3f}"
                        for t in [*result["titles"].values(), result["floor"]])
        anchor = LIVE555[key]
        click.echo(f"  {label:<30}{cells}{anchor[0]:>8.2f} / {anchor[1]:<7.2f}"
                   f"{TARGETS[key]:>8.1f} ms")
    click.echo("  no-work server: fixed replies and one RTP packet at PLAY, timed with the "
               "same client in this run:")
    click.echo("  what the client, the kernel and the machine's wake-ups cost without a "
               "server's work")
    if len(result["titles"]) > 1:
        p99 = [t["describe_to_first_rtp_ms"]["p99"] for t in result["titles"].values()]
        click.echo(f"  longest / shortest title, DESCRIBE -> first RTP p99: "
                   f"{max(p99) / min(p99):.2f}x (target within 1.10x)")


@bench.command("crowd")
@click.option("--sessions", default=1000, show_default=True, help="Viewers in the crowd.")
@click.option("--concurrency", default=100, show_default=True,
              help="Sessions being set up at once.")
@click.option("--bitrate", default="1M", show_default=True, help="Bit rate of the title.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_crowd(sessions: int, concurrency: int, bitrate: str, as_json: bool) -> None:
    """A flash crowd: every session's first RTP packet, PLAY latency, failures, CPU."""
    from appliance.bench.crowd import run_crowd
    from rtpengine.bench.media import bench_title
    media = bench_title(bitrate=bitrate, seconds=30)
    with progress_bar("crowd", as_json and not sys.stderr.isatty()) as progress:
        result = run_crowd(media, sessions, concurrency, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{sessions} sessions, {concurrency} set up at once, {bitrate}b/s title, "
               f"loopback:")
    click.echo(f"  every session's first RTP packet after {result['all_first_packet_ms']} ms "
               f"(target 500 ms)")
    p = result["play_to_first_rtp_ms"]
    click.echo(f"  PLAY -> first RTP under the crowd: p50 {p['p50']:.3f} ms  "
               f"p99 {p['p99']:.3f} ms")
    click.echo(f"  failures: {result['failures']} (target 0)"
               + "".join(f"\n    {e}" for e in result["failure_examples"]))
    click.echo(f"  daemon CPU per session set up: {result['server_cpu_ms_per_session']:.3f} ms")


@bench.command("rtsps")
@click.option("--viewers", default=20, show_default=True, help="Streams at once.")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the title.")
@click.option("--seconds", default=10.0, show_default=True, help="Seconds measured per round.")
@click.option("--rounds", default=2, show_default=True,
              help="Rounds of plain RTSP/TCP and RTSPS, alternated (medians compared).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_rtsps(viewers: int, bitrate: str, seconds: float, rounds: int, as_json: bool) -> None:
    """What RTSPS costs: daemon CPU per stream-second over TLS against plain TCP."""
    from appliance.bench.rtsps import run_rtsps
    from rtpengine.bench.media import bench_title
    media = bench_title(bitrate=bitrate, seconds=30)
    with progress_bar("rtsps", as_json and not sys.stderr.isatty()) as progress:
        result = run_rtsps(media, viewers, seconds, rounds, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{viewers} viewers of a {bitrate}b/s title, RTP interleaved, loopback "
               f"(median of {rounds} rounds of {seconds:g} s):")
    click.echo(f"  plain RTSP/TCP: {result['tcp_cpu_ms_per_stream_s']:.3f} ms daemon CPU per "
               f"stream-second ({result['tcp_mbit_per_viewer']:.2f} Mb/s per viewer)")
    click.echo(f"  RTSPS (TLS):    {result['rtsps_cpu_ms_per_stream_s']:.3f} ms "
               f"({result['rtsps_mbit_per_viewer']:.2f} Mb/s per viewer): "
               f"{result['rtsps_to_tcp']}x; research figure: not published")
    for error in result["errors"]:
        click.echo(f"  viewer error: {error}")


@bench.command("proxy")
@click.option("--misses", default=50, show_default=True, help="Uncached titles timed.")
@click.option("--viewers", default=4, show_default=True,
              help="Viewers of one uncached title at once.")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the titles.")
@click.option("--big-mb", default=150, show_default=True,
              help="Size of the title filled for throughput (MB, at 20 Mb/s).")
@click.option("--media", type=click.Choice(["mpegts", "mp4"]), default="mpegts",
              show_default=True,
              help="The missed titles' container (mp4: the same title remuxed, moov at the "
                   "end); the throughput title stays MPEG-TS.")
@click.option("--fill-rounds", default=3, show_default=True,
              help="Fills of the large title, each after a plain read of it (medians compared).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_proxy(misses: int, viewers: int, bitrate: str, big_mb: int, media: str,
                fill_rounds: int,
                as_json: bool) -> None:
    """Miss -> first packet latency, shared fills, fill throughput (local nginx origin)."""
    from appliance.bench.proxy import run_proxy
    from rtpengine.bench.media import bench_mp4, bench_title
    media = bench_mp4(bitrate=bitrate, seconds=20) if media == "mp4" else \
        bench_title(bitrate=bitrate, seconds=20)
    big = bench_title(bitrate="20M", seconds=max(10, big_mb * 8 // 20))
    with progress_bar("proxy", quiet=False) as progress:
        result = run_proxy(media, big, misses=misses, viewers=viewers,
                           fill_rounds=fill_rounds, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    m, h = result["miss_describe_to_first_rtp_ms"], result["hit_describe_to_first_rtp_ms"]
    click.echo(f"miss DESCRIBE -> first RTP over {misses} {result['container']} titles: "
               f"p50 {m['p50']:.2f} ms  "
               f"p99 {m['p99']:.2f} ms (goal p99 <= 50 ms)")
    click.echo(f"hit  DESCRIBE -> first RTP:                  p50 {h['p50']:.2f} ms  "
               f"p99 {h['p99']:.2f} ms")
    s, f = result["shared_fill"], result["fill"]
    click.echo(f"{s['viewers']} viewers of one uncached title: "
               f"{s['origin_bytes_per_title_byte']:.4f} origin bytes per title byte")
    click.echo(f"fill of {f['title_bytes'] / 1e6:.0f} MB (median of {f['rounds']}): "
               f"{f['fill_mb_per_s']:.1f} MB/s against a plain HTTP read of the same file "
               f"from the same origin: {f['origin_read_mb_per_s']:.1f} MB/s: "
               f"{f['fill_to_plain_read']:.3f}x (goal >= 0.5x); "
               f"{f['origin_bytes_per_title_byte']:.4f} origin bytes per title byte")
    click.echo(f"  the same plain read into a file (fsync'ed at the end): "
               f"{f['origin_read_to_file_mb_per_s']:.1f} MB/s; the fill is "
               f"{f['fill_to_file_read']:.3f}x that (a read that keeps the bytes, unindexed)")
    click.echo("  each round, fill / plain MB/s: " + "  ".join(
        f"{a:.0f}/{b:.0f}" for a, b in zip(f["fill_mb_per_s_each"],
                                           f["origin_read_mb_per_s_each"])))
    busy, idle = f["options_ms_while_filling"], f["options_ms_idle"]
    if busy["count"] and idle["count"]:
        click.echo(f"RTSP OPTIONS round trip while filling: p50 {busy['p50']:.2f} ms  "
                   f"p99 {busy['p99']:.2f} ms ({busy['count']} asked); idle: "
                   f"p50 {idle['p50']:.2f} ms  p99 {idle['p99']:.2f} ms")


@bench.command("cache")
@click.option("--titles", default=500, show_default=True)
@click.option("--requests", default=20000, show_default=True)
@click.option("--alpha", default=0.8, show_default=True, help="Zipf exponent.")
@click.option("--cache-fraction", default=0.10, show_default=True,
              help="Cache size as a share of the library's bytes.")
@click.option("--keep-fraction", default=0.0, show_default=True,
              help="Share of each title tail eviction keeps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_cache(titles: int, requests: int, alpha: float, cache_fraction: float,
                keep_fraction: float, as_json: bool) -> None:
    """Byte hit ratio of each eviction policy on a synthetic Zipf trace."""
    from appliance.bench.cache_sim import run
    result = run(titles=titles, requests=requests, alpha=alpha,
                 cache_fraction=cache_fraction, keep_fraction=keep_fraction)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"Zipf({alpha}) over {titles} titles, {requests} plays, cache at "
               f"{cache_fraction:.0%} of the library ({human_bytes(result['capacity_bytes'])})")
    click.echo(f"{'policy':>7} {'byte hit ratio':>15} {'hit ratio':>10} {'evictions':>10}")
    for name, p in result["policies"].items():
        click.echo(f"{name:>7} {p['byte_hit_ratio']:>15.4f} {p['hit_ratio']:>10.4f} "
                   f"{p['evictions']:>10}")


@bench.command("download")
@click.option("--size", default="256MiB", show_default=True, help="Size of the file sent.")
@click.option("--chunk", default="512,1024,2048", show_default=True,
              help="Send sizes in bytes (the research's Table 2 columns), a comma list.")
@click.option("--sink", type=click.Choice(["loopback", "nic"]), default="nic",
              show_default=True,
              help="UDP sink: nic, an ifb device in a private network namespace (root) that "
                   "frees every packet; loopback, a 127.0.0.1 socket that never reads.")
@click.option("--repeat", default=1, show_default=True,
              help="Runs of each mechanism; the least CPU counts.")
@click.option("--http/--no-http", default=True, show_default=True,
              help="Also kvod's HTTP download path against nginx-light (sendfile on), "
                   "the same file in the same run.")
@click.option("--downloads", default=5, show_default=True,
              help="HTTP downloads from each server.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the figure (CPU relative to sendfile) into this SVG or PNG.")
def bench_download(size: str, chunk: str, sink: str, repeat: int, http: bool,
                   downloads: int, as_json: bool, plot_path: str | None) -> None:
    """CPU per GiB of the research's download mechanisms, and of kvod's HTTP path."""
    from rtpengine.bench.datapath import parse_size
    from rtpengine.bench.download import format_table, run_download
    from rtpengine.bench.media import cache_dir
    from rtpengine.bench.netns_sink import SinkError
    chunks = tuple(int(c) for c in chunk.split(",") if c.strip())
    try:
        with progress_bar("download", as_json and not sys.stderr.isatty()) as progress:
            result = run_download(size=parse_size(size), chunks=chunks, sink=sink,
                                  repeat=repeat, progress=progress)
        web = None
        if http:
            from appliance.bench.http_download import run_http_download
            web = run_http_download(parse_size(size), cache_dir(), downloads=downloads)
            result["http"] = web
    except (SinkError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result, web))
    if plot_path:
        from rtpengine.bench.plot import plot_download
        click.echo(f"figure: {plot_download(result, plot_path)}", err=True)
