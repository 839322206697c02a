"""What systemd sees of the daemon, sans-IO: the STATUS= line, the
watchdog's verdicts, journal fields, and which config changes a reload
applies."""

from __future__ import annotations

import logging

from appliance import supervision
from appliance.config import Config
from appliance.reload import RUNTIME_KEYS, plan
from appliance.daemon import _with
from appliance.rtsp.sessions import log_fields
from appliance.supervision import Progress, StatusLine, Watchdog


def snapshot(*streams: tuple[str, str, int, str]) -> dict:
    """(session, track, payload octets, state) per stream."""
    sessions: dict[str, dict] = {}
    for sid, track, octets, state in streams:
        session = sessions.setdefault(sid, {"id": sid, "state": state, "streams": {}})
        session["streams"][track] = {"payload_octets": octets, "packets_sent": octets // 1316,
                                     "state": state}
    playing = sum(1 for s in sessions.values() if s["state"] == "playing")
    return {"sessions": list(sessions.values()), "engine": {"strategy": "gso", "rounds": 0},
            "totals": {"sessions": len(sessions), "playing": playing}}


def test_status_line_counts_rate_from_streams_present_in_both_snapshots():
    line = StatusLine()
    cache = {"used_bytes": 3 << 30, "quota_bytes": 10 << 30}
    first = line.line(snapshot(("A", "0", 1_000_000, "playing")), cache, now=100.0)
    assert first == ("1 sessions (1 playing), 0.0 Mb/s out, cache 3.0 of 10.0 GiB, "
                     "engine gso")
    # A sent 2.5 MB in 5 s (4 Mb/s); B is new and counts from 0; C closed
    later = line.line(snapshot(("A", "0", 3_500_000, "playing"),
                               ("B", "0", 500_000, "ready")), None, now=105.0)
    assert later == "2 sessions (1 playing), 4.8 Mb/s out, engine gso"
    gone = line.line(snapshot(), {"used_bytes": 0, "quota_bytes": 0}, now=110.0)
    assert gone == "0 sessions (0 playing), 0.0 Mb/s out, cache 0.0 GiB, no quota, engine gso"


def test_watchdog_fails_only_when_playing_streams_get_nothing():
    dog = Watchdog()
    assert dog.healthy(Progress(rounds=10, playing={("A", "0"): 5}))
    assert dog.healthy(Progress(rounds=11, playing={("A", "0"): 5}))     # a round
    assert dog.healthy(Progress(rounds=11, playing={("A", "0"): 6}))     # a packet
    assert not dog.healthy(Progress(rounds=11, playing={("A", "0"): 6}))  # stuck
    assert dog.healthy(Progress(rounds=11, playing={}))                  # nobody plays
    assert dog.healthy(Progress(rounds=11, playing={("B", "0"): 0}))     # new stream
    assert not dog.healthy(Progress(rounds=11, playing={("B", "0"): 0}))


def test_engine_progress_reads_playing_streams():
    snap = snapshot(("A", "0", 13160, "playing"), ("B", "0", 2632, "paused"))
    progress = supervision.engine_progress({"rounds": 7}, snap)
    assert progress == Progress(rounds=7, playing={("A", "0"): 10})


def test_watchdog_interval_is_half_of_what_systemd_asked(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert supervision.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")   # meant for another process
    assert supervision.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert supervision.watchdog_interval() is None


def test_journal_gets_session_fields(monkeypatch):
    sent = []
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert supervision.journal_logging(logging.INFO,
                                           sender=lambda MESSAGE, **f: sent.append((MESSAGE, f)))
        logging.getLogger("appliance.rtsp.sessions").info(
            "session %s: PLAY", "S1", extra=log_fields("S1", "films/a"))
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
    (msg, fields), = sent
    assert msg == "appliance.rtsp.sessions: session S1: PLAY"
    assert (fields["SESSION_ID"], fields["TITLE"], fields["SYSLOG_IDENTIFIER"]) == \
        ("S1", "films/a", "kvod")
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not supervision.journal_logging(logging.INFO)


def test_reload_plan_splits_runtime_from_restart_keys():
    old = Config.from_dict({})
    new = Config.from_dict({"cache": {"max_bytes": "1GiB", "policy": "lfu"},
                            "rtsp": {"listen": "tcp:554", "session_timeout": 30},
                            "log": {"level": "debug"}})
    steps = plan(old, new)
    assert [c.key for c in steps.runtime] == ["rtsp.session_timeout", "cache.max_bytes",
                                              "cache.policy", "log.level"]
    assert [(c.key, c.new) for c in steps.restart] == [("rtsp.listen", "tcp:554")]
    merged = _with(old, new, [c.key for c in steps.runtime])
    # what was applied is now the running config; the listen address waits
    assert merged.cache.max_bytes == 1 << 30 and merged.rtsp.session_timeout == 30
    assert merged.rtsp.listen == old.rtsp.listen
    assert plan(old, old).runtime == () and plan(old, old).restart == ()


def test_every_runtime_key_exists():
    known = {f"{section}.{key}" for section, keys in Config().__dict__.items()
             for key in keys.__dataclass_fields__}
    assert RUNTIME_KEYS <= known
