"""The krtp backend's view of /dev/krtp against kernel/uapi/krtp.h.

The C compiler lays the uapi structures out and computes the ioctl
numbers; Python's struct formats and numbers must agree byte for byte,
checked by packing distinct values on both sides.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from rtpengine import krtp
from tests.helpers.titles import ROOT

UAPI = os.path.join(ROOT, "kernel", "uapi")

# struct name -> (Python layout, its fields in order, as the header names them)
LAYOUTS = {
    "krtp_hello": (krtp.HELLO, ["abi_version", "features", "hello_size", "open_size",
                                "play_size", "cmd_size", "stats_size", "info_size",
                                "hint_header_size", "hint_record_size", "workers",
                                "max_streams"]),
    "krtp_open": (krtp.OPEN, ["sock_fd", "media_fd", "hint_fd", "payload_type", "ssrc",
                              "ts0", "seq0", "flags", "id", "media_addr", "media_len",
                              "record_count"]),
    "krtp_play": (krtp.PLAY, ["id", "flags", "start_record", "start_ns"]),
    "krtp_cmd": (krtp.CMD, ["id", "reserved", "arg"]),
    "krtp_stats": (krtp.STATS, ["id", "state", "last_errno", "last_rtp_ts", "last_seq",
                                "mode", "flags", "record_count", "next_record",
                                "fill_limit", "packets_sent", "payload_octets",
                                "packets_dropped", "send_errors", "late_1ms", "late_5ms",
                                "max_late_ns", "last_due_ns", "send_calls",
                                "spliced_octets", "copied_octets"]),
    "krtp_info": (krtp.INFO, ["streams", "streams_opened", "files", "pages_held",
                              "packets_sent", "packets_dropped", "spliced_octets",
                              "copied_octets", "workers", "max_streams"]),
}
IOCTLS = ["HELLO", "OPEN", "PLAY", "PAUSE", "SEEK", "FILL", "STATS", "CLOSE", "INFO"]
CONSTANTS = ["KRTP_ABI_VERSION", "KRTP_OPEN_MSEND", "KRTP_PT_FROM_HINT", "KRTP_PLAY_UNPACED",
             "KRTP_RECORD_CONTINUE", "KRTP_FEAT_SENDFILE", "KRTP_FEAT_MSEND"]


def _value(i: int, fmt: str) -> int:
    """A distinct value that fits a field of struct format character ``fmt``."""
    bits = {"H": 16, "I": 32, "i": 31, "Q": 64, "q": 63}[fmt]
    return (0x0101010101010101 * (i + 1) + i) & ((1 << bits) - 1)


def _formats(layout) -> list[str]:
    """One format character per field ("9Q" expanded)."""
    out: list = []
    for c in layout.format.lstrip("<"):
        if c.isdigit():
            out.append(int(c))
        else:
            n = out.pop() if out and isinstance(out[-1], int) else 1
            out.extend([c] * n)
    return out


def _program() -> str:
    lines = ["#include <stdio.h>", "#include <string.h>", '#include "krtp.h"',
             "static void dump(const char *n, const void *p, size_t s) {",
             "  const unsigned char *b = p; size_t i; printf(\"bytes %s \", n);",
             "  for (i = 0; i < s; i++)", "    printf(\"%02x\", b[i]);",
             "  printf(\"\\n\"); }",
             "int main(void) {"]
    for name, (layout, fields) in LAYOUTS.items():
        fmts = _formats(layout)
        assert len(fmts) == len(fields), name
        lines.append(f"  {{ struct {name} v; memset(&v, 0, sizeof(v));")
        lines.append(f'    printf("size {name} %zu\\n", sizeof(v));')
        for i, (field, fmt) in enumerate(zip(fields, fmts)):
            lines.append(f"    v.{field} = {_value(i, fmt)}ULL;")
        lines.append(f'    dump("{name}", &v, sizeof(v)); }}')
    for ioc in IOCTLS:
        lines.append(f'  printf("ioctl {ioc} %lu\\n", (unsigned long)KRTP_IOC_{ioc});')
    for c in CONSTANTS:
        lines.append(f'  printf("const {c} %lld\\n", (long long){c});')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_view(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text(_program())
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", UAPI,
                    "-o", str(exe), str(src)], check=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {" ".join(line.split()[:2]): line.split()[2] for line in out.splitlines()}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_struct_layout_matches_header(c_view, name):
    layout, fields = LAYOUTS[name]
    assert int(c_view[f"size {name}"]) == layout.size
    fmts = _formats(layout)
    values = [_value(i, f) for i, f in enumerate(fmts)]
    assert layout.pack(*values).hex() == c_view[f"bytes {name}"]


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_header(c_view, name):
    assert int(c_view[f"ioctl {name}"]) == getattr(krtp, f"IOC_{name}")


def test_constants_match_header(c_view):
    ours = {"KRTP_ABI_VERSION": krtp.ABI_VERSION, "KRTP_OPEN_MSEND": krtp.OPEN_MSEND,
            "KRTP_PT_FROM_HINT": krtp.PT_FROM_HINT, "KRTP_PLAY_UNPACED": krtp.PLAY_UNPACED,
            "KRTP_RECORD_CONTINUE": krtp.RECORD_CONTINUE - (1 << 64),
            "KRTP_FEAT_SENDFILE": krtp.FEAT_SENDFILE, "KRTP_FEAT_MSEND": krtp.FEAT_MSEND}
    for name, value in ours.items():
        assert int(c_view[f"const {name}"]) == value, name


def test_backend_reports_a_missing_device(tmp_path):
    ok, why = krtp.available(str(tmp_path / "krtp"))
    assert not ok and "No such file" in why
    with pytest.raises(krtp.KrtpError):
        krtp.KrtpEngine(path=str(tmp_path / "krtp"))
