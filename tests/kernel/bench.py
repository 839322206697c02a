"""``kvod bench datapath`` inside the guest, for each supported kernel, with
the krtp module loaded: CPU per GiB of krtpsendfile and krtpmsend beside
every user-space strategy and the research's figure, in one run per
kernel, to the perfect-NIC sink (an ifb device in a private network
namespace of the guest).

    /usr/bin/python3 -m tests.kernel.bench [--size 64MiB] [--repeat 3] [6.1 6.12]

Software emulation (QEMU TCG) distorts absolute figures; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import sys

from rtpengine.bench.datapath import format_table
from tests.kernel import qemu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tests.kernel.bench")
    ap.add_argument("series", nargs="*", default=["6.1", "6.12"])
    ap.add_argument("--size", default="64MiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    status = 0
    for kernel in qemu.fetch_kernels(tuple(args.series)):
        build = qemu.build_module(kernel)
        script = (f"insmod {build.ko}\n"
                  f"modprobe -d {kernel.modroot} ifb numifbs=0\n"
                  f"export KVOD_BENCH_DIR=/tmp/bench\n"
                  f"python3 bin/kvod bench datapath --sink nic --size {args.size} "
                  f"--repeat {args.repeat} --json > /tmp/results/bench.json\n")
        result = qemu.run_in_guest(kernel, script, timeout=3000)
        print(f"== {kernel.version} (QEMU TCG, {result.seconds:.0f} s)")
        if result.rc != 0 or "bench.json" not in result.files:
            print(result.output[-5000:], result.console[-2000:])
            status = 1
            continue
        print(format_table(json.loads(result.files["bench.json"])))
        if result.trouble:
            print("kernel log:", *result.trouble, sep="\n")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
