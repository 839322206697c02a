"""krtp-dkms's source builds for Debian's kernels, the way DKMS builds it.

Debian 12's 6.1: the real ``dkms add`` + ``dkms build`` of the package's
/usr/src/krtp-<version> (unpacked from the .deb) against the headers
installed on this machine, in private DKMS trees so the machine's own
DKMS state is not touched. Debian 13's 6.12: its headers need Debian 13's
compiler, so the module is built with the package's dkms.conf MAKE command
inside the Debian 13 build root that packaging/fetch-kernels keeps under
build/kernels (DKMS itself is not in that root).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

from tests.package.nspawn import ROOT

DEB_DIR = os.path.join(ROOT, "build", "deb")


def krtp_deb() -> str:
    found = glob.glob(os.path.join(DEB_DIR, "krtp-dkms_*_all.deb"))
    if len(found) != 1:
        pytest.fail(f"expected one krtp-dkms_*_all.deb in {DEB_DIR} (make deb), found {found}")
    return found[0]


def fetch_kernel(series: str) -> tuple[str, str]:
    """(kernel version, its build/kernels folder) from packaging/fetch-kernels."""
    out = subprocess.run([os.path.join(ROOT, "packaging", "fetch-kernels"), series],
                         check=True, capture_output=True, text=True, timeout=900).stdout
    _, version, folder = out.split()
    return version, folder


def unpacked_source(tmp_path) -> tuple[str, str, str]:
    """(source tree, module name, version) of the package, unpacked."""
    subprocess.run(["dpkg-deb", "-x", krtp_deb(), str(tmp_path / "pkg")], check=True, timeout=60)
    trees = glob.glob(str(tmp_path / "pkg" / "usr" / "src" / "krtp-*"))
    assert len(trees) == 1, trees
    with open(os.path.join(trees[0], "dkms.conf")) as f:
        conf = f.read()
    version = re.search(r'^PACKAGE_VERSION="([^"]+)"', conf, re.M)[1]
    assert trees[0].endswith(f"krtp-{version}"), "dkms.conf's version is not the folder's"
    return trees[0], "krtp", version


def vermagic(module: str) -> str:
    return subprocess.run(["/sbin/modinfo", "-F", "vermagic", module], check=True,
                          capture_output=True, text=True, timeout=30).stdout.split()[0]


def test_dkms_builds_the_package_source_for_debian_12(tmp_path):
    kernel, _ = fetch_kernel("6.1")
    tree, name, version = unpacked_source(tmp_path)
    trees = ["--sourcetree", os.path.dirname(tree), "--dkmstree", str(tmp_path / "dkms"),
             "--installtree", str(tmp_path / "installed")]
    os.makedirs(tmp_path / "dkms")
    for action in (["add"], ["build", "-k", kernel]):
        proc = subprocess.run(["dkms"] + action + ["-m", name, "-v", version] + trees,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout
    built = glob.glob(str(tmp_path / "dkms" / name / version / kernel / "*" / "module"
                          / "krtp.ko*"))
    assert len(built) == 1, proc.stdout
    assert vermagic(built[0]) == kernel


def test_the_package_source_builds_for_debian_13(tmp_path):
    kernel, folder = fetch_kernel("6.12")
    with open(os.path.join(folder, "chroot")) as f:
        chroot = f.read().strip()
    with open(os.path.join(folder, "headers")) as f:
        headers = f.read().strip()
    tree, _, _ = unpacked_source(tmp_path)
    with open(os.path.join(tree, "dkms.conf")) as f:
        make = re.search(r'^MAKE\[0\]="([^"]+)"', f.read(), re.M)[1]
    inside = f"/tmp/krtp-dkms-test-{os.getpid()}"
    build = os.path.join(chroot, inside.lstrip("/"))
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(tree, build)
    try:
        # dkms.conf's own command, with DKMS's variables filled in
        command = make.replace("${kernel_source_dir}", headers).replace(
            "${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build", inside)
        proc = subprocess.run(["chroot", chroot, "sh", "-c", command],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{shlex.quote(command)}:\n{proc.stdout}"
        assert vermagic(os.path.join(build, "krtp.ko")) == kernel
    finally:
        shutil.rmtree(build, ignore_errors=True)


def test_the_packaged_module_loads_and_the_daemon_picks_it(tmp_path):
    """What DKMS builds from the package, loaded in a Debian 12 guest: the
    daemon's engine backend "auto" finds /dev/krtp, uses the kernel engine,
    and a GStreamer client gets the title whole through it."""
    from tests.helpers.titles import make_ts
    from tests.kernel import qemu
    if qemu.qemu_available() is not None:
        pytest.skip(qemu.qemu_available())
    # the guest sees the project read-only: its title is made here first
    make_ts(seconds=3, size="320x240", video_bitrate="500k")
    kernel = next(k for k in qemu.fetch_kernels(("6.1",)) if k.series == "6.1")
    tree, name, version = unpacked_source(tmp_path)
    # under build/: the guest lays a tmpfs over /tmp and would not see it
    work = os.path.join(ROOT, "build", f"dkms-guest-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "dkms"))
    try:
        trees = ["--sourcetree", os.path.dirname(tree), "--dkmstree",
                 os.path.join(work, "dkms"), "--installtree", os.path.join(work, "installed")]
        for action in (["add"], ["build", "-k", kernel.version]):
            proc = subprocess.run(["dkms"] + action + ["-m", name, "-v", version] + trees,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stdout
        (ko,) = glob.glob(os.path.join(work, "dkms", name, version, kernel.version, "*",
                                       "module", "krtp.ko*"))
        if ko.endswith(".xz"):
            subprocess.run(["xz", "-dk", ko], check=True, timeout=60)
            ko = ko[:-3]
        result = qemu.run_in_guest(
            kernel, f"KRTP_KO={ko} python3 -m pytest -q -p no:cacheprovider -x "
                    "tests/kernel/guest/test_krtp_daemon.py -k auto", timeout=600)
        report = f"rc={result.rc}\n{result.output[-8000:]}\n{result.console[-2000:]}"
        assert result.rc == 0 and "1 passed" in result.output, report
    finally:
        shutil.rmtree(work, ignore_errors=True)
