"""The .debs in a booted Debian 12: install, serve, restart, upgrade, purge.

Real dpkg and apt, real systemd (PID 1 of a systemd-nspawn container with
a private network), the real kvod service, a real RTSP client. The tests
run in order on one container, as an operator would: install, start,
add a title and play it, kill the daemon, upgrade, remove, purge.
Figures go to build/package-figures.json (make test-package prints them).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.helpers.titles import make_ts
from tests.package.nspawn import ROOT, Container, base_image, package_depends

DEB_DIR = os.path.join(ROOT, "build", "deb")
FIGURES = os.path.join(ROOT, "build", "package-figures.json")
DEB_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Paths that apt, dpkg and systemd rewrite whatever is installed (logs,
# apt's lists and caches, dpkg's backups): not files a package leaves.
VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache/apt",
            "/var/cache/debconf", "/var/lib/apt", "/root/debs")
VOLATILE_FILES = re.compile(r"^/var/lib/dpkg/[a-z-]+-old$|^/etc/(passwd|group|shadow|gshadow)-$"
                            r"|^/var/lib/systemd/(random-seed|timers/.*|catalog/database)$")
RTSP_OPTIONS = (b"OPTIONS rtsp://127.0.0.1:554/ RTSP/1.0\r\nCSeq: 1\r\n\r\n")

figures: dict[str, object] = {}


def debs_in(folder: str) -> list[str]:
    found = sorted(glob.glob(os.path.join(folder, "kvod_*.deb"))
                   + glob.glob(os.path.join(folder, "krtp-dkms_*.deb")))
    if len(found) != 2:
        pytest.fail(f"expected kvod_*.deb and krtp-dkms_*.deb in {folder} (make deb), "
                    f"found {found}")
    return found


def version_of(deb: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def debs() -> list[str]:
    found = debs_in(DEB_DIR)
    figures["package_bytes"] = {os.path.basename(d): os.path.getsize(d) for d in found}
    return found


@pytest.fixture(scope="module")
def upgrade_debs(debs, tmp_path_factory) -> list[str]:
    """The same source with a higher version: a copy of the tree whose
    changelog gets a new entry, built with dpkg-buildpackage."""
    work = tmp_path_factory.mktemp("upgrade")
    version = version_of(debs[0]) + "+upgradetest1"
    src = work / f"kvod-{version}"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", ".git", "*.so", "*.o", "__pycache__", ".pytest_cache", ".hypothesis"))
    changelog = src / "debian" / "changelog"
    old = changelog.read_text()
    entry = (f"kvod ({version}) bookworm; urgency=medium\n\n"
             "  * Upgrade test build.\n\n"
             " -- kvod developer <dev@kvod.invalid>  Mon, 07 Dec 2026 12:00:00 +0000\n\n")
    changelog.write_text(entry + old)
    proc = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                          env={**os.environ, "PATH": DEB_PATH, "DEB_BUILD_OPTIONS": "noautodbgsym"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    built = debs_in(str(work))
    assert all(version_of(d) == version for d in built)
    return built


@pytest.fixture(scope="module")
def container(debs):
    base = base_image(package_depends(debs))
    with Container(base) as c:
        yield c
        # what the daemon said, kept for a failing run's reader
        log = c.sh("journalctl -u kvod --no-pager -o short-monotonic | tail -n 200",
                   check=False).stdout
        with open(os.path.join(ROOT, "build", "package-kvod-journal.txt"), "w") as f:
            f.write(log)


@pytest.fixture(scope="module", autouse=True)
def write_figures():
    yield
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "w") as f:
        json.dump(figures, f, indent=2, sort_keys=True)
        f.write("\n")


def file_list(c: Container) -> set[str]:
    prune = " -o ".join(f"-path {p}" for p in VOLATILE)
    out = c.sh(f"find / -xdev \\( {prune} \\) -prune -o -print", timeout=120).stdout
    return {line for line in out.splitlines() if line and not VOLATILE_FILES.match(line)}


def accounts(c: Container) -> str:
    return c.sh("getent passwd; getent group").stdout


def unit_files(c: Container) -> str:
    return c.sh("systemctl list-unit-files --no-legend --no-pager | sort").stdout


def main_pid(c: Container) -> int:
    return int(c.sh("systemctl show -p MainPID --value kvod").stdout.strip())


def rtsp_probe(request: bytes = RTSP_OPTIONS) -> str:
    """A python3 one-liner (for inside) that sends ``request`` to port 554
    and prints the answer's first line."""
    return ("python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', 554), "
            f"timeout=5); s.sendall({request!r}); "
            "print(s.recv(4096).decode().splitlines()[0])\"")


def wait_for(c: Container, script: str, timeout: float) -> str:
    """Run ``script`` inside until it succeeds; its output. Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        proc = c.sh(script, check=False, timeout=30)
        if proc.returncode == 0:
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{script!r} still failing after {timeout} s: {proc.stdout}\n"
                                 + c.sh("systemctl status kvod --no-pager; journalctl -u kvod "
                                        "--no-pager | tail -n 40", check=False).stdout)
        time.sleep(0.2)


state: dict[str, object] = {}


def test_install_gives_an_active_hardened_service(container, debs):
    c = container
    state["files_before"] = file_list(c)
    state["accounts_before"] = accounts(c)
    state["units_before"] = unit_files(c)
    for deb in debs:
        c.copy_in(deb, f"/root/debs/{os.path.basename(deb)}")
    names = " ".join(f"/root/debs/{os.path.basename(d)}" for d in debs)
    started = time.monotonic()
    install = c.sh(f"apt-get install -y -q --no-install-recommends {names}", timeout=300)
    wait_for(c, "systemctl is-active kvod", timeout=30)
    figures["apt_install_to_active_s"] = round(time.monotonic() - started, 2)
    state["install_log"] = install.stdout
    assert c.sh("systemctl is-enabled kvod").stdout.strip() == "enabled"
    user = c.sh("stat -c %U /proc/$(systemctl show -p MainPID --value kvod)").stdout.strip()
    assert user == "kvod"
    assert c.sh("stat -c '%U:%G %a' /var/lib/kvod /var/lib/kvod/cache").stdout.split("\n")[:2] \
        == ["kvod:kvod 2770", "kvod:kvod 2770"]
    # only the bind capability, effective through the ambient set
    caps = c.sh("grep -E '^Cap(Eff|Bnd|Amb)' /proc/$(systemctl show -p MainPID --value kvod)"
                "/status").stdout
    assert re.findall(r"Cap(\w+):\s+(\w+)", caps) == [
        ("Eff", "0000000000000400"), ("Bnd", "0000000000000400"), ("Amb", "0000000000000400")]
    # the unit as installed: no complaint (minbase has no man-db, so the
    # Documentation= check is left out), and its exposure within the goal
    verify = c.sh("systemd-analyze verify --man=no kvod.service 2>&1", check=False)
    assert verify.returncode == 0 and verify.stdout.strip() == "", verify.stdout
    security = c.sh("systemd-analyze security kvod.service --no-pager 2>&1", check=False).stdout
    exposure = float(re.search(r"Overall exposure level for kvod.service: ([0-9.]+)",
                               security)[1])
    figures["systemd_analyze_security_exposure"] = exposure
    assert exposure <= 2.0, security
    # krtp-dkms: the source is registered with DKMS; no headers here, so the
    # package says which ones to install
    assert "krtp/" in c.sh("dkms status").stdout
    assert re.search(r"linux-headers", install.stdout), install.stdout[-3000:]


def test_rtsp_answers_as_soon_as_start_returns(container):
    c = container
    started = time.monotonic()
    c.sh("systemctl stop kvod", timeout=30)
    figures["systemctl_stop_s"] = round(time.monotonic() - started, 2)
    assert figures["systemctl_stop_s"] < 10
    started = time.monotonic()
    out = c.sh("systemctl start kvod && " + rtsp_probe(), timeout=60).stdout
    figures["systemctl_start_to_ready_s"] = round(time.monotonic() - started, 2)
    assert out.strip().splitlines()[-1].startswith("RTSP/1.0 200"), out
    # READY came from the daemon (Type=notify), not from a timeout
    assert c.sh("systemctl show -p Type --value kvod").stdout.strip() == "notify"


def test_a_title_added_as_root_plays_in_a_real_client(container, tmp_path):
    c = container
    title = make_ts(seconds=4, size="320x240", video_bitrate="500k")
    c.copy_in(title, "/srv/media/first.ts")
    c.sh("kvod catalog add /srv/media/first.ts --name first", timeout=120)
    listed = json.loads(c.sh("kvod catalog list --json").stdout)
    assert [t["name"] for t in listed] == ["first"], listed
    figures["files_made_by_catalog_add"] = c.sh(
        "find /var/lib/kvod -printf '%u:%g %m %p\\n' | sort").stdout.splitlines()
    # GStreamer from the host, in the container's network namespace: the
    # RTP comes to the container's own loopback and nowhere else
    out = tmp_path / "first.ts"
    proc = subprocess.run(c.in_network(
        ["gst-launch-1.0", "-q", "rtspsrc", "location=rtsp://127.0.0.1:554/first",
         "protocols=udp", "!", "rtpmp2tdepay", "!", "filesink", f"location={out}"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    got = sha256(str(out)) if out.exists() else None
    assert got == sha256(title), (
        f"received {out.stat().st_size if out.exists() else 0} of {os.path.getsize(title)} "
        f"bytes; gst-launch exited {proc.returncode}: {proc.stdout[-2000:]!r}\n"
        + c.sh("journalctl -u kvod --no-pager | tail -n 30", check=False).stdout)
    # the CLI reaches the running service through its admin endpoint
    status = json.loads(c.sh("kvod status --json").stdout)
    assert status["pid"] == main_pid(c)
    assert status["totals"]["sessions"] >= 0


def test_kill_9_gets_the_daemon_restarted(container):
    c = container
    old = main_pid(c)
    assert old > 0
    c.sh(f"kill -9 {old}")
    started = time.monotonic()
    wait_for(c, f"test \"$(systemctl show -p MainPID --value kvod)\" -ne {old} && "
                f"test \"$(systemctl show -p MainPID --value kvod)\" -ne 0 && "
                "systemctl is-active kvod", timeout=30)
    figures["kill_9_to_active_again_s"] = round(time.monotonic() - started, 2)
    assert c.sh("systemctl show -p NRestarts --value kvod").stdout.strip() == "1"
    assert c.sh(rtsp_probe()).stdout.startswith("RTSP/1.0 200")


def test_kill_9_mid_fill_restarts_and_the_fill_resumes(container):
    c = container
    title = make_ts(seconds=8, size="320x240", video_bitrate="500k")
    size = os.path.getsize(title)
    origin = subprocess.Popen(c.in_network(["/usr/bin/python3", "-m",
                                            "tests.package.slow_origin", title,
                                            str(size // 6)]),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    c.sh("cp /etc/kvod/kvod.toml /root/kvod.toml.saved")
    try:
        base = origin.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:"), base
        c.sh(f"sed -i 's|^#base_url = \\[\\]$|base_url = [\"{base}\"]|' /etc/kvod/kvod.toml && "
             f"grep -q '^base_url = \\[\"{base}\"\\]$' /etc/kvod/kvod.toml && "
             "systemctl reload kvod", timeout=30)
        # the CLI asks the service to prefetch, then leaves: the fill goes on
        c.sh("timeout 1 kvod cache prefetch slow.ts", check=False, timeout=30)

        def cached() -> tuple[str, int]:
            status = json.loads(c.sh("kvod cache status --json").stdout)
            t = {x["name"]: x for x in status["titles"]}.get("slow.ts", {})
            return t.get("state", ""), t.get("cached_bytes", 0)
        deadline = time.monotonic() + 20
        while not 0 < cached()[1] < size and time.monotonic() < deadline:
            time.sleep(0.2)
        state, held = cached()
        assert state == "partial" and 0 < held < size, (state, held)
        old = main_pid(c)
        c.sh(f"kill -9 {old}")
        wait_for(c, f"test \"$(systemctl show -p MainPID --value kvod)\" -ne {old} && "
                    "systemctl is-active kvod", timeout=30)
        # the restarted service resumes the partial fill and completes it
        deadline = time.monotonic() + 40
        while cached()[0] != "complete" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cached() == ("complete", size), cached()
        got = c.sh("sha256sum /var/lib/kvod/cache/titles/slow.ts/media.ts").stdout.split()[0]
        assert got == sha256(title)
    finally:
        origin.kill()
        origin.wait()
        c.sh("mv /root/kvod.toml.saved /etc/kvod/kvod.toml && systemctl reload kvod",
             timeout=60)


def test_the_sandbox_leaves_the_engine_its_kernel_features(container):
    # SystemCallFilter=@system-service (with @aio: io_uring) and
    # RestrictAddressFamilies must not cost the engine a send path: it
    # probes the same features as on the host, and runs uring_gso when asked.
    c = container
    c.sh("cp /etc/kvod/kvod.toml /root/kvod.toml.saved && "
         "sed -i 's/^#strategy = \"auto\"$/strategy = \"uring_gso\"/' /etc/kvod/kvod.toml && "
         "grep -q '^strategy = \"uring_gso\"$' /etc/kvod/kvod.toml")
    try:
        c.sh("systemctl restart kvod", timeout=60)
        engine = json.loads(c.sh("kvod status --json").stdout)["engine"]
        assert engine["features"] == {"io_uring": True, "txtime": True, "udp_segment": True,
                                      "zerocopy": True}, engine
        assert (engine["requested_strategy"], engine["strategy"], engine["fallback"]) == (
            "uring_gso", "uring_gso", None), engine
    finally:
        c.sh("cp /root/kvod.toml.saved /etc/kvod/kvod.toml && rm /root/kvod.toml.saved && "
             "systemctl restart kvod", timeout=60)


@contextlib.contextmanager
def drop_in(c: Container, name: str, text: str):
    """kvod.service with ``[Service] text`` added (in /run), then as it was
    and running again, whatever the test did."""
    c.sh(f"mkdir -p /run/systemd/system/kvod.service.d && printf '[Service]\\n{text}\\n' "
         f"> /run/systemd/system/kvod.service.d/{name}.conf && systemctl daemon-reload")
    try:
        yield
    finally:
        c.sh(f"rm -f /run/systemd/system/kvod.service.d/{name}.conf && systemctl daemon-reload "
             "&& systemctl reset-failed kvod; systemctl restart kvod", timeout=60)
        wait_for(c, "systemctl is-active kvod", timeout=30)


def test_reload_applies_the_quota_while_a_viewer_plays_on(container, tmp_path):
    c = container
    title = make_ts(seconds=8, size="320x240", video_bitrate="500k")
    c.copy_in(title, "/srv/media/second.ts")
    c.sh("kvod catalog add /srv/media/second.ts --name second", timeout=120)
    out = tmp_path / "second.ts"
    gst = subprocess.Popen(c.in_network(
        ["gst-launch-1.0", "-q", "rtspsrc", "location=rtsp://127.0.0.1:554/second",
         "protocols=udp", "!", "rtpmp2tdepay", "!", "filesink", f"location={out}"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    c.sh("cp /etc/kvod/kvod.toml /root/kvod.toml.saved")
    try:
        time.sleep(2)
        pid = main_pid(c)
        c.sh("sed -i 's/^#max_bytes = 0$/max_bytes = \"3GiB\"/' /etc/kvod/kvod.toml && "
             "grep -q '^max_bytes = \"3GiB\"$' /etc/kvod/kvod.toml")
        c.sh("systemctl reload kvod", timeout=30)
        assert c.sh("systemctl is-active kvod", check=False).stdout.strip() == "active"
        assert main_pid(c) == pid
        assert json.loads(c.sh("kvod cache status --json").stdout)["quota_bytes"] == 3 << 30
        # a bad config is refused, the key named, and the daemon stays
        c.sh("sed -i 's/^max_bytes = \"3GiB\"$/max_bytes = \"lots\"/' /etc/kvod/kvod.toml")
        c.sh("systemctl reload kvod", timeout=30)
        assert main_pid(c) == pid
        output, _ = gst.communicate(timeout=60)
    finally:
        if gst.poll() is None:
            gst.kill()
        c.sh("mv /root/kvod.toml.saved /etc/kvod/kvod.toml && systemctl reload kvod",
             timeout=60)
    journal = c.sh("journalctl -u kvod --no-pager", check=False).stdout
    assert "reload refused, the running config stays: cache.max_bytes" in journal, journal
    # the viewer got every byte: the stream went on through both reloads
    assert out.exists() and sha256(str(out)) == sha256(title), output[-2000:]


def test_stop_sends_every_viewer_bye_within_seconds(container):
    c = container
    viewer = subprocess.Popen(c.in_network(["/usr/bin/python3", "-m", "tests.package.viewer",
                                            "second", "15"]),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        assert viewer.stdout.readline().strip() == "playing"
        started = time.monotonic()
        c.sh("systemctl stop kvod", timeout=30)
        stopped = time.monotonic() - started
        out, _ = viewer.communicate(timeout=20)
    finally:
        if viewer.poll() is None:
            viewer.kill()
        c.sh("systemctl start kvod", timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bye"], result
    assert stopped < 5, stopped
    figures["systemctl_stop_with_a_viewer_s"] = round(stopped, 2)


def test_the_status_line_shows_live_figures(container):
    c = container
    wait_for(c, "systemctl show -p StatusText --value kvod | grep -q 'Mb/s out'", timeout=15)
    text = c.sh("systemctl show -p StatusText --value kvod").stdout.strip()
    assert re.fullmatch(r"\d+ sessions \(\d+ playing\), [0-9.]+ Mb/s out, cache .* GiB.*, "
                        r"engine \w+", text), text
    figures["status_line"] = text


def test_the_daemon_keeps_its_watchdog_fed_and_a_stopped_one_is_restarted(container):
    c = container
    assert c.sh("systemctl show -p WatchdogUSec --value kvod").stdout.strip() == "30s"
    with drop_in(c, "watchdog", "WatchdogSec=2s\\nTimeoutAbortSec=2s"):
        c.sh("systemctl restart kvod", timeout=60)
        pid = main_pid(c)
        time.sleep(5)  # two and a half intervals
        assert c.sh("systemctl show -p Result --value kvod").stdout.strip() != "watchdog"
        assert main_pid(c) == pid
        # a daemon that stops answering (here: stopped outright) is restarted
        restarts = int(c.sh("systemctl show -p NRestarts --value kvod").stdout)
        c.sh(f"kill -STOP {pid}")
        started = time.monotonic()
        wait_for(c, f"test \"$(systemctl show -p MainPID --value kvod)\" -ne {pid} && "
                    f"test \"$(systemctl show -p MainPID --value kvod)\" -ne 0 && "
                    "systemctl is-active kvod", timeout=30)
        figures["kill_stop_to_restarted_s"] = round(time.monotonic() - started, 2)
        assert int(c.sh("systemctl show -p NRestarts --value kvod").stdout) == restarts + 1
        journal = c.sh("journalctl -u kvod --no-pager", check=False).stdout
        assert "Watchdog timeout" in journal, journal[-2000:]


def test_upgrade_keeps_catalog_cache_and_edited_config(container, debs, upgrade_debs):
    c = container
    c.sh("sed -i 's/^#session_timeout = 60.0$/session_timeout = 45.0/' /etc/kvod/kvod.toml")
    assert "\nsession_timeout = 45.0\n" in c.sh("cat /etc/kvod/kvod.toml").stdout
    cache_before = c.sh("cd /var/lib/kvod/cache && find . -type f -exec sha256sum {} + "
                        "| sort").stdout
    catalog_before = c.sh("kvod catalog list --json").stdout
    old_pid = main_pid(c)
    for deb in upgrade_debs:
        c.copy_in(deb, f"/root/debs/up/{os.path.basename(deb)}")
    names = " ".join(f"/root/debs/up/{os.path.basename(d)}" for d in upgrade_debs)
    c.sh(f"apt-get install -y -q --no-install-recommends {names}", timeout=300)
    version = version_of(upgrade_debs[0])
    assert c.sh("dpkg-query -W -f '${Version}' kvod krtp-dkms").stdout == version * 2
    wait_for(c, "systemctl is-active kvod", timeout=30)
    assert main_pid(c) != old_pid, "the service was not restarted on upgrade"
    assert "\nsession_timeout = 45.0\n" in c.sh("cat /etc/kvod/kvod.toml").stdout
    assert c.sh("cd /var/lib/kvod/cache && find . -type f -exec sha256sum {} + "
                "| sort").stdout == cache_before
    assert json.loads(c.sh("kvod catalog list --json").stdout) == json.loads(catalog_before)
    describe = (b"DESCRIBE rtsp://127.0.0.1:554/first RTSP/1.0\r\nCSeq: 2\r\n"
                b"Accept: application/sdp\r\n\r\n")
    assert c.sh(rtsp_probe(describe)).stdout.startswith("RTSP/1.0 200")
    assert "krtp/" in c.sh("dkms status").stdout


def test_the_service_can_evict_what_root_added(container):
    c = container
    # added by root (and one filled by the service); the service, as user
    # kvod, removes their files
    for name in [t["name"] for t in json.loads(c.sh("kvod catalog list --json").stdout)]:
        evict = c.sh(f"kvod cache evict {name}", check=False, timeout=60)
        assert evict.returncode == 0, evict.stdout
    assert c.sh("find /var/lib/kvod/cache -type f").stdout.strip() == "", evict.stdout


def test_remove_keeps_data_config_and_user(container):
    c = container
    c.sh("apt-get remove -y -q kvod krtp-dkms", timeout=300)
    assert c.sh("systemctl is-active kvod", check=False).stdout.strip() in ("inactive", "unknown")
    assert c.sh("test -e /lib/systemd/system/kvod.service", check=False).returncode == 1
    assert "\nsession_timeout = 45.0\n" in c.sh("cat /etc/kvod/kvod.toml").stdout
    assert c.sh("test -s /var/lib/kvod/catalog.db", check=False).returncode == 0
    assert c.sh("getent passwd kvod", check=False).returncode == 0
    # kvod keeps its conffile (state rc); krtp-dkms has none, so it is gone
    assert c.sh("dpkg-query -W -f '${db:Status-Abbrev}' kvod").stdout.strip() == "rc"
    assert c.sh("dpkg-query -W -f '${db:Status-Abbrev}' krtp-dkms",
                check=False).stdout.strip() in ("un", "")


def test_purge_leaves_no_file_user_or_unit(container):
    c = container
    c.sh("apt-get purge -y -q kvod krtp-dkms", timeout=300)
    c.sh("rm -r /srv/media")  # the test title, not the package's
    after = file_list(c)
    before = state["files_before"]
    assert sorted(after - before) == [], f"left behind: {sorted(after - before)}"
    assert sorted(before - after) == [], "removed though not ours"
    assert accounts(c) == state["accounts_before"]
    assert unit_files(c) == state["units_before"]
    assert c.sh("systemctl list-units --all --no-legend 'kvod*'").stdout.strip() == ""
    figures["purge_file_list_check"] = f"{len(before)} files before install, same after purge"
