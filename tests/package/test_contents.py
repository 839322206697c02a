"""What the built .debs hold, read on the host with dpkg-deb (no container)."""

from __future__ import annotations

import glob
import os
import re
import subprocess

import click
import pytest

from appliance.cli.main import cli
from appliance.config import load_config
from tests.package.nspawn import ROOT

DEB_DIR = os.path.join(ROOT, "build", "deb")


@pytest.fixture(scope="module")
def kvod_tree(tmp_path_factory) -> str:
    debs = glob.glob(os.path.join(DEB_DIR, "kvod_*_amd64.deb"))
    if len(debs) != 1:
        pytest.fail(f"expected one kvod_*_amd64.deb in {DEB_DIR} (make deb), found {debs}")
    tree = str(tmp_path_factory.mktemp("kvod-deb"))
    subprocess.run(["dpkg-deb", "-x", debs[0], tree], check=True, timeout=60)
    return tree


def files_under(tree: str) -> list[str]:
    return sorted("/" + os.path.relpath(os.path.join(d, f), tree)
                  for d, _, names in os.walk(tree) for f in names)


def test_code_is_private_and_the_engine_is_built(kvod_tree):
    files = files_under(kvod_tree)
    assert not [f for f in files if "-packages/" in f], "nothing in a global dist-packages"
    for package in ("appliance", "catalog", "rtpengine"):
        assert f"/usr/lib/kvod/{package}/__init__.py" in files
    for module in ("_kvod_engine", "_kvod_index"):
        assert [f for f in files if re.fullmatch(
            rf"/usr/lib/kvod/rtpengine/(.*/)?{module}\.cpython-.*\.so", f)], module
    assert not [f for f in files if f.endswith((".pyc", ".o")) or "/tests/" in f]


def test_package_names_keep_clear_of_debians_rtpengine():
    names = [os.path.basename(d).split("_")[0] for d in glob.glob(os.path.join(DEB_DIR, "*.deb"))]
    assert sorted(names) == ["krtp-dkms", "kvod"]


def test_the_conffile_lists_every_key_and_parses(kvod_tree):
    path = os.path.join(kvod_tree, "etc", "kvod", "kvod.toml")
    config = load_config(path)
    assert config.rtsp.listen == "tcp:554:interface=0.0.0.0"
    assert config.admin.listen.endswith("interface=127.0.0.1")
    assert config.cache.dir == "/var/lib/kvod/cache"
    assert config.catalog.path == "/var/lib/kvod/catalog.db"
    check = subprocess.run([os.path.join(ROOT, "packaging", "kvod-toml"), "--check", path],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", glob.glob(os.path.join(
        DEB_DIR, "kvod_*_amd64.deb"))[0]], check=True, capture_output=True, timeout=60).stdout
    assert b"/etc/kvod/kvod.toml" in conffiles


def test_the_conffile_check_catches_a_wrong_default(kvod_tree, tmp_path):
    with open(os.path.join(kvod_tree, "etc", "kvod", "kvod.toml")) as f:
        text = f.read()
    wrong = tmp_path / "kvod.toml"
    wrong.write_text(text.replace("#session_timeout = 60.0", "#session_timeout = 6.0"))
    check = subprocess.run([os.path.join(ROOT, "packaging", "kvod-toml"), "--check", str(wrong)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "not the built-in defaults" in check.stderr


def command_paths(group: click.Group, prefix: str) -> list[str]:
    paths = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        paths.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            paths += command_paths(command, f"{prefix} {name}")
    return paths


def test_the_man_page_covers_every_command_and_renders_cleanly(kvod_tree):
    page = os.path.join(kvod_tree, "usr", "share", "man", "man1", "kvod.1.gz")
    render = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "MANWIDTH": "200"})
    assert render.returncode == 0 and render.stderr == "", render.stderr
    text = re.sub(r".\x08", "", render.stdout)
    for path in command_paths(cli, "kvod"):
        assert re.search(rf"^\s+{re.escape(path)}$", text, re.M), f"{path} missing"


def test_krtp_dkms_holds_the_source_the_module_loader_and_the_device_rule(tmp_path):
    debs = glob.glob(os.path.join(DEB_DIR, "krtp-dkms_*_all.deb"))
    assert len(debs) == 1, debs
    version = subprocess.run(["dpkg-deb", "-f", debs[0], "Version"], check=True,
                             capture_output=True, text=True, timeout=30).stdout.strip()
    subprocess.run(["dpkg-deb", "-x", debs[0], str(tmp_path)], check=True, timeout=60)
    src = tmp_path / "usr" / "src" / f"krtp-{version}"
    conf = (src / "dkms.conf").read_text()
    assert f'PACKAGE_VERSION="{version}"' in conf and 'PACKAGE_NAME="krtp"' in conf
    for name in ("Kbuild", "Makefile", "krtp_main.c", "uapi/krtp.h"):
        assert (src / name).is_file(), name
    assert (tmp_path / "usr/lib/modules-load.d/krtp.conf").read_text().split("\n")[-2] == "krtp"
    rules = [line for line in (tmp_path / "lib/udev/rules.d/60-krtp-dkms.rules").read_text()
             .splitlines() if line and not line.startswith("#")]
    assert rules == ['KERNEL=="krtp", SUBSYSTEM=="misc", OWNER="root", GROUP="kvod", '
                     'MODE="0660"']
    depends = subprocess.run(["dpkg-deb", "-f", debs[0], "Depends", "Architecture"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
    assert "dkms" in depends and "Architecture: all" in depends
