"""The admin HTTP endpoint (localhost): the daemon's status, its metrics,
what the cache holds, and the cache commands that must go through the
running daemon because it streams and fills (``kvod cache prefetch``,
``kvod cache evict``).

    GET  /                          the live status page (appliance.http.pages)
    GET  /status                    the daemon's status JSON (kvod status)
    GET  /metrics                   Prometheus text
    GET  /cache                     status JSON (cache_status)
    POST /cache/prefetch?name=NAME  start filling NAME (or queue it when every fill slot
                                    is taken); 202, or the error
    POST /cache/evict?name=NAME     evict all of NAME; 409 if it is busy or pinned

JSON in and out; a thin twisted.web adapter over ProxyCache.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.web import resource, server

from appliance.cache.quota import cache_status
from appliance.http.pages import static_files, status_page
from appliance.metrics import CONTENT_TYPE, DaemonMetrics

log = logging.getLogger(__name__)


class CacheAdmin(resource.Resource):
    """``/cache``: the proxy cache's status and commands."""

    isLeaf = True

    def __init__(self, cache) -> None:
        super().__init__()
        self.cache = cache

    def _json(self, request, code: int, body: dict) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()

    def render_GET(self, request) -> bytes:  # noqa: N802 (Twisted API)
        if request.postpath not in ([], [b""]):
            return self._json(request, 404, {"error": "no such resource"})
        return self._json(request, 200, self.cache.status())

    def render_POST(self, request) -> bytes:  # noqa: N802 (Twisted API)
        names = request.args.get(b"name") or [b""]
        name = names[0].decode("utf-8", "replace")
        if request.postpath == [b"prefetch"]:
            return self._prefetch(request, name)
        if request.postpath == [b"evict"]:
            title = self.cache.get_title(name)
            if title is None:
                return self._json(request, 404, {"error": f"no title {name!r}"})
            if title.pinned:
                return self._json(request, 409, {"error": f"{name} is pinned (unpin it first)"})
            if self.cache.busy(name):
                return self._json(request, 409, {"error": f"{name} is being streamed or filled"})
            freed = self.cache.quota.evict(name)
            return self._json(request, 200, {"name": name, "freed_bytes": freed})
        return self._json(request, 404, {"error": "no such resource"})

    def _prefetch(self, request, name: str):
        d = Deferred.fromCoroutine(self.cache.prefetch(name))

        def done(started):
            # not started: every fill slot is taken; it starts when one frees
            request.write(self._json(request, 202, {"name": name, "filling": started,
                                                    "queued": not started}))
            request.finish()

        def failed(failure):
            status = getattr(failure.value, "status", 500)
            code = 404 if status == 404 else 502 if status in (502, 504) else 503
            request.write(self._json(request, code, {"name": name,
                                                     "error": failure.getErrorMessage()}))
            request.finish()
        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class _QuietSite(server.Site):
    """No access log: ``kvod cache prefetch`` polls several times a second."""

    noisy = False

    def log(self, request) -> None:
        pass


class _Leaf(resource.Resource):
    """A read-only resource whose body comes from a function."""

    isLeaf = True

    def __init__(self, render: Callable[[], tuple[bytes, bytes]]):
        super().__init__()
        self._render = render

    def render_GET(self, request) -> bytes:  # noqa: N802 (Twisted API)
        body, content_type = self._render()
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    def render_HEAD(self, request) -> bytes:  # noqa: N802 (Twisted API)
        return self.render_GET(request)


def admin_site(status: Callable[[], dict], cache=None,
               metrics: DaemonMetrics | None = None) -> server.Site:
    """The admin site: ``status()`` as /status (JSON), ``metrics`` (by
    default the status's own series) as /metrics (Prometheus), and the proxy
    cache's /cache when there is one."""
    metrics = metrics or DaemonMetrics(status)
    root = resource.Resource()
    root.putChild(b"status", _Leaf(lambda: (json.dumps(status(), indent=2).encode() + b"\n",
                                            b"application/json")))
    root.putChild(b"metrics", _Leaf(lambda: (metrics.text(), CONTENT_TYPE.encode())))
    if cache is not None:
        root.putChild(b"cache", CacheAdmin(cache))
    root.putChild(b"", status_page())
    root.putChild(b"static", static_files())
    site = _QuietSite(root)
    site.displayTracebacks = False
    return site


__all__ = ["CacheAdmin", "admin_site", "cache_status"]
