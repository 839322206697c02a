"""The proxy cache for real: nginx as the origin, the real daemon, GStreamer
and ffmpeg as viewers of titles the cache has never seen.

Each test asks for its own title name (a symlink in the origin's folder),
so it starts from a cold cache while the daemon and nginx are shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from appliance.rtsp_client import RtpReceiver, RtspClient
from rtpengine.rtp import parse_rtp
from tests.kvod_daemon import KvodDaemon
from tests.origin_server import NginxOrigin
from tests.test_integration import assert_contiguous, framemd5, gst_receive, sha256

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def origin(tmp_path_factory, ts_file, short_ts_file):
    folder = tmp_path_factory.mktemp("nginx")
    root = folder / "root"
    root.mkdir()
    nginx = NginxOrigin(str(folder), str(root))
    nginx.titles = {"movie": ts_file, "short": short_ts_file}
    nginx.root_path = root
    yield nginx
    nginx.stop()


def publish(origin: NginxOrigin, name: str, source: str) -> str:
    """Make ``name`` a title of the origin with the bytes of ``source``."""
    path = origin.root_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.symlink(source, path)
    return name


def origin_config(*base_urls: str, **origin_keys) -> str:
    urls = ", ".join(f'"{u}"' for u in base_urls)
    extra = "".join(f"{k} = {v}\n" for k, v in origin_keys.items())
    return f"[origin]\nbase_url = [{urls}]\n{extra}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, origin):
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")),
                   extra="[rtcp]\nsr_interval = 1.0\n" + origin_config(origin.base_url))
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def title_info(daemon: KvodDaemon, name: str) -> dict:
    return json.loads(daemon.kvod("catalog", "show", name, "--json").stdout)


def wait_complete(daemon: KvodDaemon, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = title_info(daemon, name)
        if info["state"] == "complete":
            return info
        time.sleep(0.1)
    raise AssertionError(f"{name} did not complete: {title_info(daemon, name)}\n{daemon.log()}")


def test_gstreamer_plays_an_uncached_title_byte_identical(daemon, origin, ts_file, tmp_path):
    name = publish(origin, "first/movie.ts", ts_file)
    out = str(tmp_path / "gst.ts")
    proc = gst_receive(daemon.url(name), out)
    output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, output
    assert sha256(out) == sha256(ts_file)
    info = wait_complete(daemon, name)
    assert sha256(info["media_path"]) == sha256(ts_file)
    # every byte once: probe (head + tail) and fill never overlap
    assert origin.bytes_sent(name) == os.path.getsize(ts_file)
    assert "miss first/movie.ts" in daemon.log()


def test_ffmpeg_gets_every_frame_of_an_uncached_title(daemon, origin, short_ts_file):
    name = publish(origin, "ff/short.ts", short_ts_file)
    received = framemd5(daemon.url(name), "-rtsp_transport", "udp", timeout=40)
    assert received == framemd5(short_ts_file)


def test_a_complete_title_is_served_without_the_origin(tmp_path, short_ts_file):
    folder = tmp_path / "o"
    (folder / "root").mkdir(parents=True)
    os.symlink(short_ts_file, folder / "root" / "t.ts")
    nginx = NginxOrigin(str(folder), str(folder / "root"))
    (tmp_path / "k").mkdir()
    d = KvodDaemon(str(tmp_path / "k"), extra=origin_config(nginx.base_url))
    try:
        d.start()
        proc = gst_receive(d.url("t.ts"), str(tmp_path / "1.ts"))
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        wait_complete(d, "t.ts")
        nginx.stop()  # gone: the cached copy must do
        proc = gst_receive(d.url("t.ts"), str(tmp_path / "2.ts"))
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert sha256(str(tmp_path / "2.ts")) == sha256(short_ts_file)
        # the probe's head and tail were the whole title; nothing since
        assert [r[2] for r in nginx.requests()] == [256 * 1024, os.path.getsize(short_ts_file)
                                                    - 256 * 1024]
    finally:
        nginx.stop()
        assert d.stop() == 0, d.log()


def test_missing_title_is_404_and_no_origin_is_404(daemon, origin):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        assert client.request("DESCRIBE", client.url("no/such.ts")).status == 404
        assert client.request("DESCRIBE", client.url("../etc/passwd")).status == 404
        assert client.request("OPTIONS", "*").status == 200
    finally:
        client.close()
