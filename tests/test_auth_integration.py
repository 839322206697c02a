"""RTSP authentication with the real daemon and real players: a users file
made by Apache's ``htdigest``, ffmpeg/ffprobe and GStreamer with
``user:pass@`` URLs, and a raw client for what players never do (replays)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from appliance.bench.rtsp_client import RtpReceiver, RtspClient
from tests.helpers.daemon import KvodDaemon
from tests.helpers.players import framemd5, gst_finished, sha256
from tests.helpers.rtsp_auth import challenge_params, digest_authorization

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("htdigest") is None,
                                 reason="htdigest (apache2-utils) is not installed: make deps")]

PASSWORD = "w0nder land"


def htdigest(path: str, user: str, password: str, create: bool = False) -> None:
    """Add ``user`` to the users file with Apache's own tool (realm kvod)."""
    subprocess.run(["htdigest", *(["-c"] if create else []), path, "kvod", user],
                   input=f"{password}\n{password}\n".encode(), check=True,
                   capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, short_ts_file):
    folder = str(tmp_path_factory.mktemp("kvod-auth"))
    users = os.path.join(folder, "users.htdigest")
    htdigest(users, "alice", PASSWORD, create=True)
    d = KvodDaemon(folder, extra=('\n[auth]\nhtdigest_file = "users.htdigest"\n'
                                  'rules = ["/public/ open", "/staff/ bob"]\n'))
    d.users = users
    d.add(short_ts_file, "clips/short")
    d.add(short_ts_file, "public/short")
    d.add(short_ts_file, "staff/short")
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def with_user(url: str, user: str, password: str) -> str:
    from urllib.parse import quote
    return url.replace("rtsp://", f"rtsp://{quote(user)}:{quote(password, safe='')}@", 1)


def admin_json(daemon: KvodDaemon, path: str = "/status") -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}{path}", timeout=5) as r:
        return json.loads(r.read())


def metrics(daemon: KvodDaemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/metrics",
                                timeout=5) as r:
        return r.read().decode()


# -- real players -----------------------------------------------------------------


def test_ffmpeg_with_credentials_gets_every_frame(daemon, short_ts_file):
    url = with_user(daemon.url("clips/short"), "alice", PASSWORD)
    assert framemd5(url, "-rtsp_transport", "udp", timeout=40) == framemd5(short_ts_file)


def test_ffprobe_with_credentials_and_without(daemon):
    url = daemon.url("clips/short")
    good = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "udp",
                           "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                           with_user(url, "alice", PASSWORD)],
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and "h264" in good.stdout, good.stderr
    for bad in (url, with_user(url, "alice", "not it")):
        refused = subprocess.run(["ffprobe", "-v", "error", bad], capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr


def test_gstreamer_with_credentials_gets_the_file(daemon, short_ts_file, tmp_path):
    out = str(tmp_path / "gst.ts")
    proc = subprocess.Popen(["gst-launch-1.0", "-q", "rtspsrc",
                             f"location={daemon.url('clips/short')}", "user-id=alice",
                             f"user-pw={PASSWORD}", "protocols=udp", "!", "rtpmp2tdepay",
                             "!", "filesink", f"location={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = proc.communicate(timeout=40)
    assert gst_finished(proc, output), output
    assert sha256(out) == sha256(short_ts_file)


def test_gstreamer_with_a_user_pass_url_gets_the_file(daemon, short_ts_file, tmp_path):
    out = str(tmp_path / "gst.ts")
    url = with_user(daemon.url("clips/short"), "alice", PASSWORD)
    proc = subprocess.Popen(["gst-launch-1.0", "-q", "rtspsrc", f"location={url}",
                             "protocols=udp", "!", "rtpmp2tdepay", "!", "filesink",
                             f"location={out}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output, _ = proc.communicate(timeout=40)
    assert gst_finished(proc, output), output
    assert sha256(out) == sha256(short_ts_file)


def test_open_prefix_plays_without_credentials(daemon, short_ts_file):
    assert framemd5(daemon.url("public/short"), "-rtsp_transport", "udp",
                    timeout=40) == framemd5(short_ts_file)


# -- what players do not do -------------------------------------------------------


def test_options_is_open(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        resp = client.request("OPTIONS", client.url("clips/short"))
        assert resp.status == 200 and "DESCRIBE" in resp.headers.get("Public")
    finally:
        client.close()


def test_wrong_password_gets_401_and_no_rtp(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    receiver = RtpReceiver()
    url = client.url("clips/short")
    try:
        challenge = client.request("DESCRIBE", url).headers.get("WWW-Authenticate")
        assert challenge_params(challenge)["realm"] == "kvod"
        setup_url = url + "/trackID=0"
        transport = f"RTP/AVP;unicast;client_port={receiver.ports[0]}-{receiver.ports[1]}"
        resp = client.request("SETUP", setup_url, [
            ("Transport", transport),
            ("Authorization", digest_authorization(challenge, "alice", "guess", "SETUP",
                                                   setup_url))])
        assert resp.status == 401 and "Session" not in resp.headers
        assert client.request("PLAY", url + "/", [("Session", "0123456789ABCDEF")]).status \
            == 401
        assert not receiver.wait_for(1, timeout=1.5)
    finally:
        client.close()
        receiver.close()
    assert "guess" not in daemon.log()
    assert "from 127.0.0.1 refused (401)" in daemon.log()


def test_a_replayed_authorization_is_refused(daemon):
    url = f"rtsp://127.0.0.1:{daemon.port}/clips/short"
    first, second = RtspClient("127.0.0.1", daemon.port), RtspClient("127.0.0.1", daemon.port)
    try:
        challenge = first.request("DESCRIBE", url).headers.get("WWW-Authenticate")
        auth = [("Authorization", digest_authorization(challenge, "alice", PASSWORD,
                                                       "DESCRIBE", url))]
        assert first.request("DESCRIBE", url, auth).status == 200
        assert first.request("DESCRIBE", url, auth).status == 401      # same nonce and nc
        assert second.request("DESCRIBE", url, auth).status == 401     # another connection
        stale = second.request("DESCRIBE", url, auth).headers.get("WWW-Authenticate")
        assert challenge_params(stale)["stale"] == "true"
    finally:
        first.close()
        second.close()


def test_a_user_the_rule_does_not_name_gets_403(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    url = client.url("staff/short")
    try:
        challenge = client.request("DESCRIBE", url).headers.get("WWW-Authenticate")
        resp = client.request("DESCRIBE", url, [("Authorization", digest_authorization(
            challenge, "alice", PASSWORD, "DESCRIBE", url))])
        assert resp.status == 403
    finally:
        client.close()


def test_refusals_are_counted_in_status_and_metrics(daemon):
    client = RtspClient("127.0.0.1", daemon.port)
    try:
        assert client.request("DESCRIBE", client.url("clips/short"),
                              [("Authorization", "Digest ,,")]).status == 400
    finally:
        client.close()
    auth = admin_json(daemon)["auth"]
    assert auth["realm"] == "kvod" and auth["users"] >= 1
    assert auth["failures"]["malformed"] >= 1 and auth["challenges"] >= 1
    assert 'kvod_auth_failures_total{reason="malformed"}' in metrics(daemon)


def test_reload_reads_new_users(daemon):
    # last in the module: it adds bob to the users file
    client = RtspClient("127.0.0.1", daemon.port)
    url = client.url("staff/short")
    try:
        challenge = client.request("DESCRIBE", url).headers.get("WWW-Authenticate")
        header = digest_authorization(challenge, "bob", "builder", "DESCRIBE", url)
        assert client.request("DESCRIBE", url, [("Authorization", header)]).status == 401
        htdigest(daemon.users, "bob", "builder")
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth: 2 user(s)" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        challenge = client.request("DESCRIBE", url).headers.get("WWW-Authenticate")
        header = digest_authorization(challenge, "bob", "builder", "DESCRIBE", url)
        assert client.request("DESCRIBE", url, [("Authorization", header)]).status == 200
    finally:
        client.close()


def test_daemon_refuses_a_malformed_users_file_naming_the_line(tmp_path):
    (tmp_path / "users").write_text("# viewers\nalice:kvod\n")
    config = tmp_path / "kvod.toml"
    config.write_text('[auth]\nhtdigest_file = "users"\n[catalog]\npath = "catalog.db"\n'
                      '[cache]\ndir = "cache"\n')
    result = subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..",
                                                              "bin", "kvod"),
                             "--config", str(config), "serve"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "auth.htdigest_file" in result.stderr and f"{tmp_path}/users:2" in result.stderr
