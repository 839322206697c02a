"""The ``kvod`` command line: serve, manage the catalog and cache, measure.

Subcommands import their modules lazily so ``kvod --help`` stays instant.
Exit codes scripts can trust: 0 success, 1 the operation failed (the
message says why), 2 bad usage (click's own).
"""

from __future__ import annotations

import json
import logging
import sys

import click

from appliance.cli.bench import bench
from appliance.cli.cache import cache
from appliance.cli.catalog import catalog
from appliance.cli.common import (DEFAULT_CONFIG, admin_address, admin_headers,
                                  catalog_failure, config_of, config_path)


@click.group()
@click.option("--config", "config_path", envvar="KVOD_CONFIG", type=click.Path(),
              help=f"TOML config file (default {DEFAULT_CONFIG} if it exists).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """kvod: a video-on-demand RTSP/RTP proxy cache."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the daemon in the foreground (Ctrl-C or SIGTERM stops it, SIGHUP
    reloads the config file)."""
    config = config_of(ctx)
    level = getattr(logging, config.log.level.upper())
    from appliance import supervision
    if not supervision.journal_logging(level):
        supervision.log_to_stderr(level)
    from twisted.python import log as twisted_log
    twisted_log.PythonLoggingObserver().start()
    if config.log.level != "debug":
        # Twisted logs every UDP port it opens; one per session is noise.
        logging.getLogger("twisted").setLevel(logging.WARNING)
    from appliance.daemon import run
    from appliance.config import ConfigError
    from catalog import CatalogError
    try:
        code = run(config, config_path(ctx))
    except CatalogError as exc:
        # Raised while the daemon is built, before the reactor runs: an
        # operator's problem (a damaged or inaccessible catalog), one line.
        raise catalog_failure(config, exc) from None
    except ConfigError as exc:  # e.g. a malformed auth.htdigest_file, read at build
        raise click.ClickException(f"config: {exc}") from None
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's status JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon: engine strategy, sessions, streams."""
    import urllib.error
    import urllib.request
    listen = config_of(ctx).admin.listen
    address = admin_address(listen)
    if address is None:
        raise click.ClickException(f"admin.listen {listen!r}: kvod status needs a tcp endpoint")
    host, port = address
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/status"
    request = urllib.request.Request(url, headers=admin_headers(config_of(ctx)))
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            info = json.load(reply)
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"kvod refused {url}: {exc.code} {exc.reason}") from None
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
    if engine.get("description"):
        click.echo(f"engine in use: {engine['description']}")
    if engine.get("fallback"):
        click.echo(f"engine fallback: {engine['fallback']}")
    if engine.get("runtime_refused"):
        click.echo(f"refused at run time: {', '.join(engine['runtime_refused'])}")
    ports = info.get("server_ports") or {}
    click.echo(_ports_line(ports))
    # the daemon's sandbox (ProcSubset=pid) hides the kernel's port
    # settings from it; this command is not sandboxed
    overlap = _ports_overlap(ports)
    if overlap:
        click.echo(f"warning: {overlap}")
    if "paced_streams" in engine:
        paced = engine["paced_streams"]
        click.echo(f"pacing: {engine['pacing']} (kernel lookahead "
                   f"{engine['kernel_lookahead_ms']:g} ms): {paced['kernel']} stream(s) "
                   f"kernel-paced (fq), {paced['engine']} engine-paced")
        for note in engine.get("pacing_notes", []):
            click.echo(f"pacing note: {note}")
    for title in info.get("damaged_titles", []):
        click.echo(f"damaged title: {title['name']}: {title['why']}")
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


def _ports_overlap(ports: dict, proc: str | None = None) -> str | None:
    """The warning for server ports that overlap the kernel's ephemeral
    ports, from the daemon's ``server_ports`` status; None if they do not.
    ``proc``: where the kernel's port settings are (tests)."""
    from appliance.media.server_ports import KERNEL_PORTS, ephemeral_warning
    proc = proc or KERNEL_PORTS
    if ports.get("mode") == "shared":
        return ephemeral_warning(ports["rtp"], ports["rtcp"], "rtsp.shared_rtp_port", proc)
    if ports.get("mode") == "per-session":
        return ephemeral_warning(*ports["range"], "rtsp.rtp_port_min..rtp_port_max", proc)
    return None


cli.add_command(catalog)
cli.add_command(cache)
cli.add_command(bench)


def main() -> int:
    """Entry point of the ``kvod`` script."""
    try:
        cli.main(prog_name="kvod", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
