"""A booted Debian 12 in systemd-nspawn, for the package tests.

The root is made once with debootstrap (minbase, systemd, dbus, python3)
plus the Debian packages the .debs depend on, and cached under
``build/nspawn/base-<key>``; the key covers the suite, the mirror, the
debootstrap includes and those dependencies, so a change of any of them
makes a new root and removes the stale one. Each test run boots a copy.

PID 1 here is not systemd and there is no system bus: every nspawn call
says ``--keep-unit --register=no``. The booted container has a private
network (its own loopback only), so nothing a test sends leaves it.
Commands run inside through ``nsenter`` into the container's namespaces.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "build", "nspawn")
SUITE = "bookworm"
INCLUDE = "systemd,systemd-sysv,dbus,python3"
NSPAWN = ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no"]
IMAGE_FORMAT = "1"  # bump when the way the root is made changes


class ContainerError(RuntimeError):
    """A container step failed; the message carries its output."""


def host_mirror() -> str:
    """The first non-security Debian mirror in this machine's apt sources."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for uri in re.findall(r"^URIs:\s*(\S+)", f.read(), re.M):
                if "security" not in uri:
                    return uri
    try:
        with open("/etc/apt/sources.list") as f:
            for line in f:
                words = line.split()
                if words[:1] == ["deb"] and "security" not in line:
                    return next(w for w in words[1:] if "://" in w)
    except FileNotFoundError:
        pass
    raise ContainerError("no Debian mirror in this machine's apt sources")


def package_depends(debs: list[str]) -> list[str]:
    """The Debian packages ``debs`` depend on (first of each alternative),
    without the ones ``debs`` themselves provide."""
    ours = {_deb_field(deb, "Package") for deb in debs}
    names = set()
    for deb in debs:
        for clause in _deb_field(deb, "Depends").split(","):
            name = clause.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name and name not in ours:
                names.add(name)
    return sorted(names)


def _deb_field(deb: str, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, name], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def base_image(depends: list[str], log=print) -> str:
    """The cached root for ``depends``, made now if missing (a few minutes)."""
    mirror = host_mirror()
    key = hashlib.sha256("\n".join(
        [IMAGE_FORMAT, SUITE, mirror, INCLUDE] + depends).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, f"base-{key}")
    if os.path.exists(os.path.join(path, ".done")):
        return path
    os.makedirs(CACHE, exist_ok=True)
    for stale in glob.glob(os.path.join(CACHE, "base-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path + ".tmp"
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, tmp, mirror],
         timeout=900)
    log(f"nspawn: debootstrap {SUITE} took {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    # The .debs' dependencies come from Debian now, so that installing the
    # .debs in the booted, network-less container needs no mirror.
    _run(NSPAWN + ["-D", tmp, "--setenv=DEBIAN_FRONTEND=noninteractive",
                   "sh", "-c", "apt-get update -q && apt-get install -y -q "
                   "--no-install-recommends " + " ".join(depends) + " && apt-get clean"],
         timeout=900)
    log(f"nspawn: installing {len(depends)} dependencies took "
        f"{time.monotonic() - started:.0f} s")
    # An empty machine id: each booted copy makes its own.
    with open(os.path.join(tmp, "etc", "machine-id"), "w"):
        pass
    with open(os.path.join(tmp, ".done"), "w"):
        pass
    os.rename(tmp, path)
    return path


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)
    if proc.returncode:
        raise ContainerError(f"{' '.join(cmd)[:200]} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}")
    return proc


class Container:
    """A copy of a base root, booted with systemd as PID 1.

    Use as a context manager: the container is powered off (killed if it
    does not stop in time) and its copy removed even when a test fails.
    """

    def __init__(self, base: str, name: str = "kvodtest") -> None:
        self.base = base
        self.name = name
        self.dir = os.path.join(CACHE, f"run-{os.getpid()}")
        self.root = os.path.join(self.dir, "root")
        self.console = os.path.join(self.dir, "console.log")
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None

    def __enter__(self) -> Container:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def boot(self, timeout: float = 60) -> None:
        # copies left by runs that were killed before they could clean up
        for stale in glob.glob(os.path.join(CACHE, "run-*")):
            pid = stale.rsplit("-", 1)[1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        _run(["cp", "-a", "--reflink=auto", self.base, self.root], timeout=300)
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(
                NSPAWN + ["--boot", "--private-network", f"--machine={self.name}",
                          "--console=pipe", "-D", self.root],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            self._check_alive()
            self.leader = self._find_leader()
            if time.monotonic() > deadline:
                raise ContainerError(f"no container init after {timeout} s\n{self.console_tail()}")
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            self._check_alive()
            state = self.sh("systemctl is-system-running", check=False, timeout=10).stdout.strip()
            if time.monotonic() > deadline:
                raise ContainerError(f"system state {state!r} after {timeout} s\n"
                                     f"{self.sh('systemctl --failed', check=False).stdout}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}\n"
                                 f"{self.console_tail()}")

    def _find_leader(self) -> int | None:
        # The container's PID 1 is systemd-nspawn's child running systemd.
        assert self.proc is not None
        for pid in _children(self.proc.pid):
            for child in [pid] + _children(pid):
                if _comm(child) == "systemd":
                    return child
        return None

    def console_tail(self, size: int = 4000) -> str:
        try:
            with open(self.console, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the container (its mounts, PIDs, network), as root."""
        assert self.leader is not None
        return ["nsenter", f"--target={self.leader}", "--mount", "--uts", "--ipc",
                "--net", "--pid", "--root", "--wd", "--", "/usr/bin/env", "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root",
                "DEBIAN_FRONTEND=noninteractive"] + argv

    def sh(self, script: str, *, check: bool = True, timeout: float = 60
           ) -> subprocess.CompletedProcess:
        """``sh -c script`` inside; output in ``.stdout`` (stderr merged)."""
        proc = subprocess.run(self.enter(["sh", "-c", script]), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and proc.returncode:
            raise ContainerError(f"in the container: {script!r} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-4000:]}")
        return proc

    def in_network(self, argv: list[str]) -> list[str]:
        """``argv`` run on the host but in the container's network namespace
        (its own loopback): a host client talking to the container."""
        assert self.leader is not None
        return ["nsenter", f"--target={self.leader}", "--net", "--"] + argv

    def copy_in(self, src: str, dest: str) -> None:
        """Copy a host file to ``dest`` (an absolute path inside)."""
        target = os.path.join(self.root, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(src, target)
        os.chmod(target, 0o644)

    def close(self, timeout: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM to systemd-nspawn powers the container off cleanly.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""
