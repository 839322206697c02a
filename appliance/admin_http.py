"""The admin HTTP endpoint (localhost): ``/status`` JSON, ``/metrics`` text.

Read-only: GET and HEAD only. Everything it shows comes from a status
function the daemon passes in, so this module knows nothing of sessions.
"""

from __future__ import annotations

import json
from typing import Callable

from twisted.web import resource, server

from appliance.metrics import prometheus_text


class _Leaf(resource.Resource):
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


def admin_site(status: Callable[[], dict]) -> server.Site:
    """A Site serving ``status()`` as /status (JSON) and /metrics (Prometheus)."""
    root = resource.Resource()
    root.putChild(b"status", _Leaf(lambda: (json.dumps(status(), indent=2).encode() + b"\n",
                                            b"application/json")))
    root.putChild(b"metrics", _Leaf(lambda: (prometheus_text(status()).encode(),
                                             b"text/plain; version=0.0.4; charset=utf-8")))
    site = server.Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
