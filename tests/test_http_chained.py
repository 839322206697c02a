"""kvod as another kvod's origin: nginx -> parent kvod -> edge kvod, all
real processes on loopback. The edge's ``[origin] base_url`` is the
parent's ``/titles/``; a viewer of the edge makes both fill."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request

import pytest

from catalog import open_catalog
from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from tests.helpers.daemon import KvodDaemon
from tests.helpers.origins import NginxOrigin
from tests.helpers.web import curl

pytestmark = pytest.mark.integration


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cache_title(daemon: KvodDaemon, name: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/cache", timeout=5) as r:
        titles = json.load(r)["titles"]
    return next((t for t in titles if t["name"] == name), {})


def wait_complete(daemon: KvodDaemon, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while cache_title(daemon, name).get("state") != "complete":
        assert time.monotonic() < deadline, (cache_title(daemon, name), daemon.log()[-3000:])
        time.sleep(0.1)


@pytest.fixture
def chain(tmp_path, ts_file):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(ts_file, root / "movie.ts")
    for folder in ("nginx", "parent", "edge"):
        (tmp_path / folder).mkdir()
    nginx = NginxOrigin(str(tmp_path / "nginx"), str(root))
    parent = KvodDaemon(str(tmp_path / "parent"), http=True,
                        extra=f'[origin]\nbase_url = "{nginx.base_url}"\n')
    parent.start()
    edge = KvodDaemon(str(tmp_path / "edge"), http=True,
                      extra=f'[origin]\nbase_url = "http://127.0.0.1:{parent.http_port}/titles/"\n'
                            'chunk_bytes = "256KiB"\n')
    edge.start()
    yield nginx, parent, edge
    assert edge.stop() == 0, edge.log()
    assert parent.stop() == 0, parent.log()
    nginx.stop()


def test_an_edge_streams_a_title_its_parent_fetches_from_the_origin(chain, ts_file):
    nginx, parent, edge = chain
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", edge.port)
    try:
        url = client.url("movie.ts")
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
        assert receiver.wait_for(50), edge.log()[-3000:]
    finally:
        client.close()
        receiver.close()
    wait_complete(edge, "movie.ts")
    wait_complete(parent, "movie.ts")
    size = os.path.getsize(ts_file)
    # every byte left the origin once, and both copies are the origin's bytes
    assert nginx.bytes_sent("movie.ts") == size, nginx.requests()
    want = sha256(ts_file)
    for daemon in (parent, edge):
        media = os.path.join(daemon.folder, "cache", "titles", "movie.ts", "media.ts")
        assert sha256(media) == want
    # the edge serves the title itself over HTTP now, with the parent's validators
    answer = curl(edge.http_url("movie.ts"))
    assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == want
    assert nginx.bytes_sent("movie.ts") == size


def test_an_edge_downloading_a_title_uses_if_range_against_its_parent(chain, ts_file):
    nginx, parent, edge = chain
    answer = curl(edge.http_url("movie.ts"))
    with open(ts_file, "rb") as f:
        assert answer.body == f.read()
    wait_complete(edge, "movie.ts")
    # the parent's ETag is the version the edge recorded (and sends as If-Range)
    etag = curl(parent.http_url("movie.ts"), "-I").headers["etag"]
    with open_catalog(os.path.join(edge.folder, "catalog.db")) as catalog:
        assert catalog.get_title("movie.ts").etag == etag
    ranged = curl(parent.http_url("movie.ts"), "-r", "0-9", "-H", f"If-Range: {etag}")
    assert ranged.status == 206
    assert nginx.bytes_sent("movie.ts") == os.path.getsize(ts_file)
