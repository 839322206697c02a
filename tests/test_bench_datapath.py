"""The data-path benchmark's parts: the namespace sink, the bare C loop,
the figures and the CLI's JSON. Small sizes: these check the machinery,
they time nothing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from rtpengine.bench import datapath as bd
from rtpengine.bench.netns_sink import netns_sink

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@needs_root
def test_sink_frees_packets_inside_its_namespace_and_goes_away(tmp_path):
    before = netns_names()
    media = bd.make_media(1 << 20)
    hints = str(tmp_path / "h.hint")
    n = bd.make_hints(media, 1316, hints)
    with netns_sink(offload=False) as sink:
        assert sink.name in netns_names()
        host = sink.dest[0]
        assert host.startswith("10.") and not host.startswith("127.")
        r = bd.run_strategy("gso", media, hints, n, sink)
        assert r["packets"] == n
        # every packet reached the ifb device and was freed there
        assert sink.dropped() >= n
        # the namespace's socket is not in ours: our routing never saw them
        s = sink.socket()
        assert s.getsockname()[0] != "0.0.0.0"
        s.close()
    assert netns_names() == before


@needs_root
def test_sink_is_removed_after_an_error():
    before = netns_names()
    with pytest.raises(RuntimeError, match="boom"):
        with netns_sink():
            raise RuntimeError("boom")
    assert netns_names() == before


def test_hints_cut_the_title_with_a_short_last_packet(tmp_path):
    media = bd.make_media(10_000)
    from rtpengine.hintfile import HintFile
    path = str(tmp_path / "h.hint")
    assert bd.make_hints(media, 1316, path) == 8
    with HintFile(path) as hf:
        recs = list(hf)
    assert [r.length for r in recs] == [1316] * 7 + [10_000 - 7 * 1316]
    assert all(r.send_ns == 0 for r in recs)


def test_parse_size():
    assert bd.parse_size("1GiB") == 1 << 30
    assert bd.parse_size("64M") == 64 << 20
    assert bd.parse_size("512KiB") == 512 << 10
    assert bd.parse_size("1000") == 1000


def test_datapath_run_on_loopback_has_every_figure():
    r = bd.run_datapath(size=4 << 20, payloads=(1024, 1316), sink="loopback",
                        strategies=["read_writev", "rtp_sendfile", "gso"])
    assert set(r["runs"]) == {"1024", "1316"}
    for payload, run in r["runs"].items():
        figs = run["strategies"]
        assert list(figs) == ["read_writev", "rtp_sendfile", "gso"]
        assert figs["read_writev"]["vs_read_writev"] == 1.0
        assert figs["rtp_sendfile"]["vs_rtp_sendfile"] == 1.0
        # rtp_sendfile makes 4 calls a packet, read_writev 2, gso a few per batch
        pk = run["packets"]
        assert figs["rtp_sendfile"]["syscalls"] == 4 * pk
        assert figs["read_writev"]["syscalls"] == 2 * pk
        assert figs["gso"]["syscalls"] < pk / 20
        assert run["bare_gso"]["packets"] == pk
        assert run["engine_gso_vs_bare"] > 0
    assert r["research_vs_rtp_sendfile"] == {"krtpsendfile": 0.73}
    table = bd.format_table(r)
    assert "krtpsendfile (research)" in table and "bare C loop" in table


def test_cli_datapath_json(monkeypatch):
    from appliance.cli.main import cli
    result = CliRunner().invoke(cli, ["bench", "datapath", "--size", "2MiB", "--json",
                                      "--strategy", "gso", "--strategy", "sendmmsg"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert set(data["runs"]["1316"]["strategies"]) == {"gso", "sendmmsg"}
    bad = CliRunner().invoke(cli, ["bench", "datapath", "--size", "1MiB", "--strategy", "nope"])
    assert bad.exit_code == 1 and "unknown strategy" in bad.output


@needs_root
@pytest.mark.parametrize("ports", ["shared", "per-session"])
def test_scale_run_counts_every_stream(ports, short_ts_file, tmp_path):
    """A few paced streams to the namespace sink, two sampled on arrival."""
    from rtpengine.bench.scale import format_table, run_once
    from rtpengine.index.mpegts import index_mpegts
    hint = str(tmp_path / "s.hint")
    index_mpegts(short_ts_file, hint)
    before = netns_names()
    r = run_once(short_ts_file, hint, 12, 1.0, sample=2, shared=ports == "shared",
                 burst_ns=20_000_000)
    assert netns_names() == before
    assert r["sessions"] == 12 and r["ports"] == ports and r["send_errors"] == 0
    assert r["packets"] > 0 and r["sample_packets"] > 0
    assert 0 < r["cpu_ms_per_stream_s"] < 50
    # fractions, counted; how timely they are is the benchmark's figure,
    # not a unit test's (these machines are shared and noisy)
    assert 0 < r["engine_within_5ms"] <= 1 and 0 < r["sample_within_5ms"] <= 1
    # a 20 ms burst groups a stream's packets; the bare loop measured the
    # kernel's cost for that shape
    assert r["packets_per_message"] > 1.5
    floor = r["kernel_floor"]
    assert floor["packets_per_message"] == round(r["packets_per_message"])
    assert floor["cpu_s_per_gib"] > 0 and floor["cpu_ms_per_stream_s"] > 0
    table = format_table({"title": "t", "runs": [r], "search": None, "lookahead_ms": 0.5,
                          "burst_ms": 20.0})
    assert "CPU ms/stream-s" in table and "burst 20.0 ms" in table and "floor" in table


@needs_root
@pytest.mark.parametrize("segs,dests", [(1, 0), (3, 7), (64, 1)])
def test_bare_loop_sends_the_shape_asked_for(segs, dests):
    """The bare loop's message size, clients and byte count; the sink
    frees every packet."""
    media = bd.make_media(8 << 20)
    with netns_sink(offload=False) as sink:
        r = bd.run_bare(media, 1316, sink, segs=segs, dests=dests, total=24 << 20)
        # the file three times over, in whole calls: a batch may pass the total
        assert 24 << 20 <= r["packets"] * 1316 < (24 << 20) + 2048 * 1316
        assert sink.dropped() >= r["packets"]
        # a call takes at most 1024 messages: one packet each, or more
        per_call = r["packets"] / r["syscalls"]
        assert (per_call <= 1024) if segs == 1 else (per_call > 1024)
    with pytest.raises(RuntimeError, match="SEGS"):
        with netns_sink(offload=False) as sink:
            bd.run_bare(media, 1316, sink, segs=65)


@needs_root
def test_scale_run_with_kernel_pacing_says_who_paced(short_ts_file, tmp_path):
    """--pacing kernel: per-session sockets are kernel-paced (SO_TXTIME,
    ignored here: no fq), in the JSON and the table."""
    from rtpengine.bench.scale import format_table, run_once
    from rtpengine.index.mpegts import index_mpegts
    hint = str(tmp_path / "s.hint")
    index_mpegts(short_ts_file, hint)
    r = run_once(short_ts_file, hint, 6, 1.0, sample=2, shared=False, pacing="kernel")
    assert r["pacing"] == "kernel" and r["paced"] == {"kernel": 6, "engine": 0}
    assert r["packets"] > 0 and r["send_errors"] == 0
    table = format_table({"title": "t", "pacing": "kernel", "runs": [r], "search": None,
                          "lookahead_ms": 0.5, "burst_ms": 4.0})
    assert "pacing kernel" in table and " 6k/0e " in table


def test_bench_streams_pacing_option_is_checked():
    from appliance.cli.main import cli
    bad = CliRunner().invoke(cli, ["bench", "streams", "--pacing", "fast"])
    assert bad.exit_code == 2 and "'fast' is not one of 'engine', 'kernel', 'auto'" in bad.output


def test_scale_run_over_tcp_counts_every_stream(short_ts_file, tmp_path):
    """--transport tcp: each stream on a loopback connection of its own,
    drained by another process; the engine's counters are the figures."""
    from appliance.cli.main import cli
    from rtpengine.bench.scale import format_table, run_once
    from rtpengine.index.mpegts import index_mpegts
    hint = str(tmp_path / "s.hint")
    index_mpegts(short_ts_file, hint)
    r = run_once(short_ts_file, hint, 8, 1.0, sample=2, sink="loopback", transport="tcp")
    assert (r["sessions"], r["transport"], r["ports"]) == (8, "tcp", "tcp")
    assert r["send_errors"] == 0 and r["skips"] == 0 and r["packets"] > 0
    assert r["sample_packets"] == 0 and r["sample_within_5ms"] is None
    assert 0 < r["cpu_ms_per_stream_s"] < 50 and 0 < r["engine_within_5ms"] <= 1
    table = format_table({"title": "t", "runs": [r], "search": None, "lookahead_ms": 0.5,
                          "burst_ms": 20.0})
    assert " tcp " in table
    with pytest.raises(ValueError, match="loopback"):
        run_once(short_ts_file, hint, 2, 1.0, sink="nic", transport="tcp")
    bad = CliRunner().invoke(cli, ["bench", "streams", "--transport", "sctp"])
    assert bad.exit_code == 2 and "sctp" in bad.output
