"""The daemon's start-up heap is frozen out of the garbage collector's
walks before its listeners open (appliance.daemon.settle_heap)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.daemon import ROOT

_PROBE = """
import gc
from appliance.daemon import settle_heap
before = len(gc.get_objects())
settle_heap()
frozen = gc.get_freeze_count()
assert frozen >= before // 2, (frozen, before)
# what is made afterwards is walked as before: the collector still runs
garbage = []
garbage.append(garbage)
del garbage
assert gc.collect() >= 1
print(frozen)
"""


def test_the_start_up_heap_is_frozen_and_later_garbage_still_collected():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 10_000     # the modules, Twisted and the rest

