"""What every ``kvod`` subcommand shares: the config and catalog openers,
the way to the running daemon's admin endpoint, and output helpers.

One admin-address parser lives here: every command that talks to the
daemon (``status``, ``cache …``) reads ``[admin] listen`` the same way, so
no command can conclude "no daemon runs" from a listen form another
command understands.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, Optional

import click

from appliance.endpoint_strings import parse_endpoint

DEFAULT_CONFIG = "/etc/kvod/kvod.toml"
ADMIN_TIMEOUT = 5.0


def load_config(path: Optional[str]):
    """The Config at ``path`` (or the default file, or built-in defaults);
    a bad file is a one-line click error."""
    from appliance.config import ConfigError
    from appliance.config import load_config as load
    path = path if path is not None else _default_path()
    try:
        return load(path)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(f"config: {exc}") from None


def _default_path() -> Optional[str]:
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def config_path(ctx: click.Context) -> Optional[str]:
    """The config file this run reads (``--config``, ``KVOD_CONFIG``, or the
    default file if it exists); None for built-in defaults."""
    root = ctx.find_root()
    root.ensure_object(dict)
    given = root.obj.get("config_path")
    return given if given is not None else _default_path()


def config_of(ctx: click.Context):
    """The Config named by the group's ``--config``, loaded once per run."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        root.obj["config"] = load_config(root.obj.get("config_path"))
    return root.obj["config"]


def act_as_data_owner(config) -> None:
    """Make what this command writes usable by the daemon that owns the data
    (``appliance.data_owner``): as root, become the data folder's owner; in
    the shared group's layout, write group-writable files."""
    from appliance.data_owner import DataOwnerError, become_owner, share_with_group
    try:
        become_owner(os.path.dirname(os.path.abspath(config.catalog.path)))
    except DataOwnerError as exc:
        raise click.ClickException(str(exc)) from None
    share_with_group(config.catalog.path)


def catalog_failure(config, exc: Exception) -> click.ClickException:
    """The one-line click error (exit code 1) for a catalog that cannot be opened."""
    from catalog import CatalogUnusable
    if isinstance(exc, CatalogUnusable):
        return click.ClickException(str(exc))  # it names the file and what to do
    return click.ClickException(f"catalog {config.catalog.path}: {exc}")


def open_catalog(config):
    """The catalog of ``config``, opened as the data's owner (see
    :func:`act_as_data_owner`); a bad catalog is a one-line click error."""
    from catalog import CatalogError
    from catalog import open_catalog as open_db
    act_as_data_owner(config)
    try:
        return open_db(config.catalog.path)
    except CatalogError as exc:
        raise catalog_failure(config, exc) from None


def admin_address(listen: str) -> Optional[tuple[str, int]]:
    """(host, port) at which a client reaches a server listening on the
    Twisted endpoint string ``listen``, or None when it is not TCP.

    Understands every TCP form Twisted's ``serverFromString`` takes:
    ``tcp:PORT``, ``tcp:port=PORT``, positional or keyword ``interface``
    and ``backlog``, ``tcp6:``, and backslash-escaped colons in IPv6
    interfaces. A wildcard interface is reached on loopback.
    """
    parsed = parse_endpoint(listen)
    if not parsed.tcp:
        return None
    kind, options = parsed.kind, parsed.options
    try:
        port = int(options["port"])
    except (KeyError, ValueError):
        return None
    host = options.get("interface", "")
    if host in ("", "0.0.0.0"):
        host = "::1" if kind == "tcp6" and host == "" else "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def admin_url(config) -> Optional[str]:
    """``http://host:port`` of the daemon's admin endpoint, if it is TCP."""
    address = admin_address(config.admin.listen)
    if address is None:
        return None
    host, port = address
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def admin_headers(config) -> dict[str, str]:
    """The headers every admin request carries: the token of ``[admin]
    token_file`` when this user can read it (writes to an admin listener off
    loopback need it, and readers with it see session ids)."""
    from appliance.admin_token import read_token
    token = read_token(config.admin.token_file)
    return {"Authorization": f"Bearer {token}"} if token else {}


def admin_call(config, method: str, path: str, **query) -> Optional[tuple[int, dict]]:
    """(status, JSON) from the daemon, or None when no daemon answers."""
    base = admin_url(config)
    if base is None:
        return None
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers=admin_headers(config))
    try:
        with urllib.request.urlopen(req, timeout=ADMIN_TIMEOUT) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {"error": exc.reason}
        if exc.code == 401 and isinstance(body, dict):
            body["error"] = (f"{body.get('error', 'unauthorized')} (kvod reads the token "
                             f"from {config.admin.token_file or '[admin] token_file'}, "
                             "which needs read access: group kvod)")
        return exc.code, body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def human_bytes(n: Optional[int]) -> str:
    """``n`` bytes as people read them: ``512 B``, ``1.5 MiB``; ``-`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def duration(ns: Optional[int]) -> str:
    """A duration in ns as ``h:mm:ss.mmm``; ``-`` when unknown."""
    if not ns:
        return "-"
    s = ns / 1e9
    return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool) -> Iterator:
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
