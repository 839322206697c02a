"""``kvod cache ...``: what the cache holds, and prefetch, evict, pin, unpin.

``status``, ``pin`` and ``unpin`` work on the catalog (with or without a
daemon). ``prefetch`` and ``evict`` go through the running daemon's admin
endpoint, because it is the one that fills titles and knows which are being
streamed; with no daemon answering, they act on the cache themselves
(``prefetch`` runs the fills in this process).
"""

from __future__ import annotations

import json
import sys
import time

import click

from appliance.cli.common import admin_call, config_of, human_bytes, open_catalog

def _status_here(config) -> dict:
    from appliance.cache.quota import cache_status
    db = open_catalog(config)
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
    config = config_of(ctx)
    answer = admin_call(config, "GET", "/cache")
    status = answer[1] if answer and answer[0] == 200 else _status_here(config)
    status["daemon"] = bool(answer and answer[0] == 200)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    quota = human_bytes(status["quota_bytes"]) if status["quota_bytes"] else "no quota"
    click.echo(f"used {human_bytes(status['used_bytes'])} of {quota} "
               f"(+{human_bytes(status['reserved_bytes'])} reserved by fills), "
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
                   f"{human_bytes(t['size']):>10}  {t['hits']:>5}  {flags}")


def _set_pin(ctx: click.Context, name: str, pinned: bool) -> None:
    from catalog import TitleNotFound
    db = open_catalog(config_of(ctx))
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
    config = config_of(ctx)
    answer = admin_call(config, "POST", "/cache/evict", name=name)
    if answer is not None:
        code, body = answer
        if code != 200:
            raise click.ClickException(body.get("error", f"the daemon answered {code}"))
        click.echo(f"evicted {name}: {human_bytes(body['freed_bytes'])} freed")
        return
    from appliance.cache.quota import CacheQuota
    db = open_catalog(config)
    try:
        title = db.get_title(name)
        if title is None:
            raise click.ClickException(f"no title {name!r}")
        if title.pinned:
            raise click.ClickException(f"{name} is pinned (kvod cache unpin {name} first)")
        freed = CacheQuota(db, policy=config.cache.policy).evict(name)
    finally:
        db.close()
    click.echo(f"evicted {name}: {human_bytes(freed)} freed")


@cache.command("prefetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--timeout", default=3600.0, show_default=True,
              help="Seconds to wait for the fills to complete.")
@click.pass_context
def cache_prefetch(ctx: click.Context, names: tuple[str, ...], timeout: float) -> None:
    """Fetch NAMES into the cache now, with a progress bar."""
    config = config_of(ctx)
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
            for name, error in answer[1].get("prefetch_errors", {}).items():
                if name in names:   # failed before it was known (a prefetch that queued)
                    raise click.ClickException(f"{name}: {error}")
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

    from appliance.daemon import make_cache

    db = open_catalog(config)
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
                await cache.prefetch(name, wait=True)
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
