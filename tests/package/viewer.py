"""An RTSP viewer for the package tests, run on the host inside the
container's network namespace (nsenter): it plays a title from the
container's port 554, says "playing" once packets come, then waits for
the stream's RTCP BYE and prints what it got as JSON.

    python3 -m tests.package.viewer NAME SECONDS
"""

from __future__ import annotations

import json
import sys
import time

from appliance.bench.rtsp_client import RtpReceiver, RtspClient


def main(name: str, seconds: float) -> int:
    receiver = RtpReceiver()
    client = RtspClient("127.0.0.1", 554)
    try:
        url = client.url(name)
        session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
        if client.request("PLAY", url + "/", [("Session", session)]).status != 200:
            print(json.dumps({"error": "PLAY refused"}), flush=True)
            return 1
        if not receiver.wait_for(10, timeout=10):
            print(json.dumps({"error": "no packets"}), flush=True)
            return 1
        print("playing", flush=True)
        deadline = time.monotonic() + seconds
        while not receiver.got_bye() and time.monotonic() < deadline:
            time.sleep(0.02)
        print(json.dumps({"packets": len(receiver.packets), "bye": receiver.got_bye(),
                          "bye_at": time.monotonic()}), flush=True)
        return 0
    finally:
        client.close()
        receiver.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
