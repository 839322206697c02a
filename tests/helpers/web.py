"""HTTP clients for the tests of kvod's HTTP listener: the real curl."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass
class Answer:
    """One HTTP answer as curl saw it."""

    status: int
    headers: dict[str, str]     # lower-case names, last value wins
    body: bytes
    exit_code: int              # curl's (18: the body was cut short)


def curl(url: str, *args: str, timeout: float = 60) -> Answer:
    """GET ``url`` with curl (``args`` more options, e.g. ``-r 0-9``, ``-H ...``, ``-I``)."""
    proc = subprocess.run(["curl", "-s", "-D", "/dev/stderr", "-o", "-", *args, url],
                          capture_output=True, timeout=timeout)
    status, headers = 0, {}
    for line in proc.stderr.decode("latin-1").splitlines():
        if line.startswith("HTTP/"):
            status, headers = int(line.split()[1]), {}
        elif ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, proc.stdout, proc.returncode)
