"""Run the krtp module in a real Debian kernel under QEMU.

This machine's own kernel cannot load modules, so the kernel tests boot
Debian's kernel packages (fetched by ``packaging/fetch-kernels``) with
software emulation (TCG), a busybox initramfs and the host's root shared
read-only over virtio-9p: inside the guest the project's Python, pytest
and ffmpeg run against the guest's kernel. A second 9p share, read-write,
brings back the script's output, exit code and the kernel log.

    kernels = fetch_kernels()
    ko = build_module(kernels[0]).ko
    result = run_in_guest(kernels[0], "python3 -m pytest ...", timeout=300)

Everything runs at a low priority (nice) with hard time limits, so that a
hung guest cannot hang the suite or starve other work on the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL_SRC = os.path.join(ROOT, "kernel")
FETCH = os.path.join(ROOT, "packaging", "fetch-kernels")
INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init.sh")
BUSYBOX = "/bin/busybox"
QEMU = "qemu-system-x86_64"
# modules the initramfs loads: to reach the host's root (with what they
# need), and the fq qdisc for the kernel-pacing tests
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "sch_fq")
NICE = 10
# what the kernel log must never show after a test run
KERNEL_TROUBLE = re.compile(
    r"WARNING:|BUG:|\bOops\b|general protection fault|Call Trace:|Kernel panic|"
    r"UBSAN:|KASAN:|refcount_t:|list_(add|del) corruption|INFO: task .* blocked|"
    r"soft lockup|hard LOCKUP|self-detected stall|krtp: unloaded with")


class GuestError(RuntimeError):
    """The guest could not be built, booted or did not finish in time."""


@dataclass(frozen=True)
class Kernel:
    """One fetched kernel: its version and the folder fetch-kernels made."""

    series: str
    version: str
    dir: str

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.dir, "vmlinuz")

    @property
    def modroot(self) -> str:
        """The unpacked package: ``lib/modules/<version>`` with modules.dep."""
        return os.path.join(self.dir, "root")

    @property
    def headers(self) -> str:
        with open(os.path.join(self.dir, "headers")) as f:
            return f.read().strip()

    @property
    def chroot(self) -> Optional[str]:
        """The build root whose compiler matches this kernel's, if not ours."""
        path = os.path.join(self.dir, "chroot")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read().strip()

    @property
    def build_dir(self) -> str:
        return os.path.join(self.dir, "krtp-build")


def fetch_kernels(series: tuple[str, ...] = ("6.1", "6.12"),
                  timeout: float = 1800) -> list[Kernel]:
    """Fetch (once, cached under build/kernels) and describe the kernels."""
    out = subprocess.run([FETCH, *series], check=True, capture_output=True,
                         text=True, timeout=timeout).stdout
    kernels = []
    for line in out.splitlines():
        s, version, path = line.split(maxsplit=2)
        kernels.append(Kernel(s, version, path))
    return kernels


@dataclass(frozen=True)
class Build:
    ko: str
    log: str

    @property
    def warnings(self) -> list[str]:
        """Compiler and modpost warnings (and errors) in the build log."""
        return [line for line in self.log.splitlines()
                if re.search(r"warning:|error:|WARNING:", line)]


def _copy_sources(dest: str) -> None:
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(KERNEL_SRC, dest,
                    ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd",
                                                  "Module.symvers", "modules.order"))


def build_module(kernel: Kernel, timeout: float = 300) -> Build:
    """Build kernel/ against ``kernel``'s headers; the .ko lands in its build_dir."""
    chroot = kernel.chroot
    if chroot:
        # Debian 13's headers want Debian 13's compiler: build in its root
        inside = f"/tmp/krtp-build-{kernel.version}"
        _copy_sources(chroot + inside)
        cmd = ["chroot", chroot, "make", "-C", kernel.headers, f"M={inside}", "modules"]
        src = chroot + inside
    else:
        _copy_sources(kernel.build_dir)
        cmd = ["make", "-C", kernel.headers, f"M={kernel.build_dir}", "modules"]
        src = kernel.build_dir
    proc = subprocess.run(["nice", "-n", str(NICE), *cmd], capture_output=True,
                          text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise GuestError(f"building krtp for {kernel.version} failed:\n{log}")
    if chroot:
        os.makedirs(kernel.build_dir, exist_ok=True)
        shutil.copyfile(os.path.join(src, "krtp.ko"),
                        os.path.join(kernel.build_dir, "krtp.ko"))
    return Build(os.path.join(kernel.build_dir, "krtp.ko"), log)


def _boot_modules(kernel: Kernel) -> list[str]:
    """Paths of the modules to insmod, in dependency order."""
    out = "".join(subprocess.run(
        ["/sbin/modprobe", "--show-depends", "-d", kernel.modroot, "-S", kernel.version,
         name], check=True, capture_output=True, text=True).stdout for name in BOOT_MODULES)
    paths: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "insmod" and parts[1] not in paths:
            paths.append(parts[1])
    return paths


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); symlinks carry the target."""
    buf = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        name_b = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        buf.write(name_b)
        buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))
    return buf.getvalue()


def initramfs(kernel: Kernel) -> str:
    """The guest's initramfs (busybox, /init, the 9p modules); cached."""
    modules = _boot_modules(kernel)
    with open(INIT, "rb") as f:
        init = f.read()
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    key = hashlib.sha256(init + busybox + "\n".join(modules).encode()).hexdigest()[:16]
    path = os.path.join(kernel.dir, f"initramfs-{key}.cpio.gz")
    if os.path.exists(path):
        return path
    entries = [("bin", 0o040755, b""), ("dev", 0o040755, b""), ("proc", 0o040755, b""),
               ("sys", 0o040755, b""), ("modules", 0o040755, b""),
               ("bin/busybox", 0o100755, busybox), ("bin/sh", 0o120777, b"busybox"),
               ("init", 0o100755, init)]
    order = []
    for mod in modules:
        if mod.endswith(".xz"):
            data = subprocess.run(["xz", "-dc", mod], check=True,
                                  capture_output=True).stdout
            name = os.path.basename(mod)[:-3]
        else:
            with open(mod, "rb") as f:
                data = f.read()
            name = os.path.basename(mod)
        entries.append((f"modules/{name}", 0o100644, data))
        order.append(name)
    entries.append(("modules/order", 0o100644, ("\n".join(order) + "\n").encode()))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(_cpio_newc(entries), compresslevel=6))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class GuestResult:
    """What a guest run brought back."""

    rc: Optional[int]           # the script's exit code; None if it never finished
    output: str                 # the script's stdout and stderr
    dmesg: str                  # the guest's kernel log after the script
    console: str                # the serial console (boot messages, panics)
    seconds: float
    files: dict[str, bytes]     # what the script left in /tmp/results

    @property
    def trouble(self) -> list[str]:
        """Kernel log lines that show a warning, oops, lockup or leak."""
        return [line for line in (self.dmesg or self.console).splitlines()
                if KERNEL_TROUBLE.search(line)]


def qemu_available() -> Optional[str]:
    """None if QEMU can run guests here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (make deps installs qemu-system-x86)"
    return None


def gst_registry() -> str:
    """A GStreamer plugin registry made on the host, for the guest to read:
    scanning every plugin under software emulation would take a minute."""
    path = os.path.join(ROOT, "build", "gst-registry.bin")
    if not os.path.exists(path) and shutil.which("gst-inspect-1.0"):
        env = dict(os.environ, GST_REGISTRY=path)
        subprocess.run(["gst-inspect-1.0", "rtpmp2tdepay"], env=env, check=True,
                       capture_output=True, timeout=300)
    return path


#: what tests/kernel/init.sh prints once the guest booted, before the script
SCRIPT_STARTED = "init: running the test script"


def run_in_guest(kernel: Kernel, script: str, *, timeout: float = 600,
                 memory_mb: int = 1024, cpus: int = 2,
                 files: Optional[dict[str, bytes]] = None,
                 boot_tries: int = 2) -> GuestResult:
    """Boot ``kernel`` and run ``script`` (sh) in the host's root, as root.

    ``files`` are put beside the script, in /tmp/results of the guest,
    which is also where the script may leave files for the caller
    (``GuestResult.files``).

    A guest whose kernel dies while booting, before init starts the script,
    is booted again, ``boot_tries`` times in all: QEMU's software emulation
    has crashed Debian's 6.12 in early boot (an int3 oops in
    sched_clock_cpu, no module of ours loaded yet). Nothing of ours ran,
    so nothing is hidden; the result's console keeps the failed boots'.
    """
    failed = ""
    for attempt in range(1, boot_tries + 1):
        result = _boot_and_run(kernel, script, timeout=timeout, memory_mb=memory_mb,
                               cpus=cpus, files=files)
        if result.rc is not None or SCRIPT_STARTED in result.console:
            break
        failed += (f"--- boot {attempt} died before the script ran ---\n"
                   f"{result.console[-4000:]}\n")
    if failed:
        result = replace(result, console=failed + result.console)
    return result


def _boot_and_run(kernel: Kernel, script: str, *, timeout: float, memory_mb: int,
                  cpus: int, files: Optional[dict[str, bytes]]) -> GuestResult:
    import time

    rd = initramfs(kernel)
    with tempfile.TemporaryDirectory(prefix="krtp-guest-", dir=os.path.join(ROOT, "build")) as res:
        with open(os.path.join(res, "run.sh"), "w") as f:
            f.write(f"set -u\ncd {ROOT}\nexport GST_REGISTRY={gst_registry()} "
                    f"GST_REGISTRY_UPDATE=no\n{script}\n")
        # The guest lays tmpfs over /tmp, /run and /dev/shm; a checkout there
        # (CI's may be) is shared on its own and mounted at the same path.
        with open(os.path.join(res, "project_root"), "w") as f:
            f.write(ROOT)
        for name, data in (files or {}).items():
            with open(os.path.join(res, name), "wb") as f:
                f.write(data)
        console = os.path.join(res, "console.log")
        cmd = ["nice", "-n", str(NICE), QEMU, "-accel", "tcg", "-cpu", "max",
               "-m", str(memory_mb), "-smp", str(cpus), "-nodefaults", "-no-reboot",
               "-display", "none", "-serial", f"file:{console}",
               "-kernel", kernel.vmlinuz, "-initrd", rd,
               "-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init",
               "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,"
                         "multidevs=remap",
               "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
               "-fsdev", f"local,id=results,path={res},security_model=none",
               "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
               "-fsdev", f"local,id=project,path={ROOT},security_model=none,readonly=on,"
                         "multidevs=remap",
               "-device", "virtio-9p-pci,fsdev=project,mount_tag=project"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            qemu_out = b"(killed after the time limit)"
        seconds = time.monotonic() - start

        def read(name: str) -> str:
            try:
                with open(os.path.join(res, name), "rb") as f:
                    return f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                return ""

        ours = {"run.sh", "rc", "output.log", "dmesg.txt", "console.log", "project_root",
                *(files or {})}
        left = {}
        for name in os.listdir(res):
            if name not in ours and os.path.isfile(os.path.join(res, name)):
                with open(os.path.join(res, name), "rb") as f:
                    left[name] = f.read()
        rc_text = read("rc").strip()
        result = GuestResult(rc=int(rc_text) if rc_text else None, output=read("output.log"),
                             dmesg=read("dmesg.txt"),
                             console=read("console.log") + qemu_out.decode("utf-8", "replace"),
                             seconds=seconds, files=left)
    return result
