"""The ``kvod`` command line: serve, manage the catalog, measure.

Subcommands import their modules lazily so ``kvod --help`` stays instant.
Exit codes scripts can trust: 0 success, 1 the operation failed (the
message says why), 2 bad usage (click's own).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

import click

from appliance.bench_cli import add_bench_commands, progress_bar

DEFAULT_CONFIG = "/etc/kvod/kvod.toml"


def _load_config(path: str | None):
    from appliance.config import ConfigError, load_config
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"config: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"config: {exc}") from None


def _open_catalog(config):
    from catalog import CatalogError, open_catalog
    try:
        return open_catalog(config.catalog.path)
    except CatalogError as exc:
        raise click.ClickException(f"catalog {config.catalog.path}: {exc}") from None


def _title_dict(title) -> dict:
    return {
        "name": title.name, "state": title.state, "container": title.container,
        "size": title.size, "duration_s": round((title.duration_ns or 0) / 1e9, 3),
        "bitrate": title.bitrate, "pinned": bool(title.pinned), "hits": title.hits,
        "last_access": title.last_access, "origin_url": title.origin_url,
        "media_path": title.media_path,
        "tracks": [{"index": t.track_index, "media_type": t.media_type, "codec": t.codec,
                    "payload_type": t.payload_type, "clock_rate": t.clock_rate,
                    "packets": t.packets, "hint_path": t.hint_path}
                   for t in (title.tracks or ())],
    }


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(ns: int | None) -> str:
    if not ns:
        return "-"
    s = ns / 1e9
    return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"


@click.group()
@click.option("--config", "config_path", envvar="KVOD_CONFIG", type=click.Path(),
              help=f"TOML config file (default {DEFAULT_CONFIG} if it exists).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """kvod: a video-on-demand RTSP/RTP proxy cache."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def _config(ctx: click.Context):
    if "config" not in ctx.obj:
        ctx.obj["config"] = _load_config(ctx.obj["config_path"])
    return ctx.obj["config"]


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the daemon in the foreground (Ctrl-C or SIGTERM stops it)."""
    config = _config(ctx)
    logging.basicConfig(level=getattr(logging, config.log.level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from twisted.python import log as twisted_log
    twisted_log.PythonLoggingObserver().start()
    if config.log.level != "debug":
        # Twisted logs every UDP port it opens; one per session is noise.
        logging.getLogger("twisted").setLevel(logging.WARNING)
    from appliance.daemon import run
    sys.exit(run(config))


@cli.group()
def catalog() -> None:
    """List, add and remove titles."""


def _remote_name(config, url: str) -> str:
    """A title name for an origin URL: its path below a configured origin
    folder, else its file name."""
    for base in config.origin.base_url:
        if url.startswith(base) and len(url) > len(base):
            return url[len(base):]
    from urllib.parse import unquote, urlsplit
    return os.path.basename(unquote(urlsplit(url).path)) or "title"


def _add_remote(ctx: click.Context, url: str, name: str | None, as_json: bool) -> None:
    from catalog import CatalogError
    config = _config(ctx)
    if any(c in url for c in " \t\r\n") or not url.split("://", 1)[1]:
        raise click.ClickException(f"not an origin URL: {url!r}")
    name = name or _remote_name(config, url)
    db = _open_catalog(config)
    try:
        title = db.add_title(name, container="mpegts", origin_url=url, state="remote",
                             now=time.time())
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(_title_dict(title), indent=2))
    else:
        click.echo(f"added {title.name}: remote, fetched from {url} when first played "
                   f"(or: kvod cache prefetch {title.name})")


@catalog.command("add")
@click.argument("path")
@click.option("--name", help="Title name (the RTSP path); default: the file name without "
                             "extension, or for a URL its path below the origin.")
@click.option("--json", "as_json", is_flag=True, help="Print the new title as JSON.")
@click.pass_context
def catalog_add(ctx: click.Context, path: str, name: str | None, as_json: bool) -> None:
    """Index a media file and add it as a title, or register an origin URL
    (http://, https://, file://) as a remote title without fetching it."""
    from appliance.ingest import IngestError, ingest_file
    if path.lower().startswith(("http://", "https://", "file://")):
        _add_remote(ctx, path, name, as_json)
        return
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a folder, not a media file")
    config = _config(ctx)
    name = name or os.path.splitext(os.path.basename(path))[0]
    db = _open_catalog(config)
    started = time.monotonic()
    # The bar appears only if the file must be copied (a hard link is instant).
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label=f"copying {path}", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)
    try:
        title = ingest_file(db, config.cache.dir, path, name, now=time.time(),
                            progress=progress)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        db.close()
    if as_json:
        click.echo(json.dumps(_title_dict(title), indent=2))
    else:
        click.echo(f"added {title.name}: {_duration(title.duration_ns)}, "
                   f"{_human_bytes(title.size)}, {title.tracks[0].packets} packets "
                   f"(indexed in {time.monotonic() - started:.2f} s)")


@catalog.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def catalog_list(ctx: click.Context, as_json: bool) -> None:
    """List the titles."""
    db = _open_catalog(_config(ctx))
    try:
        titles = db.list_titles()
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps([_title_dict(t) for t in titles], indent=2))
        return
    if not titles:
        click.echo("no titles (add one: kvod catalog add FILE.ts)")
        return
    width = max(len(t.name) for t in titles)
    click.echo(f"{'NAME':<{width}}  {'STATE':<8}  {'DURATION':>12}  {'SIZE':>10}  HITS")
    for t in titles:
        click.echo(f"{t.name:<{width}}  {t.state:<8}  {_duration(t.duration_ns):>12}  "
                   f"{_human_bytes(t.size):>10}  {t.hits}")


@catalog.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def catalog_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one title and its tracks."""
    db = _open_catalog(_config(ctx))
    try:
        title = db.get_title(name)
    finally:
        db.close()
    if title is None:
        raise click.ClickException(f"no title {name!r}")
    info = _title_dict(title)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("name", "state", "container", "media_path", "origin_url"):
        if info[key] is not None:
            click.echo(f"{key + ':':<12} {info[key]}")
    click.echo(f"{'duration:':<12} {_duration(title.duration_ns)}")
    click.echo(f"{'size:':<12} {_human_bytes(title.size)} ({title.size} bytes)")
    if title.bitrate:
        click.echo(f"{'bitrate:':<12} {title.bitrate / 1e6:.2f} Mb/s")
    click.echo(f"{'hits:':<12} {title.hits}")
    for t in info["tracks"]:
        click.echo(f"track {t['index']}:    {t['media_type']} {t['codec']}/{t['clock_rate']} "
                   f"pt {t['payload_type']}, {t['packets']} packets, hints {t['hint_path']}")


@catalog.command("rm")
@click.argument("name")
@click.option("--keep-files", is_flag=True, help="Leave the cached media and hint files.")
@click.pass_context
def catalog_rm(ctx: click.Context, name: str, keep_files: bool) -> None:
    """Remove a title (and its cached files)."""
    from appliance.ingest import remove_title
    from catalog import TitleNotFound
    db = _open_catalog(_config(ctx))
    try:
        remove_title(db, name, keep_files=keep_files)
    except TitleNotFound:
        raise click.ClickException(f"no title {name!r}") from None
    finally:
        db.close()
    click.echo(f"removed {name}")


def _admin_address(listen: str) -> tuple[str, int]:
    """(host, port) to reach an admin endpoint like ``tcp:8555:interface=127.0.0.1``."""
    parts = re.split(r"(?<!\\):", listen)
    kind, args = parts[0], parts[1:]
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    if kind not in ("tcp", "tcp6") or not (positional or "port" in options):
        raise click.ClickException(f"admin.listen {listen!r}: kvod status needs a tcp endpoint")
    port = int(options.get("port") or positional[0])
    host = options.get("interface", "").replace("\\:", ":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's status JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon: engine strategy, sessions, streams."""
    import urllib.error
    import urllib.request
    host, port = _admin_address(_config(ctx).admin.listen)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            info = json.load(reply)
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"kvod is not answering on {url} ({exc})") from None
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    engine = info["engine"]
    up = int(info["uptime_s"])
    click.echo(f"kvod {info['version']}, pid {info['pid']}, up {up // 3600}h{up % 3600 // 60:02d}m")
    features = " ".join(k for k, v in engine.get("features", {}).items() if v) or "none"
    click.echo(f"engine: {engine['strategy']} (asked {engine['requested_strategy']}), "
               f"{engine['threads']} thread(s), kernel features: {features}")
    if engine.get("fallback"):
        click.echo(f"engine fallback: {engine['fallback']}")
    if engine.get("runtime_refused"):
        click.echo(f"refused at run time: {', '.join(engine['runtime_refused'])}")
    click.echo(_ports_line(info.get("server_ports") or {}))
    if "paced_streams" in engine:
        paced = engine["paced_streams"]
        click.echo(f"pacing: {engine['pacing']} (kernel lookahead "
                   f"{engine['kernel_lookahead_ms']:g} ms): {paced['kernel']} stream(s) "
                   f"kernel-paced (fq), {paced['engine']} engine-paced")
        for note in engine.get("pacing_notes", []):
            click.echo(f"pacing note: {note}")
    totals = info["totals"]
    click.echo(f"sessions: {totals['sessions']} ({totals['playing']} playing), "
               f"{totals['packets_sent']} packets sent")
    if info["sessions"]:
        click.echo(f"{'SESSION':<17} {'TITLE':<20} {'CLIENT':<22} {'STATE':<8} "
                   f"{'SENT':>9} {'LOSS':>6} {'LATE>5ms':>8} {'STRATEGY':<13} PACING")
    for session in info["sessions"]:
        for stream in session["streams"].values():
            click.echo(f"{session['id']:<17} {session['title'][:20]:<20} "
                       f"{stream['client'][:22]:<22} {session['state']:<8} "
                       f"{stream.get('packets_sent', 0):>9} {stream['loss_fraction']:>6.1%} "
                       f"{stream.get('late_5ms', 0):>8} {stream.get('strategy', '-'):<13} "
                       f"{stream.get('pacing', '-')}")


def _ports_line(ports: dict) -> str:
    """The status line of the server port pairs (``[rtsp] server_ports``)."""
    if ports.get("mode") == "shared":
        rtcp = ports.get("rtcp_in", {})
        return (f"server ports: shared {ports['rtp']}-{ports['rtcp']} "
                f"({', '.join(ports.get('families', [])) or 'not bound'}), "
                f"{ports.get('streams', 0)} stream(s); RTCP in by address "
                f"{rtcp.get('by_address', 0)}, by SSRC {rtcp.get('by_ssrc', 0)}, "
                f"unknown {rtcp.get('unknown', 0)}")
    if ports.get("mode") == "per-session":
        low, high = ports["range"]
        return f"server ports: per-session pairs from {low}-{high}"
    return "server ports: unknown"


def _register_cache_commands() -> None:
    from appliance.cache_cli import cache
    cli.add_command(cache)


_register_cache_commands()


@cli.group()
def bench() -> None:
    """Measure the data path."""


add_bench_commands(bench)


@bench.command("proxy")
@click.option("--misses", default=50, show_default=True, help="Uncached titles timed.")
@click.option("--viewers", default=4, show_default=True,
              help="Viewers of one uncached title at once.")
@click.option("--bitrate", default="4M", show_default=True, help="Bit rate of the titles.")
@click.option("--big-mb", default=150, show_default=True,
              help="Size of the title filled for throughput (MB, at 20 Mb/s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_proxy(misses: int, viewers: int, bitrate: str, big_mb: int, as_json: bool) -> None:
    """Miss -> first packet latency, shared fills, fill throughput (local nginx origin)."""
    from appliance.bench_proxy import run_proxy
    from rtpengine.bench_media import bench_title
    media = bench_title(bitrate=bitrate, seconds=20)
    big = bench_title(bitrate="20M", seconds=max(10, big_mb * 8 // 20))
    with progress_bar("proxy", quiet=False) as progress:
        result = run_proxy(media, big, misses=misses, viewers=viewers, progress=progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    m, h = result["miss_describe_to_first_rtp_ms"], result["hit_describe_to_first_rtp_ms"]
    click.echo(f"miss DESCRIBE -> first RTP over {misses} titles: p50 {m['p50']:.2f} ms  "
               f"p99 {m['p99']:.2f} ms (goal p99 <= 50 ms)")
    click.echo(f"hit  DESCRIBE -> first RTP:                  p50 {h['p50']:.2f} ms  "
               f"p99 {h['p99']:.2f} ms")
    s, f = result["shared_fill"], result["fill"]
    click.echo(f"{s['viewers']} viewers of one uncached title: "
               f"{s['origin_bytes_per_title_byte']:.4f} origin bytes per title byte")
    click.echo(f"fill of {f['title_bytes'] / 1e6:.0f} MB: {f['fill_mb_per_s']:.1f} MB/s "
               f"(the origin read plainly: {f['origin_read_mb_per_s']:.1f} MB/s), "
               f"{f['origin_bytes_per_title_byte']:.4f} origin bytes per title byte")


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
    from appliance.cache_sim import run
    result = run(titles=titles, requests=requests, alpha=alpha,
                 cache_fraction=cache_fraction, keep_fraction=keep_fraction)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"Zipf({alpha}) over {titles} titles, {requests} plays, cache at "
               f"{cache_fraction:.0%} of the library ({_human_bytes(result['capacity_bytes'])})")
    click.echo(f"{'policy':>7} {'byte hit ratio':>15} {'hit ratio':>10} {'evictions':>10}")
    for name, p in result["policies"].items():
        click.echo(f"{name:>7} {p['byte_hit_ratio']:>15.4f} {p['hit_ratio']:>10.4f} "
                   f"{p['evictions']:>10}")


def main() -> int:
    """Entry point of the ``kvod`` script."""
    try:
        cli.main(prog_name="kvod", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
