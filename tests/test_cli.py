"""The kvod CLI as a user runs it: real processes, a real catalog file."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.daemon import KvodDaemon


@pytest.fixture
def kvod(tmp_path):
    return KvodDaemon(str(tmp_path))


def test_add_list_show_rm(kvod, ts_file, tmp_path):
    out = kvod.kvod("catalog", "add", ts_file, "--name", "films/one").stdout
    assert "added films/one" in out
    listed = json.loads(kvod.kvod("catalog", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["films/one"]
    title = listed[0]
    assert title["state"] == "complete"
    assert title["size"] == os.path.getsize(ts_file)
    assert 9.9 < title["duration_s"] < 10.2
    track = title["tracks"][0]
    assert (track["codec"], track["payload_type"], track["clock_rate"]) == ("MP2T", 33, 90000)
    assert os.path.exists(track["hint_path"])
    assert "films/one" in kvod.kvod("catalog", "list").stdout
    shown = kvod.kvod("catalog", "show", "films/one").stdout
    assert "MP2T/90000" in shown and "complete" in shown
    folder = os.path.dirname(track["hint_path"])
    assert kvod.kvod("catalog", "rm", "films/one").returncode == 0
    assert not os.path.exists(folder)
    assert json.loads(kvod.kvod("catalog", "list", "--json").stdout) == []


def test_name_defaults_to_file_stem(kvod, ts_file):
    kvod.kvod("catalog", "add", ts_file)
    stem = os.path.splitext(os.path.basename(ts_file))[0]
    assert kvod.kvod("catalog", "show", stem, "--json").returncode == 0


def test_nested_titles_do_not_share_folders(kvod, ts_file, short_ts_file):
    kvod.kvod("catalog", "add", ts_file, "--name", "a")
    kvod.kvod("catalog", "add", short_ts_file, "--name", "a/b")
    kvod.kvod("catalog", "rm", "a")
    inner = json.loads(kvod.kvod("catalog", "show", "a/b", "--json").stdout)
    assert os.path.exists(inner["media_path"])


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"\x00" * 4000, "not an MPEG-TS"),
    (b"\x47" + os.urandom(187 * 50), "MPEG-TS"),
])
def test_bad_media_is_refused_and_leaves_nothing(kvod, tmp_path, content, message):
    bad = tmp_path / "bad.ts"
    bad.write_bytes(content)
    result = kvod.kvod("catalog", "add", str(bad), "--name", "bad", check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert json.loads(kvod.kvod("catalog", "list", "--json").stdout) == []
    titles = os.path.join(kvod.folder, "cache", "titles")
    assert not os.path.exists(titles) or os.listdir(titles) == []


def test_errors_exit_1_with_a_message(kvod, ts_file):
    kvod.kvod("catalog", "add", ts_file, "--name", "one")
    dup = kvod.kvod("catalog", "add", ts_file, "--name", "one", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    for args in (("catalog", "show", "nope"), ("catalog", "rm", "nope"),
                 ("catalog", "add", "/no/such/file.ts"),
                 ("catalog", "add", ts_file, "--name", "../escape")):
        result = kvod.kvod(*args, check=False)
        assert result.returncode == 1, args
        assert result.stderr.startswith("Error:"), result.stderr


def test_usage_errors_exit_2(kvod):
    assert kvod.kvod("catalog", "frobnicate", check=False).returncode == 2
