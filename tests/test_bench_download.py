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
