"""The krtp kernel module in real Debian kernels (make test-kernel).

This machine's kernel cannot load modules, so for each supported kernel
(Debian 12's 6.1, Debian 13's 6.12) the module is built against that
kernel's headers (without a warning), the kernel is booted under QEMU with
software emulation, and tests/kernel/guest runs inside it as root: bytes
on the guest's loopback against the reference packetiser, commands,
hostile callers, process exits, GStreamer receiving a title whole from the
module and from ``kvod serve`` on the krtp backend, unloading, the user-space
engine's kernel pacing under the fq qdisc (which this machine lacks), and a
clean kernel log.
``dkms build`` is checked against the installed 6.1 headers.

Kernel packages come from packaging/fetch-kernels (cached under
build/kernels); the first run downloads them and makes a Debian 13 build
root, which takes a few minutes once.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.kernel import qemu
from tests.helpers.titles import ROOT

pytestmark = pytest.mark.skipif(qemu.qemu_available() is not None,
                                reason=qemu.qemu_available() or "")

GUEST_TESTS = ["tests/kernel/guest/test_krtp_wire.py", "tests/kernel/guest/test_krtp_commands.py",
               "tests/kernel/guest/test_krtp_hostile.py", "tests/kernel/guest/test_krtp_daemon.py",
               "tests/kernel/guest/test_unload.py", "tests/kernel/guest/test_fq_pacing.py"]
GUEST_TIMEOUT = 900
# the module's build, the guest's boot and its tests: beyond pytest.ini's limit
pytestmark = [pytestmark, pytest.mark.timeout(2 * GUEST_TIMEOUT)]
# kvod serve is slow to start under emulation: each kernel runs the daemon
# with one of the two calls (the module's own tests run both on both)


@pytest.fixture(scope="session")
def kernels() -> dict[str, qemu.Kernel]:
    return {k.series: k for k in qemu.fetch_kernels()}


@pytest.mark.parametrize("series", ["6.1", "6.12"])
def test_module_in_a_real_kernel(kernels, series, ts_file, short_ts_file):
    kernel = kernels[series]
    build = qemu.build_module(kernel)
    assert not build.warnings, "\n".join(build.warnings)
    # each kernel runs the daemon on its call; 6.1 also with backend auto
    runs = {"6.1": ("krtpsendfile-krtpsendfile", "auto-krtpsendfile"),
            "6.12": ("krtpmsend-krtpmsend",)}[series]
    every = ("krtpsendfile-krtpsendfile", "krtpmsend-krtpmsend", "auto-krtpsendfile")
    skip = " ".join("--deselect tests/kernel/guest/test_krtp_daemon.py::"
                    f"test_daemon_serves_a_title_through_krtp[{case}]"
                    for case in every if case not in runs)
    result = qemu.run_in_guest(
        kernel,
        f"KRTP_KO={build.ko} python3 -m pytest -q -p no:cacheprovider -x --durations=5 "
        f"{skip} " + " ".join(GUEST_TESTS),
        timeout=GUEST_TIMEOUT)
    print(result.output[-3000:])
    report = (f"{kernel.version}: rc={result.rc} after {result.seconds:.0f} s\n"
              f"{result.output[-20000:]}\n--- console ---\n{result.console[-4000:]}")
    assert result.rc == 0, report
    assert " passed" in result.output and "failed" not in result.output, report
    assert not result.trouble, "\n".join(result.trouble)


def test_dkms_builds_against_installed_headers(kernels, tmp_path):
    """dkms add + build of kernel/ (as the krtp-dkms package ships it),
    with its trees under tmp_path so the machine's dkms tree is untouched."""
    version = kernels["6.1"].version
    if shutil.which("dkms") is None:
        pytest.fail("dkms is not installed (make deps installs it)")
    src, tree = tmp_path / "src", tmp_path / "tree"
    shutil.copytree(os.path.join(ROOT, "kernel"), src / "krtp-0.1")
    tree.mkdir()
    opts = ["--sourcetree", str(src), "--dkmstree", str(tree)]
    subprocess.run(["dkms", "add", "-m", "krtp", "-v", "0.1", *opts], check=True,
                   capture_output=True, timeout=120)
    r = subprocess.run(["nice", "-n", str(qemu.NICE), "dkms", "build", "-m", "krtp",
                        "-v", "0.1", "-k", version, *opts],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    built = list(tree.glob(f"krtp/0.1/{version}/*/module/krtp.ko*"))
    assert built, r.stdout


def test_checkpatch_is_clean():
    """The kernel's checkpatch.pl --strict finds nothing in kernel/."""
    r = subprocess.run([os.path.join(ROOT, "packaging", "checkpatch"), "--strict"],
                       capture_output=True, text=True, timeout=900)
    totals = [line for line in r.stdout.splitlines() if line.startswith("total:")]
    assert totals and r.returncode == 0, r.stdout + r.stderr
    assert all(line.startswith("total: 0 errors, 0 warnings, 0 checks") for line in totals), \
        r.stdout


def test_a_guest_that_dies_while_booting_is_booted_again(monkeypatch):
    """An emulator crash before init runs the script is retried; a script
    that ran and failed, or a second dead boot, is reported as it is."""
    dead = qemu.GuestResult(rc=None, output="", dmesg="", seconds=5, files={},
                            console="Oops: int3\nKernel panic - not syncing")
    ran = qemu.GuestResult(rc=1, output="F", dmesg="", seconds=60, files={},
                           console=f"{qemu.SCRIPT_STARTED}\nreboot")
    boots = []

    def boot(results):
        def fake(kernel, script, **kw):
            boots.append(script)
            return results.pop(0)
        return fake

    monkeypatch.setattr(qemu, "_boot_and_run", boot([dead, ran]))
    r = qemu.run_in_guest(None, "true")
    assert (r.rc, len(boots)) == (1, 2)
    assert "boot 1 died before the script ran" in r.console and "Oops: int3" in r.console
    boots.clear()
    monkeypatch.setattr(qemu, "_boot_and_run", boot([ran]))
    assert qemu.run_in_guest(None, "true").rc == 1 and len(boots) == 1
    boots.clear()
    monkeypatch.setattr(qemu, "_boot_and_run", boot([dead, dead]))
    r = qemu.run_in_guest(None, "true")
    assert r.rc is None and len(boots) == 2
    assert r.console.count("died before the script ran") == 2
