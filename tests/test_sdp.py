"""SDP: what DESCRIBE hands out, the small parser, and ffprobe reading it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtsp.sdp import (MAX_SDP_BYTES, SdpError, SdpMedia, SessionDescription, build_sdp,
                           parse_sdp)
from rtpengine.rtp import RtpHeader

FIXTURES = Path(__file__).parent / "fixtures" / "rtsp"
MPEG_TS = SdpMedia("video", 33, "MP2T", 90000)


def ts_sdp(**overrides: object) -> str:
    args = {"session_name": "Big Buck Bunny", "origin_address": "192.0.2.10",
            "session_id": 3913251040, "session_version": 1, "duration_s": 596.458,
            "media": [MPEG_TS]}
    args.update(overrides)
    return build_sdp(**args)  # type: ignore[arg-type]


def test_mpeg_ts_description_is_exact() -> None:
    assert ts_sdp() == (
        "v=0\r\n"
        "o=- 3913251040 1 IN IP4 192.0.2.10\r\n"
        "s=Big Buck Bunny\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "t=0 0\r\n"
        "a=control:*\r\n"
        "a=range:npt=0-596.458\r\n"
        "m=video 0 RTP/AVP 33\r\n"
        "a=rtpmap:33 MP2T/90000\r\n"
        "a=control:trackID=0\r\n"
    )


def test_unknown_duration_and_rounding() -> None:
    assert "a=range:npt=0-\r\n" in ts_sdp(duration_s=None)
    assert "a=range:npt=0-10.000\r\n" in ts_sdp(duration_s=9.9996)


def test_ipv6_origin_and_host_name_origin() -> None:
    text = ts_sdp(origin_address="2001:db8::7")
    assert "o=- 3913251040 1 IN IP6 2001:db8::7\r\n" in text
    assert "c=IN IP6 ::\r\n" in text
    assert "IN IP4 vod.example.net\r\n" in ts_sdp(origin_address="vod.example.net")
    for bad in ("", "bad host", "a..b", "x\r\ny"):
        with pytest.raises(ValueError):
            ts_sdp(origin_address=bad)


@pytest.mark.parametrize("name, line", [
    ("Evil\r\na=control:rtsp://attacker/", "s=Evil  a=control:rtsp://attacker/"),
    ("tab\there\x00", "s=tab here"),
    ("", "s= "),
    ("\r\n", "s= "),
    ("Café – 東京", "s=Café – 東京"),
    ("x" * 300, "s=" + "x" * 255),
])
def test_session_name_is_one_line(name: str, line: str) -> None:
    text = ts_sdp(session_name=name)
    assert f"\r\n{line}\r\n" in text
    assert text.count("\n") == text.count("\r\n") == 10
    assert parse_sdp(text).attribute("control") == "*"


def test_audio_video_with_fmtp_and_channels() -> None:
    media = [SdpMedia("video", 96, "H264", 90000, fmtp="packetization-mode=1", control="trackID=1"),
             SdpMedia("audio", 97, "MPEG4-GENERIC", 48000, fmtp="mode=AAC-hbr;config=1190",
                      control="trackID=2", channels=2)]
    text = ts_sdp(media=media)
    assert text.endswith("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                         "a=fmtp:96 packetization-mode=1\r\na=control:trackID=1\r\n"
                         "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
                         "a=fmtp:97 mode=AAC-hbr;config=1190\r\na=control:trackID=2\r\n")
    sd = parse_sdp(text)
    assert [m.control for m in sd.media] == ["trackID=1", "trackID=2"]
    assert sd.media[1].rtpmap(97) == ("MPEG4-GENERIC", 48000, 2)
    assert sd.media[0].rtpmap(97) is None


@pytest.mark.parametrize("kwargs", [
    {"kind": "data"}, {"payload_type": 128}, {"payload_type": -1}, {"encoding": "MP2T/x"},
    {"encoding": ""}, {"clock_rate": 0}, {"fmtp": "a\r\na=evil"}, {"fmtp": ""},
    {"control": "track 0"}, {"control": ""}, {"channels": 2}, {"kind": "audio", "channels": 0},
])
def test_bad_media_cannot_be_built(kwargs: dict) -> None:
    args = {"kind": "video", "payload_type": 33, "encoding": "MP2T", "clock_rate": 90000, **kwargs}
    with pytest.raises(ValueError):
        SdpMedia(**args)


@pytest.mark.parametrize("overrides", [
    {"media": []}, {"session_id": -1}, {"session_version": 2**64}, {"duration_s": -1.0},
    {"duration_s": float("nan")}, {"duration_s": float("inf")},
    {"media": [MPEG_TS, MPEG_TS]},                       # two tracks, one control URL
])
def test_bad_descriptions_cannot_be_built(overrides: dict) -> None:
    with pytest.raises(ValueError):
        ts_sdp(**overrides)


# ------------------------------------------------------------- parser ---

def test_parse_what_we_build() -> None:
    sd = parse_sdp(ts_sdp())
    assert isinstance(sd, SessionDescription)
    assert (sd.origin.session_id, sd.origin.addrtype, sd.origin.address) == (
        "3913251040", "IP4", "192.0.2.10")
    assert sd.session_name == "Big Buck Bunny"
    assert sd.connection == "IN IP4 0.0.0.0" and sd.times == ((0, 0),)
    assert sd.attribute("range") == "npt=0-596.458"
    (m,) = sd.media
    assert (m.kind, m.port, m.proto, m.formats, m.control) == (
        "video", 0, "RTP/AVP", ("33",), "trackID=0")
    assert m.rtpmap(33) == ("MP2T", 90000, None)


def test_parse_ffmpeg_sdp() -> None:
    sd = parse_sdp((FIXTURES / "ffmpeg-5.1" / "h264-aac.sdp").read_bytes())
    assert sd.session_name == "No Name"
    assert sd.attribute("tool") == "libavformat LIBAVFORMAT_VERSION"
    video, audio = sd.media
    assert (video.port, video.connection, video.rtpmap(96)) == (
        19002, "IN IP4 127.0.0.1", ("H264", 90000, None))
    assert video.attribute("fmtp").startswith("96 packetization-mode=1;")
    assert (audio.kind, audio.rtpmap(97)) == ("audio", ("MPEG4-GENERIC", 48000, 1))
    assert audio.control is None


def test_lf_line_ends_flags_and_port_counts() -> None:
    text = ("v=0\no=jdoe 1 2 IN IP6 ::1\ns=\ni=info\nt=0 0\na=recvonly\n"
            "m=audio 49170/2 RTP/AVP 0 8\nb=AS:64\na=sendrecv\n")
    sd = parse_sdp(text)
    assert sd.session_name == "" and sd.attribute("recvonly") == ""
    (m,) = sd.media
    assert (m.port, m.port_count, m.formats, m.attribute("sendrecv")) == (
        49170, 2, ("0", "8"), "")
    assert parse_sdp("v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\n").times == ()


@pytest.mark.parametrize("text", [
    "", "\r\n", "o=- 1 1 IN IP4 h\r\ns=x\r\n", "v=1\r\no=- 1 1 IN IP4 h\r\ns=x\r\n",
    "v=0\r\ns=x\r\no=- 1 1 IN IP4 h\r\n", "v=0\r\no=- x 1 IN IP4 h\r\ns=x\r\n",
    "v=0\r\no=- 1 1 IN IP4\r\ns=x\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nx=unknown\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nno equals\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nA=upper\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\n=x\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nv=0\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nt=0\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nm=video 70000 RTP/AVP 33\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nm=video 0/0 RTP/AVP 33\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nm=video 0 RTP/AVP\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nm=video 0 RTP/AVP 33\r\nt=0 0\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\na=bad name:1\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\na=x\ry\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\ns=x\x00\r\n",
])
def test_malformed_sdp_is_an_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(text)


def test_size_bound_and_encoding() -> None:
    big = ts_sdp() + "a=x-pad:" + "p" * MAX_SDP_BYTES + "\r\n"
    for form in (big, big.encode()):
        with pytest.raises(SdpError, match="over"):
            parse_sdp(form)
    with pytest.raises(SdpError, match="over"):
        parse_sdp(ts_sdp(), max_bytes=100)
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n")
    with pytest.raises(SdpError):
        parse_sdp("v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n"
                  "a=rtpmap:96 H264/fast\r\n").media[0].rtpmap(96)


_names = st.text(max_size=40)
_media = st.builds(
    SdpMedia, kind=st.sampled_from(["video", "application"]),
    payload_type=st.integers(0, 127), encoding=st.sampled_from(["MP2T", "H264", "H265", "x-kvod"]),
    clock_rate=st.integers(1, 2**32 - 1),
    fmtp=st.one_of(st.none(), st.text(st.characters(blacklist_characters="\r\n\x00"),
                                      min_size=1, max_size=30)),
)


@settings(max_examples=150, deadline=None)
@given(_names, st.integers(0, 2**64 - 1), st.one_of(st.none(), st.floats(0, 1e7)),
       st.lists(_media, min_size=1, max_size=4))
def test_built_descriptions_parse_back(name: str, sid: int, duration: float | None,
                                       media: list[SdpMedia]) -> None:
    media = [SdpMedia(m.kind, m.payload_type, m.encoding, m.clock_rate, m.fmtp, f"trackID={i}")
             for i, m in enumerate(media)]
    sd = parse_sdp(build_sdp(session_name=name, origin_address="::1", session_id=sid,
                             session_version=sid, duration_s=duration, media=media))
    assert int(sd.origin.session_id) == sid and "\n" not in sd.session_name
    assert [m.control for m in sd.media] == [m.control for m in media]
    for got, want in zip(sd.media, media):
        assert got.rtpmap(want.payload_type) == (want.encoding, want.clock_rate, None)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_input_parses_or_raises_sdp_error(data: str | bytes) -> None:
    try:
        parse_sdp(data)
    except SdpError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ts_sdp().split("\r\n")[:-1] + [
    "m=audio 0 RTP/AVP 14", "a=rtpmap:33 MP2T", "c=IN IP4", "b=AS:1", "t=x y", "k=clear:x",
    "a=", "a=:", "m=video 1/1 RTP/AVP 33 34", "r=7d 1h 0 25h", "z=0 0",
]), max_size=15))
def test_shuffled_lines_parse_or_raise_sdp_error(lines: list[str]) -> None:
    try:
        sd = parse_sdp("\r\n".join(lines))
    except SdpError:
        return
    for m in sd.media:
        for pt in m.formats:
            try:
                m.rtpmap(int(pt))
            except SdpError:
                pass


# ------------------------------------------------- a real client reads it ---

def _free_even_port_pair() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    pytest.skip("no free UDP port pair on loopback")


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
def test_ffprobe_reads_our_mpeg_ts_description(tmp_path: Path, short_ts_file: str) -> None:
    """ffprobe opens our SDP, receives RTP/MP2T and finds the streams in it.

    A DESCRIBE answer has port 0 and the unspecified address (SETUP brings
    the real ones); for a bare SDP file the receiver needs both, so only
    those two fields are filled in here, everything else is ours.
    """
    port = _free_even_port_pair()
    text = build_sdp(session_name="kvod probe", origin_address="127.0.0.1", session_id=1,
                     session_version=1, duration_s=3.0, media=[MPEG_TS])
    text = text.replace("m=video 0 ", f"m=video {port} ").replace("IN IP4 0.0.0.0",
                                                                 "IN IP4 127.0.0.1")
    sdp_path = tmp_path / "title.sdp"
    sdp_path.write_text(text)
    payload = Path(short_ts_file).read_bytes()
    probe = subprocess.Popen(
        ["ffprobe", "-v", "info", "-protocol_whitelist", "file,rtp,udp",
         "-analyzeduration", "1000000", "-i", str(sdp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seq, started = 0, time.monotonic()
    try:
        # ffprobe binds its port some time after it starts: keep sending the
        # title (7 TS packets per RTP packet, RFC 2250) until it has seen enough.
        while probe.poll() is None and time.monotonic() - started < 20:
            for offset in range(0, len(payload) - 1316, 1316):
                header = RtpHeader(33, seq & 0xFFFF, (seq * 300) & 0xFFFFFFFF, 0x4B564F44)
                sender.sendto(header.pack() + payload[offset:offset + 1316], ("127.0.0.1", port))
                seq += 1
                if seq % 32 == 0:
                    time.sleep(0.002)
                    if probe.poll() is not None:
                        break
    finally:
        sender.close()
        if probe.poll() is None:
            probe.kill()
        _, err = probe.communicate()
    log = err.decode(errors="replace")
    assert probe.returncode == 0, log[-2000:]
    assert "Input #0, sdp" in log
    assert "title           : kvod probe" in log          # our s= line
    assert "Duration: 00:00:03.00" in log                 # our a=range
    assert "service_provider: FFmpeg" in log              # the MPEG-TS SDT, so MP2T was demuxed
    assert "Video: h264" in log and "Audio: aac" in log


def test_rtpmap_channels_of_aac_come_from_its_config():
    from appliance.rtsp.sdp import rtpmap_channels
    assert rtpmap_channels("MPEG4-GENERIC", "streamtype=5;config=1190") == 2
    assert rtpmap_channels("mpeg4-generic", "config=1188;mode=AAC-hbr") == 1
    assert rtpmap_channels("MPEG4-GENERIC", "config=119056E500") == 2      # with SBR signalling
    assert rtpmap_channels("MPEG4-GENERIC", "config=11B8") == 8            # 7.1
    assert rtpmap_channels("MPEG4-GENERIC", "config=1180") is None         # from a PCE
    assert rtpmap_channels("MPEG4-GENERIC", "mode=AAC-hbr") is None
    assert rtpmap_channels("MPEG4-GENERIC", None) is None
    assert rtpmap_channels("H264", "config=1190") is None
    # escape codes: object type 31+ and an explicit 24-bit rate
    assert rtpmap_channels("MPEG4-GENERIC", "config=F81E01770040") == 2
