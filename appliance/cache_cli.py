"""``kvod cache ...``: what the cache holds, and prefetch, evict, pin, unpin.

``status``, ``pin`` and ``unpin`` work on the catalog (with or without a
daemon). ``prefetch`` and ``evict`` go through the running daemon's admin
endpoint, because it is the one that fills titles and knows which are being
streamed; with no daemon answering, they act on the cache themselves
(``prefetch`` runs the fills in this process).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import click

ADMIN_TIMEOUT = 5.0


def admin_url(config) -> Optional[str]:
    """``http://host:port`` of the daemon's admin endpoint, if it is TCP."""
    match = re.fullmatch(r"tcp:(\d+)(?::interface=(.+))?", config.admin.listen)
    if not match:
        return None
    host = match[2] or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{match[1]}"


def admin_call(config, method: str, path: str, **query) -> Optional[tuple[int, dict]]:
    """(status, JSON) from the daemon, or None when no daemon answers."""
    base = admin_url(config)
    if base is None:
        return None
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=ADMIN_TIMEOUT) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _human(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _status_here(config) -> dict:
    from appliance.cache_quota import cache_status
    from appliance.cli import _open_catalog
    db = _open_catalog(config)
    try:
        return cache_status(db, max_bytes=config.cache.max_bytes, policy=config.cache.policy)
    finally:
        db.close()


@click.group()
def cache() -> None:
    """Cache status, prefetch, evict, pin and unpin."""


@cache.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def cache_status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Used bytes against the quota, and each title's state, share cached and plays."""
    from appliance.cli import _config
    config = _config(ctx)
    answer = admin_call(config, "GET", "/cache")
    status = answer[1] if answer and answer[0] == 200 else _status_here(config)
    status["daemon"] = bool(answer and answer[0] == 200)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    quota = _human(status["quota_bytes"]) if status["quota_bytes"] else "no quota"
    click.echo(f"used {_human(status['used_bytes'])} of {quota} "
               f"(+{_human(status['reserved_bytes'])} reserved by fills), "
               f"policy {status['policy']}")
    if not status["titles"]:
        click.echo("no titles")
        return
    width = max(len(t["name"]) for t in status["titles"])
    click.echo(f"{'NAME':<{width}}  {'STATE':<8}  {'CACHED':>6}  {'SIZE':>10}  {'HITS':>5}  FLAGS")
    for t in status["titles"]:
        flags = ",".join(f for f, on in (("pinned", t["pinned"]), ("busy", t["busy"]),
                                          ("filling", t["filling"])) if on)
        if t.get("fill_error"):
            flags += f" error: {t['fill_error']}"
        click.echo(f"{t['name']:<{width}}  {t['state']:<8}  {t['percent']:>5.1f}%  "
                   f"{_human(t['size']):>10}  {t['hits']:>5}  {flags}")


def _set_pin(ctx: click.Context, name: str, pinned: bool) -> None:
    from appliance.cli import _config, _open_catalog
    from catalog import TitleNotFound
    db = _open_catalog(_config(ctx))
    try:
        db.set_pinned(name, pinned)
    except TitleNotFound:
        raise click.ClickException(f"no title {name!r}") from None
    finally:
        db.close()
    click.echo(f"{'pinned' if pinned else 'unpinned'} {name}")


@cache.command("pin")
@click.argument("name")
@click.pass_context
def cache_pin(ctx: click.Context, name: str) -> None:
    """Never evict NAME."""
    _set_pin(ctx, name, True)


@cache.command("unpin")
@click.argument("name")
@click.pass_context
def cache_unpin(ctx: click.Context, name: str) -> None:
    """Let eviction take NAME again."""
    _set_pin(ctx, name, False)


@cache.command("evict")
@click.argument("name")
@click.pass_context
def cache_evict(ctx: click.Context, name: str) -> None:
    """Drop every cached byte of NAME (it stays known, and is fetched again when played)."""
    from appliance.cli import _config, _open_catalog
    config = _config(ctx)
    answer = admin_call(config, "POST", "/cache/evict", name=name)
    if answer is not None:
        code, body = answer
        if code != 200:
            raise click.ClickException(body.get("error", f"the daemon answered {code}"))
        click.echo(f"evicted {name}: {_human(body['freed_bytes'])} freed")
        return
    from appliance.cache_quota import CacheQuota
    db = _open_catalog(config)
    try:
        title = db.get_title(name)
        if title is None:
            raise click.ClickException(f"no title {name!r}")
        if title.pinned:
            raise click.ClickException(f"{name} is pinned (kvod cache unpin {name} first)")
        freed = CacheQuota(db, policy=config.cache.policy).evict(name)
    finally:
        db.close()
    click.echo(f"evicted {name}: {_human(freed)} freed")


@cache.command("prefetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--timeout", default=3600.0, show_default=True,
              help="Seconds to wait for the fills to complete.")
@click.pass_context
def cache_prefetch(ctx: click.Context, names: tuple[str, ...], timeout: float) -> None:
    """Fetch NAMES into the cache now, with a progress bar."""
    from appliance.cli import _config
    config = _config(ctx)
    answer = admin_call(config, "GET", "/cache")
    if answer is None:
        _prefetch_here(config, names, timeout)
        return
    for name in names:
        code, body = admin_call(config, "POST", "/cache/prefetch", name=name) or (0, {})
        if code not in (200, 202):
            raise click.ClickException(f"{name}: {body.get('error', f'answered {code}')}")
    deadline = time.monotonic() + timeout
    with click.progressbar(length=1000, label="prefetch", file=sys.stderr) as bar:
        while True:
            answer = admin_call(config, "GET", "/cache")
            if answer is None:
                raise click.ClickException("the daemon stopped answering")
            titles = {t["name"]: t for t in answer[1]["titles"] if t["name"] in names}
            for t in titles.values():
                if t.get("fill_error"):
                    raise click.ClickException(f"{t['name']}: {t['fill_error']}")
            total = sum(t["size"] or 0 for t in titles.values())
            done = sum(t["cached_bytes"] for t in titles.values())
            bar.update(int(1000 * done / total) - bar.pos if total else 0)
            if len(titles) == len(names) and all(t["state"] == "complete"
                                                 for t in titles.values()):
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"not complete after {timeout:g} s")
            time.sleep(0.2)
    click.echo(f"prefetched {', '.join(names)}")


def _prefetch_here(config, names: tuple[str, ...], timeout: float) -> None:
    """No daemon: run the fills in this process, on its own reactor."""
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, DeferredList

    from appliance.cli import _open_catalog
    from appliance.daemon import make_cache

    db = _open_catalog(config)
    cache = make_cache(config, reactor, db)
    errors: list[str] = []
    bar = click.progressbar(length=1000, label="prefetch", file=sys.stderr)

    def progress() -> None:
        fills = [cache.fill_for(n) for n in names]
        total = sum(f.size for f in fills if f)
        done = sum(sum(e - s for s, e in f.durable) for f in fills if f)
        if total:
            bar.update(int(1000 * done / total) - bar.pos)

    async def main() -> None:
        for name in names:
            try:
                await cache.prepare(name)
            except Exception as exc:  # each title gets its own verdict
                errors.append(f"{name}: {exc}")
        fills = [f for f in (cache.fill_for(n) for n in names) if f is not None]
        await DeferredList([f.done for f in fills])
        errors.extend(f"{f.name}: {f.error}" for f in fills if f.error is not None)
        await cache.stop()

    def run() -> Deferred:
        loop = task.LoopingCall(progress)
        loop.start(0.2)
        d = Deferred.fromCoroutine(main())
        d.addTimeout(timeout, reactor)
        d.addErrback(lambda f: errors.append(f.getErrorMessage()))
        d.addBoth(lambda _: loop.stop())
        d.addBoth(lambda _: reactor.stop())
        return d

    with bar:
        reactor.callWhenRunning(run)
        reactor.run(installSignalHandlers=False)
    db.close()
    if errors:
        raise click.ClickException("; ".join(errors))
    click.echo(f"prefetched {', '.join(names)}")
