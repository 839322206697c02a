"""Figures of the data-path benchmarks (``--plot FILE.svg``), drawn with
matplotlib in the layout of the research's Figure 5: the CPU of every
mechanism relative to a reference mechanism measured in the same run,
with the research's published ratios marked beside ours.

The research publishes few exact ratios (``RESEARCH.md``); a marker is
drawn only where one exists, and its label says what it is relative to.
"""

from __future__ import annotations

from typing import Optional


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only: no display on a server
    import matplotlib.pyplot as plt
    return plt


def plot_datapath(result: dict, path: str) -> str:
    """``kvod bench datapath``'s result as CPU relative to ``read_writev``,
    a group of bars per payload size. The research's krtpsendfile ratio
    (0.73 x rtp_sendfile) is marked on our rtp_sendfile's scale."""
    plt = _pyplot()
    runs = result["runs"]
    names = list(next(iter(runs.values()))["strategies"])
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(names) * len(runs)), 4.5))
    width = 0.8 / max(len(runs), 1)
    for i, (payload, run) in enumerate(runs.items()):
        xs = [j + i * width for j in range(len(names))]
        ys = [run["strategies"].get(n, {}).get("vs_read_writev") or 0 for n in names]
        ax.bar(xs, ys, width, label=f"ours, {payload} B payload")
        base = run["strategies"].get("rtp_sendfile", {}).get("vs_read_writev")
        for name, ratio in result.get("research_vs_rtp_sendfile", {}).items():
            if base is None:
                continue
            x = (names.index(name) if name in names else len(names)) + i * width
            ax.scatter([x], [ratio * base], marker="D", facecolors="none", edgecolors="k",
                       zorder=3, label="research (x rtp_sendfile, on ours)" if i == 0 else None)
    ticks = names + [n for n in result.get("research_vs_rtp_sendfile", {}) if n not in names]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ticks))])
    ax.set_xticklabels(ticks, rotation=30, ha="right")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_ylabel("CPU relative to read_writev")
    ax.set_title("kvod bench datapath: CPU per GiB relative to read_writev "
                 "(the research's Figure 5 layout)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_download(result: dict, path: str, http: Optional[dict] = None) -> str:
    """``kvod bench download``'s result: per protocol, every mechanism's CPU
    relative to sendfile of the same send size, the research's Table 2
    ratios marked beside ours."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    for ax, protocol in zip(axes, ("udp", "tcp")):
        rows = [r for r in result["rows"] if r["protocol"] == protocol]
        labels = [f"{r['mechanism']}\n{'file' if not r['chunk'] else r['chunk']} B" for r in rows]
        xs = range(len(rows))
        ax.bar(xs, [r["vs_sendfile"] or 0 for r in rows], 0.6, label="ours")
        marked = [(x, r["research_vs_sendfile"]) for x, r in zip(xs, rows)
                  if r["research_vs_sendfile"] is not None]
        if marked:
            ax.scatter(*zip(*marked), marker="D", facecolors="none", edgecolors="k", zorder=3,
                       label="research (Table 2)")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
        ax.set_ylabel("CPU relative to sendfile (same send size)")
        ax.set_title(f"download over {protocol.upper()}")
        ax.legend(fontsize=8)
    fig.suptitle("kvod bench download: the research's download mechanisms")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
