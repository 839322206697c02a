"""The end-of-stream PES flush trailer, checked with the real ffmpeg."""

from __future__ import annotations

import subprocess

from rtpengine.index.ts_trailer import flush_packet, last_continuity, pes_flush_trailer


def _frames(path: str) -> list[str]:
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, "-c", "copy",
                          "-f", "framemd5", "-"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [",".join(line.split(",")[i].strip() for i in (0, 4, 5))
            for line in out.splitlines() if line and not line.startswith("#")]


def test_trailer_names_each_pes_pid_with_its_next_counter(ts_file):
    data = open(ts_file, "rb").read()
    last = last_continuity(data)
    assert set(last) == {0x100, 0x101}  # H.264 and AAC of tests.helpers.titles
    trailer = pes_flush_trailer(data)
    assert len(trailer) == 188 * len(last)
    for i, (pid, cc) in enumerate(last.items()):
        pkt = trailer[188 * i:188 * (i + 1)]
        assert pkt[0] == 0x47 and pkt[1] & 0x40  # sync, PUSI
        assert ((pkt[1] & 0x1F) << 8 | pkt[2]) == pid
        assert pkt[3] & 0x0F == (cc + 1) & 0x0F
        assert pkt[-6:] == bytes([0, 0, 1, 0xBE, 0, 0])


def test_trailer_carries_no_frame_and_keeps_every_frame(ts_file, tmp_path):
    data = open(ts_file, "rb").read()
    with_trailer = tmp_path / "t.ts"
    with_trailer.write_bytes(data + pes_flush_trailer(data))
    assert _frames(str(with_trailer)) == _frames(ts_file)


def test_continuity_wraps():
    assert flush_packet(0x100, 15)[3] & 0x0F == 0


def test_garbage_and_empty_input_give_no_trailer():
    assert pes_flush_trailer(b"") == b""
    assert pes_flush_trailer(bytes(188 * 10)) == b""
    assert pes_flush_trailer(b"\x47" + bytes(187 * 3)) == b""
