"""The pages in a real browser: headless Chromium plays a title through the
player page (hls.js bundled by make web), a remote MP4 too while it fills
from a slow nginx, and the status page shows a live RTSP session. Each test
saves a screenshot under build/screenshots/."""

from __future__ import annotations

import os
import time

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from appliance.http.pages import STATIC_DIR
from tests.helpers.browser import chromium, screenshot
from tests.helpers.daemon import KvodDaemon
from tests.helpers.origins import nginx_folder, publish
from tests.helpers.titles import make_mp4
from tests.helpers.web import curl

pytestmark = pytest.mark.integration

HLSJS = os.path.join(STATIC_DIR, "vendor", "hls.min.js")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """nginx at 50 kB/s a request: an 8 s MP4 (680 KB) fills for seconds,
    longer than the browser takes to start playing it."""
    nginx = nginx_folder(tmp_path_factory.mktemp("nginx"), limit_rate="50k")
    publish(nginx, "remote/mp4", make_mp4(seconds=8))
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, ts_file, origin):
    assert os.path.exists(HLSJS), "make web bundles hls.js"
    d = KvodDaemon(str(tmp_path_factory.mktemp("kvod")), http=True,
                   http_keys="target_duration = 2\n",
                   extra=f'[origin]\nbase_url = ["{origin.base_url}"]\n')
    d.add(ts_file, "movies/first")
    d.add(make_mp4(seconds=8), "movies/mp4")     # HLS through fMP4 segments
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_static_files_and_no_listing(daemon):
    base = f"http://127.0.0.1:{daemon.http_port}"
    assert curl(base + "/static/vendor/hls.min.js").status == 200
    assert curl(base + "/static/").status == 404
    assert curl(base + "/static/../pages.py", "--path-as-is").status == 404
    assert curl(base + "/static/%2e%2e/pages.py", "--path-as-is").status == 404


@pytest.mark.parametrize("name,width,shot", [("movies/first", 640, "player"),
                                             ("movies/mp4", 320, "player-mp4"),
                                             ("remote/mp4", 320, "player-mp4-filling")])
def test_the_player_page_plays_a_title(daemon, name, width, shot):
    """The remote MP4 is not cached: the page's first request starts its
    fill, and it plays while the fill runs."""
    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{daemon.http_port}/player/{name}")
        time_now = lambda: browser.execute_script(  # noqa: E731
            "return document.getElementById('video').currentTime")
        error = lambda: browser.execute_script(  # noqa: E731
            "const v = document.getElementById('video');"
            "return (v.error && v.error.message) || document.body.dataset.error || null")
        try:
            wait_until(lambda: error() or time_now() > 0, 40, "the video to start")
            if name.startswith("remote/"):
                assert daemon.title_info(name)["state"] == "partial"   # still filling
            wait_until(lambda: error() or time_now() > 3.0, 40, "the video to play 3 s")
            assert error() is None, error()
            first = time_now()
            time.sleep(1.0)
            assert time_now() > first                    # it goes on playing
            assert browser.execute_script(
                "return document.getElementById('video').videoWidth") == width
        finally:
            path = screenshot(browser, shot)
        assert os.path.getsize(path) > 10_000


def test_the_status_page_shows_a_session_live(daemon):
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        url = client.url("movies/first")
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        with chromium() as browser:
            browser.get(f"http://127.0.0.1:{daemon.admin_port}/")
            rows = lambda: browser.execute_script(  # noqa: E731
                "return [...document.querySelectorAll('#session-table tbody tr')]"
                ".map(r => [...r.cells].map(c => c.textContent))")
            polls = lambda: int(browser.execute_script(  # noqa: E731
                "return document.body.dataset.polls || 0"))
            # the session appears before PLAY; then it plays and its Mb/s rise
            wait_until(lambda: any("movies/first" in r for r in rows()), 15, "the session row")
            assert client.request("PLAY", url + "/", [("Session", session)]).status == 200
            assert receiver.wait_for(50)
            row = wait_until(lambda: next((r for r in rows() if r[2] == "playing"
                                           and float(r[5]) > 0.1), None), 15, "Mb/s > 0")
            assert row[1] == "movies/first"
            seen = polls()
            wait_until(lambda: polls() >= seen + 2, 10, "two more polls")
            cache_rows = browser.execute_script(
                "return [...document.querySelectorAll('#cache-table tbody tr')]"
                ".map(r => r.cells[0].textContent)")
            assert "movies/first" in cache_rows
            time.sleep(3)  # a few seconds of chart in the screenshot
            path = screenshot(browser, "status")
        assert os.path.getsize(path) > 10_000
    finally:
        client.close()
        receiver.close()
