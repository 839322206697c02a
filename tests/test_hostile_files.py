"""Media files changed, swapped or named against kvod (issue 11, "Media
files"): no change to a file on disk, and no title name, may crash a
command or the daemon, or leave a title that is not what it says."""

from __future__ import annotations

import os

import pytest

from appliance.cache.layout import NAME_MAX, title_folder
from tests.helpers.daemon import KvodDaemon

# 85 segments of "a/" percent-encode to 85 * 4 - 3 = 337 bytes: more than
# a file system's 255-byte file name limit, though a valid title name
LONG_NAME = "/".join(["a"] * 85) + "x" * 80


@pytest.fixture
def kvod(tmp_path):
    return KvodDaemon(str(tmp_path))


def test_long_title_names_get_folders_the_file_system_takes(tmp_path):
    folder = title_folder(str(tmp_path), LONG_NAME)
    assert len(os.path.basename(folder).encode()) <= NAME_MAX
    os.makedirs(folder)
    # still one folder per name: a name sharing the long prefix differs
    assert title_folder(str(tmp_path), LONG_NAME + "y") != folder
    # and short names keep their readable folder
    assert os.path.basename(title_folder(str(tmp_path), "a/b")) == "a%2Fb"


def test_catalog_add_takes_a_name_whose_folder_would_be_too_long(kvod, short_ts_file):
    assert len(LONG_NAME) <= 255
    done = kvod.kvod("catalog", "add", short_ts_file, "--name", LONG_NAME, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    listed = kvod.kvod("catalog", "show", LONG_NAME)
    assert "complete" in listed.stdout


# --- a file that changes while it is indexed (or added) -----------------

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402

from tests.helpers.daemon import PYTHON, ROOT  # noqa: E402

# Runs in a child: a SIGBUS would kill pytest itself. The file is cut to
# 192 kB once the indexer has found the program (after it opened the file,
# before its scan), the way an operator's copy or a fill's rollback would.
SHRINK_WHILE_INDEXED = """
import os, sys
from rtpengine.index import mpegts
path, hint = sys.argv[1], sys.argv[2]
real = mpegts.find_program
def find_then_shrink(*args, **kwargs):
    found = real(*args, **kwargs)
    os.truncate(path, 188 * 1024)  # packet and page aligned
    return found
mpegts.find_program = find_then_shrink
try:
    mpegts.index_mpegts(path, hint)
except mpegts.MediaError as exc:
    print("MediaError:", exc)
    sys.exit(3)
print("indexed")
"""


def test_indexer_does_not_fault_on_a_file_that_shrinks(tmp_path, ts_file):
    path = str(tmp_path / "shrinking.ts")
    shutil.copyfile(ts_file, path)
    assert os.path.getsize(path) > 1 << 20
    done = subprocess.run([PYTHON, "-c", SHRINK_WHILE_INDEXED, path, str(tmp_path / "t.hint")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != -signal.SIGBUS, "the indexer died of SIGBUS"
    assert done.returncode == 3, done.stdout + done.stderr
    assert "changed while it was indexed" in done.stdout
    assert not (tmp_path / "t.hint").exists()


def test_catalog_add_keeps_its_own_copy_of_the_operators_file(kvod, tmp_path, short_ts_file):
    source = str(tmp_path / "operator.ts")
    shutil.copyfile(short_ts_file, source)
    kvod.add(source, "mine")
    cached = os.path.join(str(tmp_path), "cache", "titles", "mine", "media.ts")
    with open(cached, "rb") as f:
        before = f.read()
    # the operator rewrites the source in place, then cuts it
    with open(source, "r+b") as f:
        f.write(b"\0" * 4096)
    os.truncate(source, 188 * 10)
    with open(cached, "rb") as f:
        assert f.read() == before
    assert os.stat(cached).st_ino != os.stat(source).st_ino


def _ingest(tmp_path, source, name="t", **kwargs):
    from appliance.cache.ingest import ingest_file
    from catalog import open_catalog
    catalog = open_catalog(str(tmp_path / "catalog.db"))
    return catalog, ingest_file(catalog, str(tmp_path / "cache"), source, name, now=0.0,
                                **kwargs)


def test_ingest_refuses_a_source_that_changes_while_it_is_copied(tmp_path, short_ts_file):
    from appliance.cache.ingest import IngestError
    source = str(tmp_path / "operator.ts")
    shutil.copyfile(short_ts_file, source)

    def cut_source(done, total):
        os.truncate(source, 188 * 100)

    with pytest.raises(IngestError, match="changed while it was"):
        _ingest(tmp_path, source, progress=cut_source)
    assert not os.path.exists(str(tmp_path / "cache" / "titles" / "t"))


def test_ingest_records_only_the_file_it_indexed(tmp_path, short_ts_file, monkeypatch):
    """A file replaced after the scan (same path, other bytes) is not
    recorded with the old file's size and duration."""
    from appliance.cache import ingest
    source = str(tmp_path / "operator.ts")
    shutil.copyfile(short_ts_file, source)
    real = ingest.index_mpegts

    def index_then_replace(media, hint):
        found = real(media, hint)
        with open(media + ".new", "wb") as f:
            f.write(open(media, "rb").read()[:188 * 100])
        os.replace(media + ".new", media)
        return found

    monkeypatch.setattr(ingest, "index_mpegts", index_then_replace)
    with pytest.raises(ingest.IngestError, match="changed while it was"):
        catalog, _ = _ingest(tmp_path, source)
    from catalog import open_catalog
    assert open_catalog(str(tmp_path / "catalog.db")).get_title("t") is None


def test_ingest_of_an_unreadable_file_is_a_clear_error(tmp_path, short_ts_file, monkeypatch):
    """A file the daemon's user may not read (permissions, an I/O error)."""
    from appliance.cache import ingest
    import builtins
    source = str(tmp_path / "locked.ts")
    shutil.copyfile(short_ts_file, source)
    real_open = builtins.open

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == source:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(ingest.IngestError, match="Permission denied"):
        _ingest(tmp_path, source)


# --- files that change under the engine while it streams them ------------

# Runs in a child: before the engine caught SIGBUS, a hint file cut short
# under a stream killed the whole process. Two streams play 10 s titles
# of their own; one title's file is cut to one page (4096 bytes: hint
# records 126 on, media bytes 4096 on, lie past its end) 0.2 s in.
CUT_WHILE_STREAMED = """
import json, os, socket, sys, time
from rtpengine.engine import Engine
from tests.helpers.engine import MS, Receiver, chunk_records, open_stream, wait_state, write_hints
strategy, which, folder = sys.argv[1], sys.argv[2], sys.argv[3]
paths = {}
for name in ("a", "b"):
    media = os.path.join(folder, name + ".bin")
    with open(media, "wb") as f:
        f.write(os.urandom(2000 * 500))
    hints = write_hints(os.path.join(folder, name + ".hint"),
                        chunk_records(2000 * 500, 0, chunk=500, gap_ns=5 * MS))
    paths[name] = media, hints
out = {}
with Engine(strategy=strategy) as e:
    rx = {n: Receiver() for n in paths}
    streams = {n: open_stream(e, rx[n].sender(), *paths[n], ssrc=1, seq0=0, ts0=0)
               for n in paths}
    for s in streams.values():
        s.play()
    time.sleep(0.2)
    os.truncate(paths["a"][0 if which == "media" else 1], 4096)
    a = wait_state(streams["a"], "failed", timeout=5)
    b_before = streams["b"].stats().packets_sent
    time.sleep(0.2)
    b = streams["b"].stats()
    out = dict(a_state=a.state, a_errno=a.last_errno, a_sent=a.packets_sent,
               a_errors=a.send_errors, b_state=b.state,
               b_grew=b.packets_sent - b_before)
    for s in streams.values():
        s.close()
print(json.dumps(out))
"""


def _cut_while_streamed(tmp_path, strategy: str, which: str) -> dict:
    import json
    done = subprocess.run([PYTHON, "-c", CUT_WHILE_STREAMED, strategy, which, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != -signal.SIGBUS, "the engine died of SIGBUS"
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg", "read_send_rtp"])
def test_a_hint_file_cut_under_a_stream_fails_that_stream_only(tmp_path, strategy):
    import errno
    got = _cut_while_streamed(tmp_path, strategy, "hint")
    assert got["a_state"] == "failed" and got["a_errno"] == errno.EFAULT, got
    # it got as far as the records left in the file's last page
    assert 40 <= got["a_sent"] <= 127, got
    assert got["b_state"] == "playing" and got["b_grew"] > 10, got


@pytest.mark.parametrize("strategy", ["gso", "sendmmsg", "gso_zerocopy", "read_send_rtp",
                                      "rtp_sendfile"])
def test_a_media_file_cut_under_a_stream_fails_that_stream_only(tmp_path, strategy):
    import errno
    got = _cut_while_streamed(tmp_path, strategy, "media")
    assert got["a_state"] == "failed", got
    assert got["a_errno"] in (errno.EFAULT, errno.ENODATA), got
    # ends at the first packet it cannot send, not thousands of errors later
    assert got["a_errors"] <= 2, got
    assert got["b_state"] == "playing" and got["b_grew"] > 10, got


GUARD_CHILD = """
import mmap, os, sys, tempfile
from rtpengine._kvod_engine import ffi, lib
from rtpengine.engine import Engine, EngineError
from tests.helpers.engine import MS, chunk_records, write_hints
folder = sys.argv[1]
fd, path = tempfile.mkstemp(dir=folder)
os.write(fd, b"x" * 8192)
m = mmap.mmap(fd, 8192, prot=mmap.PROT_READ)
os.ftruncate(fd, 100)
buf = ffi.new("char[16]")
ptr = ffi.from_buffer(m)
print("past", lib.kvod_guarded_read(buf, ptr + 4096, 16))
print("inside", lib.kvod_guarded_read(buf, ptr + 90, 16), ffi.buffer(buf, 10)[:])
# the API reads records too: play from a record the file lost
media = os.path.join(folder, "m.bin")
with open(media, "wb") as f:
    f.write(b"y" * 2000 * 500)
hints = write_hints(os.path.join(folder, "m.hint"),
                    chunk_records(2000 * 500, 0, chunk=500, gap_ns=5 * MS))
import socket
with Engine() as e:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", 9))
    with open(media, "rb") as fm, open(hints, "rb") as fh:
        stream = e.open_stream(s, fm, fh, ssrc=1, seq0=0, ts0=0)
    os.truncate(hints, 4096)
    try:
        stream.play(start_record=1500)
        print("played")
    except EngineError as exc:
        print("play", exc.errno, stream.stats().state)
    stream.close()
sys.stdout.flush()
# a SIGBUS outside a guarded read still ends the process as it would have
m[5000]
print("survived")
"""


def test_guarded_reads_and_other_faults(tmp_path):
    import errno
    done = subprocess.run([PYTHON, "-c", GUARD_CHILD, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert lines[0] == f"past {-errno.EFAULT}", done.stdout + done.stderr
    assert lines[1].startswith("inside 0 b'xxxxxxxxxx'"), done.stdout
    assert lines[2] == f"play {errno.EFAULT} failed", done.stdout + done.stderr
    assert "survived" not in done.stdout
    # the handler before ours decides: the default action, or under
    # make test-asan AddressSanitizer's report of the fault
    assert done.returncode == -signal.SIGBUS or "AddressSanitizer: BUS" in done.stderr, \
        done.stderr


HINTFILE_CUT = """
import os, sys
from rtpengine.hintfile import HintError, HintFile
from tests.helpers.engine import MS, chunk_records, write_hints
path = write_hints(os.path.join(sys.argv[1], "t.hint"),
                   chunk_records(2000 * 500, 0, chunk=500, gap_ns=5 * MS))
hints = HintFile(path)
os.truncate(path, 4096)
try:
    hints.keyframe_at_or_before(9 * 10**9)
    print("read")
except HintError as exc:
    print("HintError", exc)
"""


def test_the_daemons_hint_reader_survives_a_hint_file_cut_short(tmp_path):
    """The session layer seeks in the hint file it holds open (PLAY with a
    Range): a file cut short meanwhile is an error, not SIGBUS."""
    done = subprocess.run([PYTHON, "-c", HINTFILE_CUT, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != -signal.SIGBUS, "the hint reader died of SIGBUS"
    assert done.stdout.startswith("HintError"), done.stdout + done.stderr
    assert "cut short" in done.stdout


# --- the daemon: cached files cut short under its viewers ---------------------

import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from appliance.bench.rtsp_client import RtpReceiver, RtspClient  # noqa: E402


def _play(client: RtspClient, receiver: RtpReceiver, name: str):
    url = client.url(name)
    assert client.request("DESCRIBE", url, [("Accept", "application/sdp")]).status == 200
    session, _, _ = client.setup_udp(url + "/trackID=0", receiver.ports)
    resp = client.request("PLAY", url + "/", [("Session", session), ("Range", "npt=0-")])
    assert resp.status == 200, resp
    return session


def _files(d: KvodDaemon, name: str) -> tuple[str, str]:
    info = json.loads(d.kvod("catalog", "show", name, "--json").stdout)
    return info["media_path"], info["tracks"][0]["hint_path"]


def _wait(what, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


@pytest.mark.parametrize("cut", ["media", "hint"])
def test_a_cached_file_cut_short_under_a_viewer(tmp_path, ts_file, short_ts_file, cut):
    """The daemon survives; only that title's viewer is ended, with BYE;
    the title is marked damaged (status, catalog list) and DESCRIBE of it
    answers 503; the other title's viewer plays on; no traceback."""
    d = KvodDaemon(str(tmp_path))
    d.add(ts_file, "movie")
    d.add(ts_file, "other")
    d.start()
    viewers = []
    try:
        for name in ("movie", "other"):
            receiver, client = RtpReceiver(), RtspClient("127.0.0.1", d.port)
            viewers.append((receiver, client))
            _play(client, receiver, name)
        assert _wait(lambda: len(viewers[0][0].packets) > 20, 5)
        media, hint = _files(d, "movie")
        # one page: the rest of its records / bytes lie past the end
        os.truncate(media if cut == "media" else hint, 4096)
        movie, other = viewers[0][0], viewers[1][0]
        assert _wait(movie.got_bye, 5), "the viewer of the cut title was not ended"
        assert d.proc.poll() is None, "the daemon died"
        sent = len(other.packets)
        time.sleep(0.5)
        assert len(other.packets) > sent and not other.got_bye()
        listed = d.kvod("catalog", "list").stdout
        assert re.search(r"^movie\s+damaged", listed, re.M), listed
        assert re.search(r"^other\s+complete", listed, re.M), listed
        status = json.loads(d.kvod("status", "--json").stdout)
        assert [t["name"] for t in status["damaged_titles"]] == ["movie"]
        assert "damaged title: movie" in d.kvod("status").stdout
        probe = RtspClient("127.0.0.1", d.port)
        try:
            answer = probe.request("DESCRIBE", probe.url("movie"),
                                   [("Accept", "application/sdp")])
            assert answer.status == 503
            assert probe.request("DESCRIBE", probe.url("other"),
                                 [("Accept", "application/sdp")]).status == 200
        finally:
            probe.close()
    finally:
        for receiver, client in viewers:
            client.close()
            receiver.close()
        code = d.stop()
    log = d.log()
    assert code == 0, log
    assert "Traceback" not in log
    assert "title movie is damaged" in log


def test_a_damaged_title_with_an_origin_is_fetched_again(tmp_path, ts_file):
    from tests.helpers.origins import FaultOrigin
    data = open(ts_file, "rb").read()       # 10 s: the cut comes well before its end
    origin = FaultOrigin({"t.ts": data})
    d = KvodDaemon(str(tmp_path), extra=f'[origin]\nbase_url = ["{origin.base_url}"]\n')
    try:
        d.start()

        def info() -> dict:
            return json.loads(d.kvod("catalog", "show", "t.ts", "--json").stdout)

        receiver, client = RtpReceiver(), RtspClient("127.0.0.1", d.port)
        try:
            _play(client, receiver, "t.ts")
            assert _wait(lambda: info()["state"] == "complete", 20)
        finally:
            client.close()
            receiver.close()
        receiver, client = RtpReceiver(), RtspClient("127.0.0.1", d.port)
        try:
            _play(client, receiver, "t.ts")
            assert _wait(lambda: len(receiver.packets) > 20, 5)
            os.truncate(info()["media_path"], 4096)
            assert _wait(receiver.got_bye, 5)
        finally:
            client.close()
            receiver.close()
        assert _wait(lambda: info()["damaged"], 5)
        # asked for again: fetched again, whole, and sound
        receiver, client = RtpReceiver(), RtspClient("127.0.0.1", d.port)
        try:
            _play(client, receiver, "t.ts")
            assert _wait(lambda: info()["state"] == "complete", 20)
            assert _wait(receiver.got_bye, 15)
        finally:
            client.close()
            receiver.close()
        assert info()["damaged"] is None
        with open(info()["media_path"], "rb") as f:
            assert f.read() == data
        assert b"".join(p[12:] for _, p in receiver.packets) == data
    finally:
        origin.stop()
        code = d.stop()
    log = d.log()
    assert code == 0, log
    assert "Traceback" not in log
    assert "title t.ts is damaged" in log


@pytest.mark.parametrize("change", ["cut media", "cut hint", "grow media", "hint header",
                                    "rewrite media", "replace media", "unreadable"])
def test_cached_files_changed_while_nobody_watches(tmp_path, short_ts_file, change):
    """A title whose files no longer match the catalog when SETUP opens
    them is refused with 503 and marked damaged (or, unreadable, refused
    and named), never a traceback."""
    d = KvodDaemon(str(tmp_path))
    d.add(short_ts_file, "clip")
    media, hint = _files(d, "clip")
    if change == "cut media":
        os.truncate(media, 188 * 100)
    elif change == "cut hint":
        os.truncate(hint, 64 + 32 * 10)
    elif change == "grow media":
        with open(media, "ab") as f:
            f.write(b"\x47" + bytes(187))
    elif change == "hint header":
        with open(hint, "r+b") as f:
            f.write(b"NOTAHINT")
    elif change == "rewrite media":           # in place, the same size
        with open(media, "r+b") as f:
            f.seek(188 * 50)
            f.write(b"\x47" + bytes(187))
    elif change == "replace media":           # another file, the same size
        shutil.copyfile(media, media + ".other")
        os.replace(media + ".other", media)
    d.start()
    try:
        if change == "unreadable":
            # root reads anything: make the file a folder instead
            os.unlink(media)
            os.mkdir(media)
        receiver, client = RtpReceiver(), RtspClient("127.0.0.1", d.port)
        try:
            url = client.url("clip")
            client.request("DESCRIBE", url, [("Accept", "application/sdp")])
            resp = client.request("SETUP", url + "/trackID=0",
                                  [("Transport", f"RTP/AVP;unicast;client_port="
                                                 f"{receiver.ports[0]}-{receiver.ports[1]}")])
            assert resp.status == 503, resp
            assert d.proc.poll() is None
        finally:
            client.close()
            receiver.close()
        if change != "unreadable":
            assert re.search(r"^clip\s+damaged", d.kvod("catalog", "list").stdout, re.M)
    finally:
        code = d.stop()
    log = d.log()
    assert code == 0, log
    assert "Traceback" not in log


def test_the_growing_index_reads_a_fills_file_cut_short_as_an_error(tmp_path, ts_file):
    """A fill feeds its growing index from the file it writes. Through a
    mapping, a page past the end of a file cut short meanwhile is SIGBUS
    in the daemon (a race: between the cut and the fill's next write);
    the fill now hands it a FileBytes (pread), whose short read is an
    error for that title only."""
    from rtpengine.index.errors import FileChanged
    from rtpengine.index.file_reads import FileBytes
    from rtpengine.index.mpegts_growing import GrowingTsIndex
    path = str(tmp_path / "filling.ts")
    shutil.copyfile(ts_file, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        index = GrowingTsIndex("t")
        src = FileBytes(fd, path)
        half = os.path.getsize(path) // 2
        assert index.feed(src, half) > 0            # the same as over a buffer
        with open(ts_file, "rb") as f:
            whole = GrowingTsIndex("w")
            assert whole.feed(f.read(), half) == index.ready()
            whole.close()
        os.truncate(path, 188 * 1024)
        with pytest.raises(FileChanged, match="cut short"):
            index.feed(src, os.path.getsize(ts_file))
        index.close()
    finally:
        os.close(fd)


def test_a_fill_never_maps_the_file_it_writes():
    import inspect
    from appliance.cache import fill
    assert "mmap" not in inspect.getsource(fill)
