"""kvod serve on the krtp backend inside the guest: GStreamer asks for a
title over RTSP and receives it whole, sent by the kernel module."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from rtpengine import krtp
from tests.helpers.daemon import KvodDaemon
from tests.helpers.titles import make_ts
from tests.helpers.players import gst_finished


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("backend,call", [("krtpsendfile", "krtpsendfile"),
                                          ("krtpmsend", "krtpmsend"),
                                          ("auto", "krtpsendfile")])
def test_daemon_serves_a_title_through_krtp(tmp_path, backend, call):
    title = make_ts(seconds=3, size="320x240", video_bitrate="500k")
    with krtp.KrtpEngine() as probe:
        before = probe.info()
    d = KvodDaemon(str(tmp_path), extra=f'[engine]\nbackend = "{backend}"\n')
    d.add(title, "short")
    d.start(timeout=180)
    try:
        out = tmp_path / "gst.ts"
        proc = subprocess.run(["gst-launch-1.0", "-q", "rtspsrc", f"location={d.url('short')}",
                               "protocols=udp", "!", "rtpmp2tdepay", "!", "filesink",
                               f"location={out}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        # GStreamer's own EOS/PAUSE race after our BYE is no failure (see
        # tests/test_integration.py); the bytes decide. The daemon's log says
        # what it did, should the client fail.
        assert gst_finished(proc, proc.stdout), f"{proc.stdout!r}\n--- kvod log ---\n{d.log()}"
        assert sha256(out) == sha256(title)
        # kvod status names the kernel engine and its counters
        status = d.kvod("status").stdout
        # "auto" picks the module by itself, and says so
        assert f"engine: {call} (asked {backend})" in status, status
        assert f"engine in use: kernel engine {call}" in status, status
        assert "kernel features: krtp" in status, status
        with krtp.KrtpEngine() as probe:
            after = probe.info()
        assert after.streams_opened > before.streams_opened
        assert after.packets_sent > before.packets_sent
    finally:
        code = d.stop(timeout=60)
    log = d.log()
    assert code == 0, log
    assert f"engine: kernel engine {call}" in log, log
