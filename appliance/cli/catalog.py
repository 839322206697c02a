"""``kvod catalog …``: list, show, add and remove titles."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from appliance.cli.common import config_of, duration, human_bytes, open_catalog


def _title_dict(title) -> dict:
    return {
        "name": title.name, "state": title.state, "damaged": title.damaged,
        "container": title.container,
        "size": title.size, "duration_s": round((title.duration_ns or 0) / 1e9, 3),
        "bitrate": title.bitrate, "pinned": bool(title.pinned), "hits": title.hits,
        "last_access": title.last_access, "origin_url": title.origin_url,
        "media_path": title.media_path,
        "tracks": [{"index": t.track_index, "media_type": t.media_type, "codec": t.codec,
                    "payload_type": t.payload_type, "clock_rate": t.clock_rate,
                    "packets": t.packets, "hint_path": t.hint_path}
                   for t in (title.tracks or ())],
    }


@click.group()
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
    config = config_of(ctx)
    if any(c in url for c in " \t\r\n") or not url.split("://", 1)[1]:
        raise click.ClickException(f"not an origin URL: {url!r}")
    name = name or _remote_name(config, url)
    db = open_catalog(config)
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
    from appliance.cache.ingest import IngestError, ingest_file
    if path.lower().startswith(("http://", "https://", "file://")):
        _add_remote(ctx, path, name, as_json)
        return
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a folder, not a media file")
    config = config_of(ctx)
    name = name or os.path.splitext(os.path.basename(path))[0]
    db = open_catalog(config)
    started = time.monotonic()
    # The bar appears once the copy reports progress (a reflink is one step).
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
        click.echo(f"added {title.name}: {duration(title.duration_ns)}, "
                   f"{human_bytes(title.size)}, {_packets(title.tracks)} "
                   f"(indexed in {time.monotonic() - started:.2f} s)")


def _packets(tracks) -> str:
    """'1234 packets', or per track for a title of several."""
    if len(tracks) == 1:
        return f"{tracks[0].packets} packets"
    return " + ".join(f"{t.packets} {t.media_type}" for t in tracks) + " packets"


@catalog.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def catalog_list(ctx: click.Context, as_json: bool) -> None:
    """List the titles."""
    db = open_catalog(config_of(ctx))
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
        # damaged beats the fill state: it is what the operator must act on
        state = "damaged" if t.damaged else t.state
        click.echo(f"{t.name:<{width}}  {state:<8}  {duration(t.duration_ns):>12}  "
                   f"{human_bytes(t.size):>10}  {t.hits}")
    for t in titles:
        if t.damaged:
            click.echo(f"{t.name}: damaged: {t.damaged}")


@catalog.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def catalog_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one title and its tracks."""
    db = open_catalog(config_of(ctx))
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
    for key in ("name", "state", "damaged", "container", "media_path", "origin_url"):
        if info[key] is not None:
            click.echo(f"{key + ':':<12} {info[key]}")
    click.echo(f"{'duration:':<12} {duration(title.duration_ns)}")
    click.echo(f"{'size:':<12} {human_bytes(title.size)} ({title.size} bytes)")
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
    from appliance.cache.ingest import remove_title
    from catalog import TitleNotFound
    db = open_catalog(config_of(ctx))
    try:
        remove_title(db, name, keep_files=keep_files)
    except TitleNotFound:
        raise click.ClickException(f"no title {name!r}") from None
    finally:
        db.close()
    click.echo(f"removed {name}")
