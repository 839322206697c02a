"""A slow HTTP origin for the package tests, run on the host inside the
container's network namespace (nsenter): it serves one title at a bounded
rate, so that a fill is still running when the test kills the daemon.

    python3 -m tests.package.slow_origin FILE BYTES_PER_SECOND

Prints the origin's base URL, then serves until killed.
"""

from __future__ import annotations

import sys
import time

from tests.helpers.origins import FaultOrigin


def main(path: str, rate: int) -> int:
    with open(path, "rb") as f:
        data = f.read()
    origin = FaultOrigin({"slow.ts": data}, lambda *request: ("slow", rate))
    print(origin.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        origin.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
