"""The HTTP listener's site: ``/titles/`` (downloads), ``/hls/`` (playlists),
``/player/`` (a page that plays a title) and ``/static/``."""

from __future__ import annotations

from twisted.web import resource, server

from appliance.http.download import TitleDownloads
from appliance.http.hls import HlsPlaylists
from appliance.http.pages import player_page, static_files


class HttpSite(server.Site):
    """The ``[http] listen`` site; ``downloads`` is its ``/titles/`` resource."""

    def __init__(self, root: resource.Resource, downloads: TitleDownloads) -> None:
        super().__init__(root)
        self.downloads = downloads
        self.displayTracebacks = False

    def busy(self, name: str) -> bool:
        """Whether ``name`` is being downloaded (eviction must wait)."""
        return self.downloads.busy(name)


def http_site(cache, reactor, target_duration: float = 6.0) -> HttpSite:
    """The site serving ``cache``'s titles over HTTP."""
    root = resource.Resource()
    downloads = TitleDownloads(cache, reactor)
    root.putChild(b"titles", downloads)
    root.putChild(b"hls", HlsPlaylists(downloads, target_duration))
    root.putChild(b"player", player_page())
    root.putChild(b"static", static_files())
    return HttpSite(root, downloads)
