"""A perfect NIC for benchmarks: an ``ifb`` device in a private network
namespace, which frees every packet it is handed.

The namespace gets a unique name per run and is always removed (the
``with`` block's exit, even on errors). Sockets for it are made by
switching this thread into the namespace just long enough to create them
(``setns``): they stay bound to it, so the engine's threads in the
original namespace send through them, and every packet goes only to
addresses inside the namespace. Needs root (creating namespaces) and
iproute2; ethtool switches the device's UDP segmentation offload.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
from contextlib import contextmanager
from typing import Iterator, Optional

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class SinkError(RuntimeError):
    """The namespace sink cannot be made here (not root, no ifb, ...)."""


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise SinkError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsSink:
    """The namespace, its ifb device and the one destination behind it."""

    def __init__(self, name: str, dest: tuple[str, int], offload: bool) -> None:
        self.name = name
        self.dest = dest
        self.offload = offload

    def socket(self, *, connect: bool = True, sndbuf: Optional[int] = None) -> socket.socket:
        """A UDP socket inside the namespace (connected to :attr:`dest`,
        or unconnected for a shared-socket stream)."""
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            finally:
                _setns(here)
        finally:
            os.close(here)
            os.close(there)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, 32, sndbuf)  # SO_SNDBUFFORCE
        if connect:
            s.connect(self.dest)
        else:
            s.bind(("0.0.0.0", 0))
        return s

    def dropped(self) -> int:
        """Packets the ifb device freed so far (its rx_dropped counter)."""
        r = subprocess.run(["ip", "netns", "exec", self.name, "cat",
                            "/sys/class/net/kvsink0/statistics/rx_dropped"],
                           capture_output=True, text=True, timeout=30)
        return int(r.stdout.strip() or 0)


@contextmanager
def netns_sink(offload: bool = False) -> Iterator[NetnsSink]:
    """Make a namespace with an ifb "perfect NIC"; remove it afterwards.

    ``offload=False`` turns the device's UDP segmentation offload off, so
    the kernel segments GSO batches in software (what a NIC without USO
    costs); ``True`` leaves whole GSO batches to the "NIC".
    """
    if os.geteuid() != 0:
        raise SinkError("the namespace sink needs root (it creates a network namespace)")
    name = f"kvod-sink-{os.getpid()}-{secrets.token_hex(3)}"
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "add", "kvsink0", "type", "ifb")
        _run("ip", "-n", name, "addr", "add", f"{net}.1/24", "dev", "kvsink0")
        _run("ip", "-n", name, "link", "set", "kvsink0", "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", name, "ethtool", "-K", "kvsink0",
             "tx-udp-segmentation", "on" if offload else "off")
        yield NetnsSink(name, (f"{net}.2", 5004), offload)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
