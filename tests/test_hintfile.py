"""Hint files: the Python layout against kernel/uapi/krtp.h, validation,
seeking, and the reference packetiser on a hand-made hint file."""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.titles import ROOT
from rtpengine import hintfile
from rtpengine.hintfile import (HEADER_SIZE, HINT_HEADER, MAX_RECORDS, RECORD, RECORD_SIZE,
                                REC_BLOB, REC_KEYFRAME, REC_MARKER, HintError, HintFile,
                                HintHeader, HintRecord, write_hint_file)
from rtpengine.packetizer import packetize

UAPI = os.path.join(ROOT, "kernel", "uapi")
CSRC = os.path.join(ROOT, "rtpengine", "csrc")

HEADER_FIELDS = ["magic", "version", "header_size", "record_size", "flags", "clock_rate",
                 "payload_type", "pad", "record_count", "duration_ns", "blob_offset",
                 "blob_size", "reserved"]
RECORD_FIELDS = ["offset", "length", "rtp_ts", "send_ns", "flags", "prefix_len", "prefix"]

# The C side fills both structs with these values and prints their bytes.
LAYOUT_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include "kvod_types_check.h"

#define FIELD(s, f) printf("%s %s %zu %zu\n", #s, #f, offsetof(struct s, f), \
			   sizeof(((struct s *)0)->f))

static void dump(const char *what, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	printf("bytes %s ", what);
	for (i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

int main(void)
{
	struct krtp_hint_header h;
	struct krtp_hint_record r;

	printf("size krtp_hint_header %zu\n", sizeof(h));
	printf("size krtp_hint_record %zu\n", sizeof(r));
	FIELD(krtp_hint_header, magic); FIELD(krtp_hint_header, version);
	FIELD(krtp_hint_header, header_size); FIELD(krtp_hint_header, record_size);
	FIELD(krtp_hint_header, flags); FIELD(krtp_hint_header, clock_rate);
	FIELD(krtp_hint_header, payload_type); FIELD(krtp_hint_header, pad);
	FIELD(krtp_hint_header, record_count); FIELD(krtp_hint_header, duration_ns);
	FIELD(krtp_hint_header, blob_offset); FIELD(krtp_hint_header, blob_size);
	FIELD(krtp_hint_header, reserved);
	FIELD(krtp_hint_record, offset); FIELD(krtp_hint_record, length);
	FIELD(krtp_hint_record, rtp_ts); FIELD(krtp_hint_record, send_ns);
	FIELD(krtp_hint_record, flags); FIELD(krtp_hint_record, prefix_len);
	FIELD(krtp_hint_record, prefix);
	printf("const magic %s\n", KRTP_HINT_MAGIC);
	printf("const version %d\n", KRTP_HINT_VERSION);
	printf("const header_size %d\n", KRTP_HINT_HEADER_SIZE);
	printf("const record_size %d\n", KRTP_HINT_RECORD_SIZE);
	printf("const prefix_max %d\n", KRTP_HINT_PREFIX_MAX);
	printf("const marker %d\n", KRTP_REC_MARKER);
	printf("const keyframe %d\n", KRTP_REC_KEYFRAME);
	printf("const blob %d\n", KRTP_REC_BLOB);
	printf("const discontinuity %d\n", KRTP_REC_DISCONTINUITY);

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, KRTP_HINT_MAGIC, 8);
	h.version = KRTP_HINT_VERSION;
	h.header_size = KRTP_HINT_HEADER_SIZE;
	h.record_size = KRTP_HINT_RECORD_SIZE;
	h.flags = 0x0102;
	h.clock_rate = 90000;
	h.payload_type = 96;
	h.record_count = 0x81020304ULL;
	h.duration_ns = 0x1122334455667788ULL;
	h.blob_offset = 0xa0b0c0d0ULL;
	h.blob_size = 0x10203ULL;
	dump("header", &h, sizeof(h));
	memset(&r, 0, sizeof(r));
	r.offset = 0x0807060504030201ULL;
	r.length = 1316;
	r.rtp_ts = 0xdeadbeef;
	r.send_ns = 0x0123456789abcdefULL;
	r.flags = KRTP_REC_KEYFRAME | KRTP_REC_MARKER;
	r.prefix_len = 3;
	memcpy(r.prefix, "\x7c\x85\x01", 3);
	dump("record", &r, sizeof(r));
	return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict:
    """What gcc makes of krtp.h (and kvod_types.h, via its static asserts)."""
    tmp = tmp_path_factory.mktemp("layout")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text(LAYOUT_PROGRAM)
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I", UAPI, "-I", CSRC,
                    "-o", str(exe), str(src)], check=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                         timeout=10).stdout
    layout: dict = {"fields": {}, "size": {}, "const": {}, "bytes": {}}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "size":
            layout["size"][rest[0]] = int(rest[1])
        elif kind == "const":
            layout["const"][rest[0]] = rest[1]
        elif kind == "bytes":
            layout["bytes"][rest[0]] = bytes.fromhex(rest[1])
        else:
            layout["fields"][(kind, rest[0])] = (int(rest[1]), int(rest[2]))
    return layout


def python_header_fields() -> dict[str, tuple[int, int]]:
    fields, offset = {}, 0
    for sub in HINT_HEADER.subcons:
        fields[sub.name] = (offset, sub.sizeof())
        offset += sub.sizeof()
    return fields


def python_record_fields() -> dict[str, tuple[int, int]]:
    codes = RECORD.format.lstrip("<")
    fields, i = {}, 0
    for name in RECORD_FIELDS:
        code = codes[i]
        if code.isdigit():          # a count: "5s"
            code = codes[i:i + 2]
        size = struct.calcsize("<" + code)
        fields[name] = (struct.calcsize("<" + codes[:i]), size)
        i += len(code)
    assert i == len(codes)
    return fields


def test_layout_matches_krtp_h(c_layout):
    assert c_layout["size"] == {"krtp_hint_header": HEADER_SIZE, "krtp_hint_record": RECORD_SIZE}
    assert HINT_HEADER.sizeof() == HEADER_SIZE and RECORD.size == RECORD_SIZE
    header = python_header_fields()
    assert list(header) == HEADER_FIELDS
    for name, where in header.items():
        assert c_layout["fields"][("krtp_hint_header", name)] == where, name
    for name, where in python_record_fields().items():
        assert c_layout["fields"][("krtp_hint_record", name)] == where, name
    const = c_layout["const"]
    assert const["magic"].encode() == hintfile.MAGIC
    assert int(const["version"]) == hintfile.VERSION
    assert int(const["header_size"]) == HEADER_SIZE and int(const["record_size"]) == RECORD_SIZE
    assert int(const["prefix_max"]) == hintfile.PREFIX_MAX
    assert [int(const[k]) for k in ("marker", "keyframe", "blob", "discontinuity")] == [
        REC_MARKER, REC_KEYFRAME, REC_BLOB, hintfile.REC_DISCONTINUITY]


def test_bytes_match_krtp_h(c_layout):
    """Same values, same bytes: offsets, widths and byte order agree."""
    header = HintHeader(clock_rate=90000, payload_type=96, record_count=0x81020304,
                        duration_ns=0x1122334455667788, flags=0x0102,
                        blob_offset=0xA0B0C0D0, blob_size=0x10203)
    assert header.pack() == c_layout["bytes"]["header"]
    assert HintHeader.parse(c_layout["bytes"]["header"]) == header
    record = HintRecord(0x0807060504030201, 1316, 0xDEADBEEF, 0x0123456789ABCDEF,
                        REC_KEYFRAME | REC_MARKER, b"\x7c\x85\x01")
    assert record.pack() == c_layout["bytes"]["record"]
    assert HintRecord.unpack_from(c_layout["bytes"]["record"]) == record


# --- validation ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(clock_rate=0), "clock rate"),
    (dict(clock_rate=2**32), "clock rate"),
    (dict(payload_type=128), "payload type"),
    (dict(payload_type=-1), "payload type"),
    (dict(record_count=-1), "record count"),
    (dict(record_count=MAX_RECORDS), "record count"),
])
def test_header_validation(kw, message):
    args = dict(clock_rate=90000, payload_type=33, record_count=1, duration_ns=0) | kw
    with pytest.raises(HintError, match=message):
        HintHeader(**args)


def _header_bytes(**kw) -> bytes:
    fields = dict(version=1, header_size=64, record_size=32, flags=0, clock_rate=90000,
                  payload_type=33, record_count=0, duration_ns=0, blob_offset=0,
                  blob_size=0) | kw
    return HINT_HEADER.build(fields)


@pytest.mark.parametrize("data, message", [
    (b"", "truncated: 0 of 64"),
    (_header_bytes()[:63], "truncated: 63 of 64"),
    (b"KVODHINX" + _header_bytes()[8:], "bad magic"),
    (_header_bytes(version=2), "version 2"),
    (_header_bytes(header_size=65), "layout 65/32"),
    (_header_bytes(record_size=31), "layout 64/31"),
    (_header_bytes(clock_rate=0), "clock rate"),
    (_header_bytes(payload_type=200), "payload type"),
    (_header_bytes(record_count=2**40), "record count"),
])
def test_header_parse_errors(data, message):
    with pytest.raises(HintError, match=message):
        HintHeader.parse(data)


def test_header_round_trip():
    raw = _header_bytes(flags=3, record_count=5, duration_ns=123, blob_offset=224, blob_size=9)
    assert HintHeader.parse(raw).pack() == raw


def test_record_prefix_bounds():
    with pytest.raises(HintError, match="prefix of 6 bytes"):
        HintRecord(0, 1, 0, 0, 0, b"123456").pack()
    raw = bytearray(HintRecord(0, 1, 0, 0, 0, b"12345").pack())
    assert HintRecord.unpack_from(bytes(raw)).prefix == b"12345"
    raw[26] = 6
    with pytest.raises(HintError, match="prefix_len 6"):
        HintRecord.unpack_from(bytes(raw))


def test_write_rejects_a_count_mismatch(tmp_path):
    header = HintHeader(clock_rate=90000, payload_type=33, record_count=2, duration_ns=0)
    with pytest.raises(HintError, match="32 record bytes for 2 records"):
        write_hint_file(tmp_path / "h", header, HintRecord(0, 1, 0, 0, 0, b"").pack())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("data, message", [
    (b"", "truncated"),
    (b"KVOD", "truncated"),
    (bytes(range(256)) * 4, "bad magic"),
    (_header_bytes(record_count=3) + bytes(2 * 32), "header promises 160"),
    (_header_bytes(record_count=3) + bytes(3 * 32 - 1), "header promises 160"),
    (_header_bytes(version=9) + bytes(32), "version 9"),
])
def test_hintfile_rejects_bad_files(tmp_path, data, message):
    path = tmp_path / "bad.hint"
    path.write_bytes(data)
    with pytest.raises(HintError, match=message):
        HintFile(path)


@given(st.binary(max_size=300))
def test_hintfile_garbage_raises_hinterror_only(data):
    with tempfile.NamedTemporaryFile(suffix=".hint") as f:
        f.write(data)
        f.flush()
        try:
            h = HintFile(f.name)
        except HintError:
            return
        with h:
            list(h)         # a file that opens must be readable to the end


def test_hintfile_access(tmp_path):
    recs = [HintRecord(i * 100, 100, i * 9, i * 1000, REC_KEYFRAME if i % 3 == 0 else 0, b"")
            for i in range(10)]
    write_hint_file(tmp_path / "h", HintHeader(90000, 96, 10, 10_000),
                    b"".join(r.pack() for r in recs))
    with HintFile(tmp_path / "h") as h:
        assert len(h) == 10 and list(h) == recs and h.record(9) == recs[9]
        for bad in (-1, 10):
            with pytest.raises(IndexError):
                h.record(bad)
    write_hint_file(tmp_path / "e", HintHeader(90000, 96, 0, 0), b"")
    with HintFile(tmp_path / "e") as h:
        assert list(h) == []
        with pytest.raises(HintError, match="no records"):
            h.index_at(0)


# --- seeking -------------------------------------------------------------------------

# past 256 records, a search leaves the first block (HintFile.BLOCK) that
# the start of a title is searched in
record_lists = st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=700)


@settings(max_examples=150, deadline=None)
@given(steps=record_lists, probes=st.lists(st.integers(-10, 36000), min_size=1, max_size=20))
def test_seek_matches_brute_force(steps, probes):
    send, t = [], 0
    for step, _ in steps:
        t += step
        send.append(t)
    flags = [REC_KEYFRAME if key else 0 for _, key in steps]
    recs = [HintRecord(i, 1, s // 1000, s, f, b"") for i, (s, f) in enumerate(zip(send, flags))]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h")
        write_hint_file(path, HintHeader(90000, 33, len(recs), send[-1]),
                        b"".join(r.pack() for r in recs))
        with HintFile(path) as h:
            for when in probes + send:
                at = max([i for i, s in enumerate(send) if s <= when], default=0)
                assert h.index_at(when) == at
                key = max([i for i in range(at + 1) if flags[i] & REC_KEYFRAME], default=0)
                # keyframes sharing a send time: the first of them
                while key > 0 and flags[key - 1] & REC_KEYFRAME and send[key - 1] == send[key]:
                    key -= 1
                assert h.keyframe_at_or_before(when) == key


# --- the reference packetiser ------------------------------------------------------------

def test_packetize_synthetic_hint(tmp_path):
    media = bytes(range(256)) * 4
    blob = b"BLOBDATA-0123456789"
    recs = [
        HintRecord(10, 5, 0, 0, REC_KEYFRAME, b""),
        HintRecord(100, 3, 3000, 33_333_333, REC_MARKER, b"\x7c\x85"),
        HintRecord(4, 6, 3000, 33_333_333, REC_BLOB, b"\x00\x10\x08\x00\xAA"),
        HintRecord(1020, 4, 6000, 66_666_667, REC_MARKER, b"\x01"),
    ]
    blob_offset = HEADER_SIZE + len(recs) * RECORD_SIZE
    header = HintHeader(90000, 96, len(recs), 100_000_000, blob_offset=blob_offset,
                        blob_size=len(blob))
    path = tmp_path / "h"
    path.write_bytes(header.pack() + b"".join(r.pack() for r in recs) + blob)
    ssrc = 0x11223344
    with HintFile(path) as h:
        got = list(packetize(h, media, ssrc=ssrc, seq0=0xFFFE, ts0=0xFFFFF000))
        assert list(packetize(h, media, ssrc=ssrc, seq0=7, ts0=0, start=1, stop=3)) == [
            bytes([0x80, 0x80 | 96, 0, 7, 0, 0, 0x0B, 0xB8]) + ssrc.to_bytes(4, "big")
            + b"\x7c\x85" + media[100:103],
            bytes([0x80, 96, 0, 8, 0, 0, 0x0B, 0xB8]) + ssrc.to_bytes(4, "big")
            + b"\x00\x10\x08\x00\xAA" + blob[4:10]]
    ssrc_b = bytes.fromhex("11223344")
    assert got == [
        bytes.fromhex("8060 fffe fffff000") + ssrc_b + media[10:15],
        bytes.fromhex("80e0 ffff fffffbb8") + ssrc_b + b"\x7c\x85" + media[100:103],
        bytes.fromhex("8060 0000 fffffbb8") + ssrc_b + b"\x00\x10\x08\x00\xAA" + b"DATA-0",
        # the timestamp wraps past 2^32
        bytes.fromhex("80e0 0001 00000770") + ssrc_b + b"\x01" + media[1020:1024],
    ]


def test_packetize_refuses_a_record_past_the_media(tmp_path):
    rec = HintRecord(1000, 100, 0, 0, 0, b"")
    write_hint_file(tmp_path / "h", HintHeader(90000, 33, 1, 0), rec.pack())
    with HintFile(tmp_path / "h") as h, pytest.raises(ValueError, match="past the end"):
        list(packetize(h, bytes(1050), ssrc=1, seq0=0, ts0=0))


def test_keyframe_seek_prefers_first_keyframe_at_same_time(tmp_path):
    """Record 0 (PAT/PMT) and record 1 (the first IDR) share send time 0;
    a seek to 0 must start at record 0, or players miss the tables."""
    from rtpengine.hintfile import REC_KEYFRAME, HintFile, HintHeader, HintRecord, write_hint_file
    recs = [HintRecord(0, 564, 0, 0, REC_KEYFRAME, b""),
            HintRecord(564, 1316, 0, 0, REC_KEYFRAME, b""),
            HintRecord(1880, 1316, 90, 1_000_000, 0, b""),
            HintRecord(3196, 1316, 900, 10_000_000, REC_KEYFRAME, b""),
            HintRecord(4512, 1316, 900, 10_000_000, 0, b"")]
    path = tmp_path / "t.hint"
    write_hint_file(path, HintHeader(90000, 33, len(recs), 20_000_000),
                    b"".join(r.pack() for r in recs))
    with HintFile(path) as hints:
        assert hints.keyframe_at_or_before(0) == 0
        assert hints.keyframe_at_or_before(5_000_000) == 0
        assert hints.keyframe_at_or_before(10_000_000) == 3
        assert hints.keyframe_at_or_before(99_000_000) == 3


def test_write_hint_file_with_a_blob_area(tmp_path):
    from rtpengine.hintfile import REC_BLOB, HintRecord, write_hint_file
    rec = HintRecord(3, 4, 0, 0, REC_BLOB, b"")
    path = tmp_path / "b.hint"
    write_hint_file(path, HintHeader(clock_rate=90000, payload_type=96, record_count=1,
                                     duration_ns=0), rec.pack(), b"abcdefgh")
    with HintFile(path) as h:
        assert h.header.blob_offset == 64 + 32 and h.header.blob_size == 8
        assert h.record(0) == rec
        off = h.header.blob_offset + rec.offset
    with open(path, "rb") as f:
        assert f.read()[off:off + rec.length] == b"defg"
