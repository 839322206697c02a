"""The CLI's one way to the daemon: every admin listen form the config
accepts is reached by every command that talks to the daemon."""

from __future__ import annotations

import json

import pytest

from appliance.cli.common import admin_address, admin_url
from appliance.config import Config
from appliance.endpoint_strings import parse_endpoint, with_backlog
from tests.helpers.daemon import KvodDaemon

# every TCP form Twisted's serverFromString accepts, and what a client dials
TCP_FORMS = [
    ("tcp:8555", ("127.0.0.1", 8555)),
    ("tcp:port=8555", ("127.0.0.1", 8555)),
    ("tcp:8555:interface=127.0.0.2", ("127.0.0.2", 8555)),
    ("tcp:port=8555:interface=127.0.0.1", ("127.0.0.1", 8555)),
    ("tcp:interface=127.0.0.1:port=8555", ("127.0.0.1", 8555)),
    ("tcp:8555:127.0.0.3", ("127.0.0.3", 8555)),
    ("tcp:8555:127.0.0.3:100", ("127.0.0.3", 8555)),
    ("tcp:8555:interface=127.0.0.1:backlog=1024", ("127.0.0.1", 8555)),
    ("tcp:backlog=10:port=8555", ("127.0.0.1", 8555)),
    ("tcp:8555:interface=0.0.0.0", ("127.0.0.1", 8555)),
    ("tcp:8555:interface=\\:\\:", ("::1", 8555)),
    ("tcp6:8555", ("::1", 8555)),
    ("tcp6:8555:interface=\\:\\:1", ("::1", 8555)),
    ("tcp6:port=8555:interface=\\:\\:1", ("::1", 8555)),
    ("tcp6:port=8555:interface=fe80\\:\\:1", ("fe80::1", 8555)),
]


@pytest.mark.parametrize("listen,address", TCP_FORMS)
def test_every_tcp_listen_form_is_understood(listen, address):
    assert admin_address(listen) == address
    config = Config.from_dict({"admin": {"listen": listen}})
    host, port = address
    assert admin_url(config) == f"http://{'[' + host + ']' if ':' in host else host}:{port}"


@pytest.mark.parametrize("listen", [
    "unix:/run/kvod/admin.sock", "systemd:domain=INET:index=0", "tcp:interface=127.0.0.1",
    "tcp:notaport", "ssl:8555",
])
def test_a_listen_form_that_is_not_plain_tcp_has_no_address(listen):
    assert admin_address(listen) is None


@pytest.mark.integration
def test_cache_commands_reach_a_daemon_whose_admin_listen_uses_keywords(tmp_path, short_ts_file):
    # With this valid listen form, 'cache evict' used to conclude that no
    # daemon ran and evict behind its back.
    d = KvodDaemon(str(tmp_path), admin_listen="tcp:port={port}:interface=127.0.0.1")
    d.add(short_ts_file, "films/a")
    d.start()
    try:
        status = json.loads(d.kvod("cache", "status", "--json").stdout)
        assert status["daemon"] is True
        assert json.loads(d.kvod("status", "--json").stdout)["pid"] == d.proc.pid
        result = d.kvod("cache", "evict", "films/a")
        assert "evicted films/a" in result.stdout
        # the daemon did it (its log says so), not the CLI on its own
        assert "evicted films/a" in d.log()
    finally:
        assert d.stop() == 0, d.log()


@pytest.mark.parametrize("listen,want", [
    ("tcp:8554:interface=0.0.0.0", "tcp:8554:interface=0.0.0.0:backlog=1024"),
    ("tcp6:8554:interface=\\:\\:", "tcp6:8554:interface=\\:\\::backlog=1024"),
    ("tcp:8554:interface=0.0.0.0:backlog=10", "tcp:8554:interface=0.0.0.0:backlog=10"),
    ("tcp:8554:127.0.0.1:10", "tcp:8554:127.0.0.1:10"),
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
])
def test_a_tcp_listener_gets_the_configured_backlog_unless_it_names_one(listen, want):
    assert with_backlog(listen, 1024) == want
    if want != listen:
        assert parse_endpoint(want).options["backlog"] == "1024"


@pytest.mark.integration
def test_the_daemon_listens_with_a_flash_crowd_backlog_and_all_open_files(tmp_path):
    import resource
    import subprocess

    d = KvodDaemon(str(tmp_path), rtsp="listen_backlog = 777\n")
    low = 512
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    d.serve.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    d.start()
    try:
        # ss shows a listener's backlog as its Send-Q
        out = subprocess.run(["ss", "-ltnH", f"sport = :{d.port}"], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[2] == "777", out
        with open(f"/proc/{d.proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert int(line.split()[3]) == hard
    finally:
        assert d.stop() == 0
