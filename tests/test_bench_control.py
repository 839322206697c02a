"""The control-plane benchmarks run end to end on a small scale (their
figures are read by people from ``kvod bench``; here they must work and
say what they measured)."""

from __future__ import annotations

import json
import subprocess

import pytest

from appliance.bench.crowd import run_crowd
from appliance.bench.daemon import rtp_port_config
from appliance.bench.latency import run_latency
from appliance.bench.proxy import _pct, run_proxy
from appliance.bench.rtsps import run_rtsps
from appliance.media.server_ports import ephemeral_overlap
from tests.helpers.daemon import KVOD

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pairs", [50, 1000, 4000])
def test_the_benches_server_ports_hold_the_crowd_clear_of_the_clients_ports(pairs):
    """The benches' clients bind ephemeral ports on the same machine: the
    server's range is kept out of the kernel's, with room for every pair."""
    lines = dict(line.split(" = ") for line in rtp_port_config(pairs).splitlines())
    low, high = int(lines["rtp_port_min"]), int(lines["rtp_port_max"])
    assert low % 2 == 0 and (high - low) // 2 >= pairs
    assert ephemeral_overlap(low, high) is None


def test_crowd_sets_up_every_session_and_times_its_first_packet(short_ts_file):
    result = run_crowd(short_ts_file, sessions=30, concurrency=10, timeout=10)
    assert result["failures"] == 0, result
    assert 0 < result["all_first_packet_ms"] < 10_000
    assert 0 < result["play_to_first_rtp_ms"]["p50"] <= result["play_to_first_rtp_ms"]["p99"]
    assert result["server_cpu_ms_per_session"] > 0


def test_proxy_bench_times_the_control_plane_idle_and_while_filling(ts_file, short_ts_file):
    result = run_proxy(short_ts_file, ts_file, misses=2, viewers=1, fill_rounds=2)
    fill = result["fill"]
    assert fill["rounds"] == 2 and fill["fill_mb_per_s"] > 0 and fill["fill_to_plain_read"] > 0
    assert fill["fill_to_file_read"] == pytest.approx(
        fill["fill_mb_per_s"] / fill["origin_read_to_file_mb_per_s"], rel=0.01)
    idle, busy = fill["options_ms_idle"], fill["options_ms_while_filling"]
    assert idle["count"] >= 50          # a second of asking, every 5 ms
    assert 0 < idle["p50"] <= idle["p99"] < 1000
    if busy["count"]:                   # a small title's fill may end before the first answer
        assert 0 < busy["p50"] <= busy["p99"] < 1000
    assert _pct([]) == {"p50": None, "p99": None, "count": 0}
    assert _pct([2.0, 1.0, 3.0])["p50"] == 2.0


def test_latency_times_titles_side_by_side(ts_file, short_ts_file):
    result = run_latency(ts_file, sessions=5, titles={"long": ts_file, "short": short_ts_file},
                         floor=True)
    assert set(result["titles"]) == {"long", "short"}
    for figures in [*result["titles"].values(), result["floor"]]:
        for key in ("describe_to_first_rtp_ms", "play_to_first_rtp_ms"):
            assert 0 < figures[key]["p50"] <= figures[key]["p99"] < 1000
    # the one-title keys stay for scripts that read them
    assert result["play_to_first_rtp_ms"] == result["titles"]["long"]["play_to_first_rtp_ms"]


def test_bench_latency_command_prints_the_floor_beside_the_titles():
    out = subprocess.run(KVOD + ["bench", "latency", "--sessions", "3"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert "no-work server" in out and "live555 here" in out
    row = next(line for line in out.splitlines() if "DESCRIBE -> first RTP" in line)
    assert len(row.split("/")) == 4       # the title, the no-work server, live555


def test_bench_crowd_command_prints_its_targets():
    out = subprocess.run(KVOD + ["bench", "crowd", "--sessions", "20", "--concurrency", "5",
                                 "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    assert json.loads(out)["failures"] == 0


def test_rtsps_cost_is_measured_against_plain_tcp(ts_file):
    result = run_rtsps(ts_file, viewers=2, seconds=1.0, rounds=1)
    assert not result["errors"], result
    # both ways carry the title's rate: 10 s of ~1 Mb/s video and audio
    assert result["tcp_mbit_per_viewer"] > 0.5 and result["rtsps_mbit_per_viewer"] > 0.5
    assert result["tcp_cpu_ms_per_stream_s"] > 0 and result["rtsps_cpu_ms_per_stream_s"] > 0
