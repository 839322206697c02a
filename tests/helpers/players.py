"""Real players as the integration tests run them (GStreamer's rtspsrc,
ffmpeg), and what tells whether they got the whole title."""

from __future__ import annotations

import hashlib
import subprocess

from appliance.bench.rtsp_client import RtpReceiver
from rtpengine.rtp import parse_rtp, seq_diff

def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def framemd5(source: str, *args: str, timeout: float = 60) -> list[str]:
    """(stream, size, md5) of every frame ffmpeg reads from ``source``, copied."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *args, "-i", source,
                          "-c", "copy", "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    return [",".join(field.strip() for i, field in enumerate(line.split(",")) if i in (0, 4, 5))
            for line in out.splitlines() if line and not line.startswith("#")]


# GStreamer 1.22 races itself at end of stream: on our RTCP BYE it posts EOS
# and sends PAUSE, and its streaming thread flushes the RTSP connection while
# its task thread is still writing that PAUSE, which then fails with "Received
# end-of-file" (the TEARDOWN after it, on the same connection, gets our 200).
# Seen with GST_DEBUG=rtspsrc:6 ("connection flush busy PAUSE"). The stream is
# complete by then; the byte comparison still decides.
GST_EOS_PAUSE_RACE = b"Could not send message. (Received end-of-file)"


def gst_finished(proc: subprocess.Popen, output: bytes) -> bool:
    """gst-launch ended well, or only with its own EOS/PAUSE race."""
    if proc.returncode == 0:
        return True
    errors = [line for line in output.splitlines() if line.startswith(b"ERROR:")]
    return bool(errors) and output.count(GST_EOS_PAUSE_RACE) == len(errors) and all(
        b"Could not write to resource" in line for line in errors)


def gst_receive(url: str, out: str, protocols: str = "udp") -> subprocess.Popen:
    """GStreamer's rtspsrc writing the title's MPEG-TS to ``out`` (an rtsps://
    ``url``: over TLS, any certificate accepted)."""
    tls = ["tls-validation-flags=0"] if url.startswith("rtsps://") else []
    return subprocess.Popen(["gst-launch-1.0", "-q", "rtspsrc", f"location={url}",
                             f"protocols={protocols}", *tls, "!", "rtpmp2tdepay", "!",
                             "filesink", f"location={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def assert_contiguous(seqs: list[int]) -> None:
    for a, b in zip(seqs, seqs[1:]):
        assert seq_diff(b, a) == 1, f"sequence jumps from {a} to {b}"


def payloads(receiver: RtpReceiver) -> list[tuple[int, bytes]]:
    out = []
    for _, packet in receiver.packets:
        header, payload = parse_rtp(packet)
        out.append((header.seq, payload))
    return out
