"""The TOML configuration: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import (
    Config,
    ConfigError,
    dump_config,
    dump_defaults,
    load_config,
    parse_byte_size,
)


def _write(tmp_path, text: str, name: str = "kvod.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    config = load_config(None)
    assert config == Config() == Config.from_dict({})
    assert config.rtsp.listen == "tcp:8554:interface=0.0.0.0"
    assert config.rtsp.session_timeout == 60
    assert (config.rtsp.rtp_port_min, config.rtsp.rtp_port_max) == (20000, 29999)
    assert (config.rtsp.max_sessions, config.rtsp.max_connections) == (1000, 1000)
    assert config.rtsp.server_name == "kvod"
    assert (config.rtsp.server_ports, config.rtsp.shared_rtp_port) == ("per-session", 0)
    assert config.rtsp.shared_pair == (20000, 20001)
    assert config.rtcp.sr_interval == 5.0
    assert (config.cache.dir, config.cache.max_bytes) == ("/var/lib/kvod/cache", 0)
    assert config.catalog.path == "/var/lib/kvod/catalog.db"
    assert (config.engine.threads, config.engine.strategy) == (0, "auto")
    assert config.log.level == "info"
    assert config.admin.listen == "tcp:8555:interface=127.0.0.1"
    assert (config.cache.policy, config.cache.keep_prefix_seconds,
            config.cache.stall_timeout) == ("lru", 10.0, 20.0)
    assert config.origin.base_url == ()
    assert (config.origin.chunk_bytes, config.origin.probe_bytes,
            config.origin.tail_bytes) == (2**20, 256 * 2**10, 64 * 2**10)
    assert (config.origin.max_fills, config.origin.requests_per_fill,
            config.origin.retries) == (4, 2, 6)


def test_origin_urls_one_or_a_list():
    one = Config.from_dict({"origin": {"base_url": "http://127.0.0.1:8080/media"}})
    assert one.origin.base_url == ("http://127.0.0.1:8080/media/",)
    many = Config.from_dict({"origin": {"base_url": ["https://a/x/", "file:///srv/media"]}})
    assert many.origin.base_url == ("https://a/x/", "file:///srv/media/")


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == Config()


def test_overrides_from_a_file(tmp_path):
    path = _write(tmp_path, """
        [rtsp]
        listen = "systemd:domain=INET:index=0"
        session_timeout = 30
        rtp_port_min = 40000
        rtp_port_max = 40100
        [rtcp]
        sr_interval = 0.5
        [cache]
        dir = "/srv/cache"
        max_bytes = "50GiB"
        [engine]
        strategy = "gso"
        threads = 4
        [log]
        level = "debug"
    """)
    config = load_config(str(path))
    assert config.rtsp.listen == "systemd:domain=INET:index=0"
    assert config.rtsp.session_timeout == 30.0
    assert isinstance(config.rtsp.session_timeout, float)
    assert (config.rtsp.rtp_port_min, config.rtsp.rtp_port_max) == (40000, 40100)
    assert config.rtcp.sr_interval == 0.5
    assert (config.cache.dir, config.cache.max_bytes) == ("/srv/cache", 50 * 2**30)
    assert (config.engine.strategy, config.engine.threads) == ("gso", 4)
    assert config.log.level == "debug"
    # untouched keys and sections keep their defaults
    assert config.rtsp.server_name == "kvod"
    assert config.admin == Config().admin


def test_shared_server_ports(tmp_path):
    path = _write(tmp_path, '[rtsp]\nserver_ports = "shared"\n'
                              'rtp_port_min = 40000\nrtp_port_max = 40100\n')
    config = load_config(path)
    assert config.rtsp.server_ports == "shared"
    assert config.rtsp.shared_pair == (40000, 40001)  # 0: the bottom of the range
    config = Config.from_dict({"rtsp": {"server_ports": "shared", "shared_rtp_port": 5004}})
    assert config.rtsp.shared_pair == (5004, 5005)
    assert Config.from_dict(tomllib.loads(dump_config(config))) == config
    assert '\nserver_ports = "per-session"\n' in dump_defaults()


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "etc").mkdir()
    path = _write(tmp_path / "etc", '[cache]\ndir = "cache"\n[catalog]\npath = "../data/c.db"\n')
    config = load_config(path)
    assert config.cache.dir == str(tmp_path / "etc" / "cache")
    assert config.catalog.path == str(tmp_path / "data" / "c.db")
    # from_dict keeps them as given unless told where they are relative to
    assert Config.from_dict({"cache": {"dir": "cache"}}).cache.dir == "cache"
    assert Config.from_dict({"cache": {"dir": "c"}}, base_dir="/x").cache.dir == "/x/c"


@pytest.mark.parametrize("data, message", [
    ({"rtsp": {"session_timeout": "abc"}},
     "rtsp.session_timeout: expected a positive number, got 'abc'"),
    ({"rtsp": {"session_timeout": 0}}, "rtsp.session_timeout: expected a positive number"),
    ({"rtsp": {"session_timeout": True}}, "rtsp.session_timeout: expected a positive number"),
    ({"rtcp": {"sr_interval": -1.0}}, "rtcp.sr_interval: expected a positive number, got -1.0"),
    ({"rtsp": {"rtp_port_min": 20001}}, "rtsp.rtp_port_min: expected an even port"),
    ({"rtsp": {"rtp_port_min": 80}}, "rtsp.rtp_port_min: expected a port number from 1024"),
    ({"rtsp": {"rtp_port_max": 70000}}, "rtsp.rtp_port_max: expected a port number"),
    ({"rtsp": {"rtp_port_min": 30000, "rtp_port_max": 30000}},
     r"rtsp.rtp_port_max: expected a port above rtsp.rtp_port_min \(30000\)"),
    ({"rtsp": {"server_ports": "one"}},
     "rtsp.server_ports: expected one of 'per-session', 'shared', got 'one'"),
    ({"rtsp": {"server_ports": True}}, "rtsp.server_ports: expected one of"),
    ({"rtsp": {"shared_rtp_port": 30001}},
     "rtsp.shared_rtp_port: expected an even port .*, got 30001"),
    ({"rtsp": {"shared_rtp_port": 80}},
     "rtsp.shared_rtp_port: expected 0 or a port number from 1024 to 65534, got 80"),
    ({"rtsp": {"shared_rtp_port": 65535}}, "rtsp.shared_rtp_port: expected 0 or a port"),
    ({"rtsp": {"shared_rtp_port": "20000"}}, "rtsp.shared_rtp_port: expected 0 or a port"),
    ({"rtsp": {"max_sessions": 0}}, "rtsp.max_sessions: expected a positive integer, got 0"),
    ({"rtsp": {"max_connections": 2.5}}, "rtsp.max_connections: expected a positive integer"),
    ({"rtsp": {"server_name": "kvod\r\nX-Evil: 1"}}, "rtsp.server_name: expected a non-empty"),
    ({"rtsp": {"listen": 8554}}, "rtsp.listen: expected a Twisted endpoint string"),
    ({"admin": {"listen": "no endpoint"}}, "admin.listen: expected a Twisted endpoint"),
    ({"cache": {"max_bytes": "lots"}}, "cache.max_bytes: expected a byte count"),
    ({"cache": {"max_bytes": -1}}, "cache.max_bytes: expected a byte count"),
    ({"cache": {"dir": ""}}, "cache.dir: expected a non-empty path"),
    ({"catalog": {"path": 3}}, "catalog.path: expected a non-empty path, got 3"),
    ({"engine": {"threads": -1}}, "engine.threads: expected an integer from 0 to 4096"),
    ({"engine": {"burst_ms": -1}}, "engine.burst_ms: expected milliseconds from 0 to 1000"),
    ({"engine": {"burst_ms": float("nan")}}, "engine.burst_ms: expected milliseconds"),
    ({"engine": {"lookahead_ms": 0}}, "engine.lookahead_ms: expected milliseconds from 0.001"),
    ({"engine": {"strategy": "carrier-pigeon"}},
     "engine.strategy: expected one of 'auto', 'gso', 'sendmmsg', 'read_send_rtp'"),
    ({"log": {"level": "loud"}}, "log.level: expected one of 'debug', 'info'"),
    ({"origin": {"base_url": "ftp://x/"}}, "origin.base_url: expected an origin URL"),
    ({"origin": {"base_url": ["http://a/", 5]}}, "origin.base_url: expected an origin URL"),
    ({"origin": {"base_url": "file://relative/path"}}, "origin.base_url: expected an origin"),
    ({"origin": {"base_url": "http://a/b c/"}}, "origin.base_url: expected an origin URL"),
    ({"origin": {"chunk_bytes": 100}}, "origin.chunk_bytes: expected a byte count of at least"),
    ({"origin": {"retry_delay": 5, "retry_max_delay": 1}},
     r"origin.retry_max_delay: expected at least origin.retry_delay \(5.0\)"),
    ({"origin": {"max_fills": 0}}, "origin.max_fills: expected an integer from 1"),
    ({"cache": {"policy": "random"}}, "cache.policy: expected one of 'lru', 'lfu', 'gdsf'"),
    ({"cache": {"keep_prefix_seconds": -1}}, "cache.keep_prefix_seconds: expected a number"),
])
def test_invalid_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match="^" + message) as info:
        Config.from_dict(data)
    assert info.value.key == message.split(":")[0]


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown key 'rtsp.prot'$") as info:
        Config.from_dict({"rtsp": {"prot": 1}})
    assert info.value.key == "rtsp.prot"
    path = _write(tmp_path, "[rtsp]\nsession_timout = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'rtsp.session_timout' "
                                          r"\(did you mean 'rtsp.session_timeout'\?\)"):
        load_config(path)


def test_unknown_section_and_stray_top_level_key():
    with pytest.raises(ConfigError, match=r"^unknown section 'rtps' \(did you mean 'rtsp'\?\)"):
        Config.from_dict({"rtps": {}})
    with pytest.raises(ConfigError, match="^unknown key 'listen'"):
        Config.from_dict({"listen": "tcp:1"})
    with pytest.raises(ConfigError, match=r"^rtsp: expected a table \[rtsp\], got 5"):
        Config.from_dict({"rtsp": 5})
    with pytest.raises(ConfigError, match="^unknown key 'rtsp.sub'"):
        Config.from_dict(tomllib.loads("[rtsp.sub]\nx = 1\n"))


def test_sections_cannot_be_built_invalid():
    with pytest.raises(ConfigError, match="rtcp.sr_interval"):
        type(Config().rtcp)(sr_interval=0)
    with pytest.raises(ConfigError, match="log.level"):
        dataclasses.replace(Config().log, level="verbose")


def test_a_file_that_is_not_toml_names_the_line(tmp_path):
    path = _write(tmp_path, '[rtsp]\nlisten = "tcp:1"\nsession_timeout = = 5\n')
    with pytest.raises(ConfigError, match=r"kvod.toml is not valid TOML: .*line 3"):
        load_config(path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[rtsp]")
    with pytest.raises(ConfigError, match="bin.toml is not valid TOML"):
        load_config(binary)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("text, size", [
    (0, 0), (12345, 12345), (5e10, 50_000_000_000),
    ("0", 0), ("1000", 1000), ("10B", 10), ("500MB", 500_000_000), ("500mb", 500_000_000),
    ("50GiB", 50 * 2**30), ("1.5 TiB", 3 * 2**39), ("2kB", 2000), ("3KiB", 3072),
    (" 7 GB ", 7_000_000_000), ("1.5KB", 1500),
])
def test_byte_sizes(text, size):
    assert parse_byte_size(text) == size
    assert Config.from_dict({"cache": {"max_bytes": text}}).cache.max_bytes == size


@pytest.mark.parametrize("text", [
    "", "GiB", "5G", "5 gigs", "-5", "1e9", "0.5B", "1.0001KiB", True, 1.5, [1], "5GiB5",
])
def test_bad_byte_sizes(text):
    with pytest.raises(ValueError, match="expected"):
        parse_byte_size(text)


def test_dump_defaults_loads_back_as_the_defaults(tmp_path):
    text = dump_defaults()
    assert "# " in text  # documented, not bare
    for section in ("rtsp", "rtcp", "cache", "origin", "catalog", "engine", "log", "admin"):
        assert f"\n[{section}]\n" in text
    assert load_config(_write(tmp_path, text)) == Config()


_names = st.text(
    alphabet=st.characters(min_codepoint=32, blacklist_categories=("Cs",)), min_size=1,
).filter(lambda s: "\x7f" not in s)


@given(
    name=_names,
    timeout=st.floats(min_value=1e-6, max_value=1e9, allow_nan=False),
    size=st.integers(0, 2**62),
    path=st.text().map(lambda s: "/" + s.replace("\x00", ""))
    | st.just("/a path/with \"quotes\" and \\ and \x7f"),
)
def test_dump_config_round_trips_any_valid_config(name, timeout, size, path):
    config = Config.from_dict({
        "rtsp": {"server_name": name, "session_timeout": timeout},
        "cache": {"max_bytes": size, "dir": path},
        "origin": {"base_url": ["http://a/", "file:///b/"]},
    })
    assert Config.from_dict(tomllib.loads(dump_config(config))) == config


def test_engine_strategies_are_the_engines():
    from appliance.config import ENGINE_STRATEGIES
    from rtpengine.engine import STRATEGIES
    assert tuple(STRATEGIES) == ENGINE_STRATEGIES


def test_engine_pacing_key(tmp_path):
    """[engine] pacing: auto by default, the engine's names, a clear error."""
    from rtpengine.engine import PACINGS
    assert Config().engine.pacing == "auto"
    config = load_config(str(_write(tmp_path, '[engine]\npacing = "kernel"\n')))
    assert config.engine.pacing == "kernel" and config.engine.strategy == "auto"
    for name in PACINGS:
        assert Config.from_dict({"engine": {"pacing": name}}).engine.pacing == name
    with pytest.raises(ConfigError, match="engine.pacing: expected one of 'auto', 'engine', "
                                          "'kernel'"):
        Config.from_dict({"engine": {"pacing": "fq"}})
