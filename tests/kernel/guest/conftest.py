"""Fixtures for the tests that run inside the QEMU guest, as root, against
the krtp module (tests/test_krtp_kernel.py boots the guest and runs them;
on the host they are not collected).

KRTP_KO names the module to load. Every test must leave the module as it
found it: no stream open, no page reference held (checked after each).
"""

from __future__ import annotations

import math
import os
import selectors
import shutil
import socket
import subprocess
import time

import pytest

from rtpengine import krtp
from rtpengine.hintfile import HEADER_SIZE, REC_KEYFRAME, HintFile, HintHeader, HintRecord
from rtpengine.packetizer import packetize

SEC = 1_000_000_000
SO_RCVBUFFORCE = 33
STRATEGIES = ["krtpsendfile", "krtpmsend"]
# 6.5+ sends with MSG_SPLICE_PAGES; 6.1 with ->sendpage (both in GSO batches)
SPLICE_KERNEL = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 5)


def raw_fd() -> int:
    """A /dev/krtp descriptor before any handshake."""
    return os.open(krtp.DEVICE, os.O_RDWR | os.O_CLOEXEC)


def module_loaded() -> bool:
    with open("/proc/modules") as f:
        return any(line.split()[0] == "krtp" for line in f)


@pytest.fixture(scope="session", autouse=True)
def krtp_module():
    """Load the module once for the session."""
    if not module_loaded():
        subprocess.run(["insmod", os.environ["KRTP_KO"]], check=True)
    assert os.path.exists(krtp.DEVICE)
    yield


@pytest.fixture
def engine_factory():
    """Make engines; all are closed at the end, then nothing may be held."""
    made: list[krtp.KrtpEngine] = []

    def make(strategy: str = "krtpsendfile") -> krtp.KrtpEngine:
        e = krtp.KrtpEngine(strategy=strategy)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()
    if module_loaded():
        with krtp.KrtpEngine() as probe:
            info = probe.info()
        assert info.streams == 0 and info.pages_held == 0 and info.files == 1, info


class Receiver:
    """A UDP socket on 127.0.0.1 that keeps every packet and arrival time."""

    def __init__(self, rcvbuf: int = 64 << 20) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        self.sock.setblocking(False)
        self.packets: list[bytes] = []
        self.times: list[int] = []

    def sender(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(self.sock.getsockname())
        return s

    def drain(self) -> int:
        n = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return n
            self.packets.append(data)
            self.times.append(time.monotonic_ns())
            n += 1

    def collect(self, n: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while len(self.packets) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if sel.select(left):
                    self.drain()
        return self.packets

    def settle(self, quiet: float = 0.3) -> list[bytes]:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            while sel.select(quiet):
                self.drain()
        return self.packets

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make() -> Receiver:
        r = Receiver()
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def write_hints(path, records: list[HintRecord], *, payload_type: int = 33,
                blob: bytes = b"") -> str:
    body = b"".join(r.pack() for r in records)
    header = HintHeader(clock_rate=90000, payload_type=payload_type,
                        record_count=len(records),
                        duration_ns=records[-1].send_ns if records else 0,
                        blob_offset=HEADER_SIZE + len(body) if blob else 0,
                        blob_size=len(blob))
    with open(path, "wb") as f:
        f.write(header.pack() + body + blob)
    return os.fspath(path)


def chunk_records(size: int, duration_ns: int, chunk: int = 1316) -> list[HintRecord]:
    """RFC 2250-like records: ``chunk`` bytes each, spread over the duration."""
    n = math.ceil(size / chunk)
    return [HintRecord(i * chunk, min(chunk, size - i * chunk),
                       (i * duration_ns // n) * 90000 // SEC, i * duration_ns // n,
                       REC_KEYFRAME if i % 25 == 0 else 0, b"")
            for i in range(n)]


def expected(hint_path: str, media_path: str, **kw) -> list[bytes]:
    with open(media_path, "rb") as f:
        media = f.read()
    with HintFile(hint_path) as hints:
        return list(packetize(hints, media, **kw))


def open_stream(engine, sock: socket.socket, media_path: str, hint_path: str, **kw):
    """Open a stream and close the caller's descriptors: the module holds its own."""
    with open(media_path, "rb") as media, open(hint_path, "rb") as hints:
        stream = engine.open_stream(sock, media, hints, **kw)
    sock.close()
    return stream


def wait_state(stream, states, timeout: float = 60.0):
    """Poll until the stream's state is one of ``states``; returns its stats."""
    if isinstance(states, str):
        states = (states,)
    deadline = time.monotonic() + timeout
    while True:
        s = stream.stats()
        if s.state in states or time.monotonic() > deadline:
            return s
        time.sleep(0.01)


@pytest.fixture
def tmpfs_copy(tmp_path):
    """Copy a file to the guest's /tmp (tmpfs: the shmem page cache path)."""
    def copy(path: str) -> str:
        dest = tmp_path / os.path.basename(path)
        shutil.copyfile(path, dest)
        return os.fspath(dest)
    return copy
