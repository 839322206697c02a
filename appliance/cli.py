"""The ``kvod`` command line (the benchmarks' part of it).

Exit codes scripts can trust: 0 success, 1 the operation failed (the
message says why), 2 bad usage (click's own).
"""

from __future__ import annotations

import click

from appliance.bench_cli import add_bench_commands


@click.group()
def cli() -> None:
    """kvod: a video-on-demand RTSP/RTP proxy cache."""


@cli.group()
def bench() -> None:
    """Measure the data path."""


add_bench_commands(bench)


def main() -> int:
    """Entry point of the ``kvod`` script."""
    try:
        cli.main(prog_name="kvod", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
