"""``kvod bench download``: the research's download mechanisms, on a small
file to a loopback sink (the figures' shape, not their size)."""

from __future__ import annotations

from rtpengine.bench.download import (RESEARCH_TABLE2, format_table, research_figure,
                                      run_download)


def test_every_mechanism_sends_the_file_with_the_calls_it_should():
    size = 4 << 20
    result = run_download(size=size, chunks=(1024, 1316), sink="loopback",
                          rtp_sendfile=False)
    rows = {(r["protocol"], r["mechanism"], r["chunk"]): r for r in result["rows"]}
    assert len(rows) == 2 * 2 * 3 + 1
    for row in rows.values():
        assert row["bytes"] == size
    packets = size // 1024
    assert rows[("udp", "read_write", 1024)]["calls"] == 2 * packets      # read + write each
    assert rows[("udp", "sendfile", 1024)]["calls"] == packets
    assert rows[("udp", "mmap_send", 1024)]["calls"] == packets + 1      # + the mmap
    assert rows[("tcp", "sendfile_whole", 0)]["calls"] < packets / 100
    assert rows[("udp", "sendfile", 1024)]["vs_sendfile"] == 1.0
    # the research's figures beside ours, and none made up for 1316 B
    assert rows[("tcp", "sendfile", 1024)]["research_cpu_s_per_gb"] == 2.00
    assert rows[("udp", "read_write", 1024)]["research_vs_sendfile"] == round(5.84 / 3.95, 3)
    assert rows[("udp", "read_write", 1316)]["research_cpu_s_per_gb"] is None
    table = format_table(result)
    assert "not published" in table and "Table 2" in table


def test_research_table_is_the_papers():
    assert research_figure("tcp", "sendfile_whole", 0) == 1.04
    assert research_figure("udp", "sendfile_whole", 0) is None
    assert RESEARCH_TABLE2[("udp", "mmap_send")] == {512: 9.40, 1024: 7.14, 2048: 6.54}


def test_plots_mark_the_research_beside_ours(tmp_path):
    from rtpengine.bench.plot import plot_datapath, plot_download
    result = run_download(size=1 << 20, chunks=(1024,), sink="loopback", rtp_sendfile=False)
    svg = plot_download(result, str(tmp_path / "download.svg"))
    text = open(svg).read()
    assert text.startswith("<?xml") and "research (Table 2)" in text
    datapath = {"runs": {"1316": {"strategies": {
        "read_writev": {"vs_read_writev": 1.0}, "rtp_sendfile": {"vs_read_writev": 0.9}}}},
        "research_vs_rtp_sendfile": {"krtpsendfile": 0.73}}
    text = open(plot_datapath(datapath, str(tmp_path / "datapath.svg"))).read()
    assert "krtpsendfile" in text and "research" in text
