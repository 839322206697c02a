"""GStreamer's rtspsrc asked for trick play the way an application asks:
a seek with a rate and the TRICKMODE flag, which rtspsrc turns into a
PLAY with ``Scale`` (and, backwards, a Range from the later time to the
earlier). gst-launch cannot seek, so this runs GStreamer from Python.

Run as ``python3 -m tests.helpers.gst_trick URL RATE OUT``: it plays the
title for a second, seeks at ``RATE`` (from 0, or backwards from 9 s),
writes the MPEG-TS that arrives after the seek to ``OUT`` and prints one
JSON line: the error GStreamer posted (or null), and the seconds from the
seek to the last RTP packet and to EOS (null: none within 10 s).
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main(url: str, rate: float, out: str) -> None:
    import gi
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"rtspsrc location={url} protocols=udp latency=100 ! rtpmp2tdepay ! "
        "identity name=ts signal-handoffs=true ! fakesink sync=false")
    lock = threading.Lock()
    state = {"seeked": None, "chunks": [], "last": None}

    def handoff(_identity, buffer) -> None:
        with lock:
            if state["seeked"] is not None:
                ok, info = buffer.map(Gst.MapFlags.READ)
                if ok:
                    state["chunks"].append(bytes(info.data))
                    buffer.unmap(info)
                state["last"] = time.monotonic()
    pipeline.get_by_name("ts").connect("handoff", handoff)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    result = {"error": None, "last_packet_s": None, "eos_s": None}

    def run(seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = bus.timed_pop_filtered(50 * Gst.MSECOND,
                                         Gst.MessageType.ERROR | Gst.MessageType.EOS)
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ERROR:
                error, debug = msg.parse_error()
                result["error"] = f"{error.message} ({debug})"
            elif state["seeked"] is not None:
                result["eos_s"] = time.monotonic() - state["seeked"]
            return False
        return True

    if run(1.0):
        flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.TRICKMODE
        with lock:
            state["seeked"] = time.monotonic()
        if rate > 0:
            done = pipeline.seek(rate, Gst.Format.TIME, flags, Gst.SeekType.SET, 0,
                                 Gst.SeekType.NONE, -1)
        else:   # backwards: the segment's stop is where play starts
            done = pipeline.seek(rate, Gst.Format.TIME, flags, Gst.SeekType.SET, 0,
                                 Gst.SeekType.SET, 9 * Gst.SECOND)
        if not done:
            result["error"] = "the seek was refused"
        else:
            run(10.0)
    pipeline.set_state(Gst.State.NULL)
    with lock:
        with open(out, "wb") as f:
            f.write(b"".join(state["chunks"]))
        if state["last"] is not None:
            result["last_packet_s"] = state["last"] - state["seeked"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
