"""The interop matrix's cells no other file covers: ffprobe over UDP, and
GStreamer's ``playbin`` (the element a desktop player uses) over UDP and
over TCP (``rtspt://``: TCP only). The rest of the matrix is in
test_integration.py (UDP), test_tcp_integration.py (TCP) and test_rtsps.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.daemon import KvodDaemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, short_ts_file):
    d = KvodDaemon(str(tmp_path_factory.mktemp("interop")))
    d.add(short_ts_file, "clips/short")
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def packet_counts(source: str, *args: str) -> dict[str, int]:
    """ffprobe's packets read per stream type of ``source``."""
    out = subprocess.run(["ffprobe", "-v", "error", *args, "-count_packets",
                          "-show_entries", "stream=codec_type,nb_read_packets",
                          "-of", "json", source],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}


def test_ffprobe_over_udp_counts_every_frame(daemon, short_ts_file):
    got = packet_counts(daemon.url("clips/short"), "-rtsp_transport", "udp")
    assert got == packet_counts(short_ts_file) and got["video"] > 50


@pytest.mark.parametrize("scheme", ["rtsp", "rtspt"], ids=["udp", "tcp"])
def test_playbin_decodes_the_title_to_its_end(daemon, scheme):
    """playbin picks the depayloader and decoders itself; it plays the 3 s
    title to the end (EOS) with no error, decoding video and audio."""
    url = daemon.url("clips/short").replace("rtsp://", f"{scheme}://", 1)
    proc = subprocess.run(["gst-launch-1.0", "-q", "playbin", f"uri={url}",
                           "video-sink=fakesink sync=true", "audio-sink=fakesink sync=true"],
                          capture_output=True, text=True, timeout=40)
    errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
              if line.startswith("ERROR")]
    # GStreamer 1.22's own EOS/PAUSE race on our BYE (see tests/helpers/players.py)
    real = [e for e in errors if "Could not write to resource" not in e]
    assert not real, proc.stdout + proc.stderr
