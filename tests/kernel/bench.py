"""The data-path benchmark inside the guest, for each supported kernel:
CPU per GiB for krtpsendfile, krtpmsend and the user-space engine's
strategies, in one run per kernel, with a dummy device in a network
namespace of the guest as a perfect NIC (rtpengine.bench_krtp).

    /usr/bin/python3 -m tests.kernel.bench [--size-mib 64] [--repeat 3] [6.1 6.12]

Software emulation (QEMU TCG) distorts absolute figures; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import sys

from rtpengine.bench_krtp import Result, table
from tests.kernel import qemu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tests.kernel.bench")
    ap.add_argument("series", nargs="*", default=["6.1", "6.12"])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    status = 0
    for kernel in qemu.fetch_kernels(tuple(args.series)):
        build = qemu.build_module(kernel)
        script = (f"insmod {build.ko}\n"
                  f"modprobe -d {kernel.modroot} dummy numdummies=0\n"
                  f"unshare -n python3 -m rtpengine.bench_krtp --sink dummy "
                  f"--size-mib {args.size_mib} --repeat {args.repeat} --json "
                  f"> /tmp/results/bench.json\n")
        result = qemu.run_in_guest(kernel, script, timeout=1800)
        print(f"== {kernel.version} (QEMU TCG, {result.seconds:.0f} s)")
        if result.rc != 0 or "bench.json" not in result.files:
            print(result.output[-5000:], result.console[-2000:])
            status = 1
            continue
        results = [Result(**r) for r in json.loads(result.files["bench.json"])]
        print(table(results))
        if result.trouble:
            print("kernel log:", *result.trouble, sep="\n")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
