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

JSON in and out; a thin twisted.web adapter over ProxyCache. Before any
resource sees a request, ``appliance.admin_access.decide`` judges its Host,
origin and token (DNS rebinding, cross-site writes, writes from other
hosts); a request body, which no endpoint takes, is refused past
``MAX_BODY`` bytes before it is buffered.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import secrets
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.web import resource, server

from appliance.admin_access import AdminAccess, Verdict, decide, is_loopback, redact_sessions
from appliance.cache.quota import cache_status
from appliance.http.pages import static_files, status_page
from appliance.metrics import CONTENT_TYPE, DaemonMetrics

log = logging.getLogger(__name__)

# Every argument travels in the query string (whose line Twisted caps at
# 16 KiB); a body is never needed, so a large one is refused unread.
MAX_BODY = 1024


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


class _AdminRequest(server.Request):
    """A request whose body is refused (413, connection closed) past MAX_BODY,
    before Twisted buffers it in memory or a temporary file."""

    _body_bytes = 0
    _too_large = False

    def gotLength(self, length):  # noqa: N802 (Twisted API)
        if length is not None and length > MAX_BODY:
            self._refuse_body()
        super().gotLength(None if self._too_large else length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY:
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._too_large:
            super().process()

    def _refuse_body(self) -> None:
        if self._too_large:
            return
        self._too_large = True
        self.content = io.BytesIO()  # keep nothing more
        body = json.dumps({"error": f"request bodies over {MAX_BODY} bytes are refused"})
        self.channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body.encode()))
        self.channel.loseConnection()


class _Refusal(resource.Resource):
    """The answer to a request the access policy refused, whatever its method."""

    isLeaf = True

    def __init__(self, verdict: Verdict) -> None:
        super().__init__()
        self.verdict = verdict

    def render(self, request) -> bytes:
        request.setResponseCode(self.verdict.status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if self.verdict.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="kvod admin"')
        if self.verdict.status == 405:
            request.setHeader(b"allow", b"GET, HEAD, POST")
        return json.dumps({"error": self.verdict.reason}).encode()


def _headers(request) -> dict[str, str]:
    # Repeated headers are joined as HTTP says they may be; a doubled Host
    # then matches no name and is refused.
    return {name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values)
            for name, values in request.requestHeaders.getAllRawHeaders()}


class AdminSite(server.Site):
    """The admin listener's site: every request passes ``access`` first.

    Until :meth:`listening_on` says the listener is on loopback, requests
    are judged as if it were not (the safe side)."""

    noisy = False
    requestFactory = _AdminRequest

    def __init__(self, root: resource.Resource, access: AdminAccess) -> None:
        super().__init__(root)
        self.access = access
        self.displayTracebacks = False

    def log(self, request) -> None:
        """No access log: ``kvod cache prefetch`` polls several times a second."""

    def listening_on(self, host: str | None) -> None:
        """The listener's own address is ``host`` (None: not IP, e.g. a UNIX
        socket, which only this machine reaches)."""
        loopback = host is None or is_loopback(host)
        self.access = dataclasses.replace(self.access, loopback_only=loopback)

    def getResourceFor(self, request):  # noqa: N802 (Twisted API)
        local, peer = request.getHost(), request.getClientAddress()
        local_host = getattr(local, "host", None)
        verdict = decide(self.access, method=request.method.decode("latin-1"),
                         headers=_headers(request), local_host=local_host or "",
                         peer_host=getattr(peer, "host", None) or "::1")
        request.kvod_full = verdict.full
        # Twisted names itself and its version to anyone; say less.
        request.setHeader(b"server", b"kvod")
        if verdict.status:
            # %r: the method and URI are the client's bytes; escape sequences
            # in them must not reach an operator's terminal as such
            log.info("admin: %r %r from %s refused with %d: %s",
                     request.method[:16].decode("latin-1"),
                     request.uri[:200].decode("latin-1"),
                     getattr(peer, "host", peer), verdict.status, verdict.reason)
            return _Refusal(verdict)
        return super().getResourceFor(request)


class _Leaf(resource.Resource):
    """A read-only resource whose body comes from a function of whether the
    reader may see everything (see ``appliance.admin_access``)."""

    isLeaf = True

    def __init__(self, render: Callable[[bool], tuple[bytes, bytes]]):
        super().__init__()
        self._render = render

    def render_GET(self, request) -> bytes:  # noqa: N802 (Twisted API)
        body, content_type = self._render(getattr(request, "kvod_full", False))
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    def render_HEAD(self, request) -> bytes:  # noqa: N802 (Twisted API)
        return self.render_GET(request)


def admin_site(status: Callable[[], dict], cache=None, metrics: DaemonMetrics | None = None,
               *, access: AdminAccess | None = None) -> AdminSite:
    """The admin site: ``status()`` as /status (JSON), ``metrics`` (by
    default the status's own series) as /metrics (Prometheus), the proxy
    cache's /cache when there is one, the status page at / and its static
    files; requests judged by ``access`` (default: no names, no token)."""
    metrics = metrics or DaemonMetrics(status)
    # Aliases of session ids for readers who may not see them: keyed per
    # daemon run, so they are stable for a scraper and say nothing outside.
    secret = secrets.token_bytes(32)

    def snapshot(full: bool) -> dict:
        return status() if full else redact_sessions(status(), secret)

    root = resource.Resource()
    root.putChild(b"status", _Leaf(lambda full: (
        json.dumps(snapshot(full), indent=2).encode() + b"\n", b"application/json")))
    # aggregate series only: no session id to hide
    root.putChild(b"metrics", _Leaf(lambda full: (metrics.text(), CONTENT_TYPE.encode())))
    if cache is not None:
        root.putChild(b"cache", CacheAdmin(cache))
    root.putChild(b"", status_page())
    root.putChild(b"static", static_files())
    return AdminSite(root, access or AdminAccess(loopback_only=False))


__all__ = ["AdminSite", "CacheAdmin", "MAX_BODY", "admin_site", "cache_status"]
