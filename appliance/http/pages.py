"""The pages people look at: the status page (``/`` on the admin
listener), the player page (``/player/<name>`` on the HTTP listener) and
the static files both load (``/static/``: CSS, scripts, the hls.js that
``make web`` bundles from the npm registry).

The pages are static files; they read the daemon's JSON (``/status``,
``/cache``) and playlists (``/hls/``) from the browser, so nothing here
renders HTML per request.
"""

from __future__ import annotations

import os

from twisted.web import resource, static

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class _Page(resource.Resource):
    """One static HTML page, whatever the path below it."""

    isLeaf = True

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.path = os.path.join(STATIC_DIR, filename)

    def render_GET(self, request) -> bytes:  # noqa: N802 (Twisted API)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        # the page's scripts come from this daemon only
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:")
        with open(self.path, "rb") as f:
            return f.read()


def static_files() -> resource.Resource:
    """``/static/``: the pages' CSS and scripts (no directory listings)."""
    files = static.File(STATIC_DIR)
    files.directoryListing = lambda: resource.NoResource()  # type: ignore[method-assign]
    return files


def status_page() -> resource.Resource:
    """The live status page (``/`` on the admin listener)."""
    return _Page("status.html")


def player_page() -> resource.Resource:
    """The player page (``/player/<name>``)."""
    return _Page("player.html")
