"""The kernel-aware data-path benchmark, small, on the host's loopback: it
measures every user-space strategy and leaves krtp out (no /dev/krtp
here). tests/kernel/bench.py runs it in the guest with the module loaded."""

from __future__ import annotations

from rtpengine import bench_krtp, engine
from rtpengine.hintfile import HintFile


def test_benchmark_measures_each_available_method(tmp_path):
    results = bench_krtp.run(size=4 << 20, sink="loopback", repeat=1, folder=str(tmp_path))
    names = [r.method for r in results]
    assert names == [s for s in engine.STRATEGIES if s != "auto"]
    for r in results:
        assert r.packets == (4 << 20) // bench_krtp.CHUNK + 1
        # CPU time comes in 10 ms ticks: 4 MiB may cost less than one
        assert r.cpu_s_per_gib >= 0 and r.wall_s_per_gib > 0
    text = bench_krtp.table(results)
    assert "CPU s/GiB" in text and all(n in text for n in names)


def test_title_records_cover_the_file(tmp_path):
    media, hints = bench_krtp.make_title(str(tmp_path), 10_000)
    with HintFile(hints) as h:
        recs = list(h)
    assert sum(r.length for r in recs) == 10_000
    assert all(r.offset == i * bench_krtp.CHUNK for i, r in enumerate(recs))
