"""The SQLite catalog: opening, migrations, titles, tracks and cached ranges."""

from __future__ import annotations

import hashlib
import os
import posixpath
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from catalog import (
    MIGRATIONS,
    Catalog,
    CatalogError,
    InvalidTitleName,
    Migration,
    Title,
    TitleExists,
    TitleNotFound,
    TrackSpec,
    migrate,
    open_catalog,
    transaction,
    validate_title_name,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TS_TRACK = dict(
    track_index=0, media_type="mpegts", codec="MP2T", payload_type=33,
    clock_rate=90000, hint_path="/cache/a/0.hint", packets=1200,
)

LATEST = MIGRATIONS[-1].version


def _add(cat: Catalog, name: str = "films/big-buck-bunny.ts", **kw) -> Title:
    kw.setdefault("container", "mpegts")
    kw.setdefault("now", 1000.0)
    return cat.add_title(name, **kw)


def _tables(db: Database) -> set[str]:
    return set(db.table_names())


# -- opening ---------------------------------------------------------------


def test_file_catalog_persists_and_uses_wal(tmp_path):
    path = tmp_path / "sub" / "dir" / "catalog.db"  # parents do not exist yet
    with open_catalog(path) as cat:
        _add(cat, size=5000, tracks=[TS_TRACK], origin_url="http://origin/a.ts")
        cat.add_cached_range("films/big-buck-bunny.ts", 0, 1000)
        cat.record_hit("films/big-buck-bunny.ts", now=1234.5)

    with open_catalog(str(path)) as cat:
        assert cat.db.journal_mode == "wal"
        assert cat.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert cat.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        title = cat.get_title("films/big-buck-bunny.ts")
        assert title is not None
        assert (title.size, title.origin_url, title.hits, title.last_access) == (
            5000, "http://origin/a.ts", 1, 1234.5)
        assert [t.codec for t in title.tracks] == ["MP2T"]
        assert cat.cached_ranges(title.name) == [(0, 1000)]
        assert cat.schema_version() == MIGRATIONS[-1].version


def test_memory_catalog_via_open_and_via_database():
    for cat in (open_catalog(None), Catalog(Database(memory=True))):
        with cat:
            assert cat.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert cat.schema_version() == LATEST
            _add(cat)
            assert [t.name for t in cat.list_titles()] == ["films/big-buck-bunny.ts"]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "catalog.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="catalog.db"):
        open_catalog(path)


def test_opening_a_second_connection_keeps_the_locks_of_the_first(tmp_path):
    """The daemon's reactor connection reads while its writer thread opens
    its own: the checks at open must not drop the first one's POSIX locks
    (closing any descriptor of the file would), or another process's
    checkpoint resets the WAL under a live reader."""
    path = tmp_path / "catalog.db"
    with open_catalog(path) as cat:
        cat.db.execute("PRAGMA wal_autocheckpoint = 0")
        _add(cat)
        reader = open_catalog(path)
        reader.db.execute("BEGIN")
        assert len(reader.list_titles()) == 1  # a read transaction on the WAL snapshot
        open_catalog(path).close()  # e.g. the writer thread's connection
        script = textwrap.dedent(f"""
            import sqlite3
            conn = sqlite3.connect({str(path)!r}, timeout=1)
            print(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        """)
        busy = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        reader.db.execute("COMMIT")
        reader.close()
    assert busy == "1", "the reader's lock was gone: the WAL could be reset under it"


# -- migrations -----------------------------------------------------------


def test_migrations_apply_once_and_reopen_is_idempotent(tmp_path):
    path = tmp_path / "catalog.db"
    db = Database(path)
    assert migrate(db) == [m.version for m in MIGRATIONS]
    assert migrate(db) == []
    db.close()
    open_catalog(path).close()
    open_catalog(path).close()
    rows = sqlite3.connect(path).execute(
        "SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(1, "create_titles_tracks_ranges"), (2, "create_cache_meta"),
                    (3, "add_titles_damaged")]


def _create_then_fail(db: Database) -> None:
    db.execute("CREATE TABLE doomed (x INTEGER)")
    db.execute("INSERT INTO doomed VALUES (1)")
    raise RuntimeError("disk on fire")


def test_failing_migration_leaves_neither_tables_nor_record(tmp_path):
    cat = open_catalog(tmp_path / "catalog.db")
    _add(cat)
    steps = (*MIGRATIONS, Migration(LATEST + 1, "doomed", _create_then_fail))
    with pytest.raises(CatalogError,
                       match=rf"migration {LATEST + 1} \(doomed\) failed: disk on fire"):
        migrate(cat.db, steps)
    assert "doomed" not in _tables(cat.db)
    assert cat.schema_version() == LATEST
    assert cat.get_title("films/big-buck-bunny.ts") is not None
    assert not cat.db.conn.in_transaction


def test_failing_first_migration_leaves_an_empty_database():
    db = Database(memory=True)
    with pytest.raises(CatalogError):
        migrate(db, [Migration(1, "doomed", _create_then_fail)])
    assert _tables(db) == set()


def test_later_migrations_are_not_applied_after_a_failure():
    db = Database(memory=True)
    ran = []
    steps = [
        Migration(1, "doomed", _create_then_fail),
        Migration(2, "after", lambda d: ran.append(2)),
    ]
    with pytest.raises(CatalogError):
        migrate(db, steps)
    assert ran == []


def test_a_migration_that_commits_on_its_own_is_reported():
    def sneaky(db: Database) -> None:
        db["sneaky"].insert({"x": 1})  # sqlite-utils commits inside insert

    db = Database(memory=True)
    with pytest.raises(CatalogError, match="committed its own transaction"):
        migrate(db, [Migration(1, "sneaky", sneaky)])


def test_a_crash_mid_migration_keeps_the_old_version(tmp_path):
    path = tmp_path / "catalog.db"
    open_catalog(path).close()
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from catalog import MIGRATIONS, Migration, migrate
        from catalog.db import connect
        def die(db):
            db.execute("CREATE TABLE half_done (x INTEGER)")
            os._exit(3)
        migrate(connect({str(path)!r}), (*MIGRATIONS, Migration({LATEST + 1}, "die", die)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert proc.returncode == 3, proc.stderr
    with open_catalog(path) as cat:
        assert cat.schema_version() == LATEST
        assert "half_done" not in _tables(cat.db)


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "catalog.db"
    with open_catalog(path) as cat:
        cat.db.execute(
            "INSERT INTO schema_migrations VALUES (7, 'from the future', 0)")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CatalogError, match="version 7 is newer than this kvod supports"):
        open_catalog(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    versions = sqlite3.connect(path).execute(
        "SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert versions == [(m.version,) for m in MIGRATIONS] + [(7,)]


def _add_column(db: Database) -> None:
    db.execute("ALTER TABLE titles ADD COLUMN rating INTEGER")


def test_a_migration_of_a_catalog_with_data_takes_a_safety_copy_first(tmp_path):
    path = tmp_path / "catalog.db"
    with open_catalog(path) as cat:
        _add(cat)
    assert list(tmp_path.glob("*.backup")) == []  # a new catalog has nothing to keep
    db = Database(path)
    steps = (*MIGRATIONS, Migration(LATEST + 1, "rating", _add_column),
             Migration(LATEST + 2, "doomed", _create_then_fail))
    copy = tmp_path / f"catalog.db.v{LATEST + 1}.backup"
    with pytest.raises(CatalogError, match=rf"the catalog is unchanged, and a safety copy "
                                           rf"of it is {copy}"):
        migrate(db, steps)
    db.close()
    first = tmp_path / f"catalog.db.v{LATEST}.backup"
    assert sorted(tmp_path.glob("*.backup")) == [first, copy]
    # each copy is a whole catalog at its version, without a -wal of its own
    for backup, version, columns in ((first, LATEST, False), (copy, LATEST + 1, True)):
        conn = sqlite3.connect(backup)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] \
            == version
        assert conn.execute("SELECT name FROM titles").fetchall() == \
            [("films/big-buck-bunny.ts",)]
        assert ("rating" in [r[1] for r in conn.execute("PRAGMA table_info(titles)")]) \
            is columns
        conn.close()
    assert not list(tmp_path.glob("*.tmp"))


def test_no_migration_runs_without_its_safety_copy(tmp_path):
    path = tmp_path / "catalog.db"
    with open_catalog(path) as cat:
        _add(cat)
    (tmp_path / f"catalog.db.v{LATEST}.backup").mkdir()  # the copy cannot land
    db = Database(path)
    with pytest.raises(CatalogError, match=rf"cannot take the safety copy .*catalog.db"
                                           rf".v{LATEST}.backup before migrating"):
        migrate(db, (*MIGRATIONS, Migration(LATEST + 1, "rating", _add_column)))
    assert migrate(db) == [] and db.execute(
        "SELECT max(version) FROM schema_migrations").fetchone()[0] == LATEST
    db.close()
    assert not list(tmp_path.glob("*.tmp"))


def test_scrambled_pages_are_found_at_open(tmp_path):
    """SQLite opens a file whose schema page is good without complaint; the
    damage below it must be found at open, not in a viewer's request."""
    path = tmp_path / "catalog.db"
    with open_catalog(path) as cat:
        for i in range(200):
            _add(cat, f"t{i}", origin_url="http://origin/" + "a" * 200)
        cat.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.seek(2 * 4096)
        f.write(b"\xa5" * 4096 * 3)
    with pytest.raises(CatalogError, match=r"damaged .*; restore it from a backup"):
        open_catalog(path)


def test_migration_versions_must_increase():
    with pytest.raises(CatalogError, match="version 1 must be an integer greater than 1"):
        migrate(Database(memory=True), [MIGRATIONS[0], Migration(1, "again", lambda d: None)])


# -- titles and tracks -----------------------------------------------------


@pytest.fixture
def cat():
    with open_catalog(None) as c:
        yield c


def test_add_get_list_remove(cat):
    title = _add(
        cat, "b", media_path="/media/b.ts", folder="/cache/b", size=10, duration_ns=5,
        bitrate=8, etag='"x"', last_modified="Tue, 01 Jan 2030 00:00:00 GMT",
        state="partial", tracks=[TrackSpec(**TS_TRACK, fmtp="x=1"),
                                 dict(TS_TRACK, track_index=1, media_type="audio")],
    )
    _add(cat, "a")
    assert title == cat.get_title("b")
    assert (title.state, title.pinned, title.hits, title.created) == ("partial", False, 0, 1000.0)
    assert [(t.track_index, t.media_type, t.fmtp) for t in title.tracks] == [
        (0, "mpegts", "x=1"), (1, "audio", None)]
    assert [t.name for t in cat.list_titles()] == ["a", "b"]
    assert [t.name for t in cat.list_titles(state="partial")] == ["b"]
    assert cat.list_titles()[1].tracks == title.tracks
    assert cat.get_title("nope") is None

    assert cat.remove_title("b") == title
    assert cat.get_title("b") is None
    with pytest.raises(TitleNotFound):
        cat.remove_title("b")


def test_duplicate_name_is_title_exists_and_changes_nothing(cat):
    _add(cat, "a", size=1)
    with pytest.raises(TitleExists, match="'a'"):
        _add(cat, "a", size=2, tracks=[TS_TRACK])
    assert cat.get_title("a").size == 1
    assert cat.get_title("a").tracks == ()


def test_state_pin_and_hits(cat):
    _add(cat, "a", state="remote")
    cat.set_state("a", "complete")
    cat.set_pinned("a", True)
    cat.record_hit("a", now=50.0)
    cat.record_hit("a", now=60.0)
    title = cat.get_title("a")
    assert (title.state, title.pinned, title.hits, title.last_access) == ("complete", True, 2, 60.0)
    cat.set_pinned("a", False)
    assert cat.get_title("a").pinned is False
    for call in (lambda: cat.set_state("z", "remote"), lambda: cat.set_pinned("z", True),
                 lambda: cat.record_hit("z", 1.0), lambda: cat.cached_ranges("z"),
                 lambda: cat.add_cached_range("z", 0, 1), lambda: cat.update_title("z", size=1)):
        with pytest.raises(TitleNotFound, match="'z'"):
            call()


def test_update_title_and_replace_tracks(cat):
    _add(cat, "a", state="partial", tracks=[TS_TRACK])
    updated = cat.update_title("a", size=100, etag='"e"', folder="/cache/a")
    assert (updated.size, updated.etag, updated.folder) == (100, '"e"', "/cache/a")
    cat.add_cached_range("a", 0, 80)
    with pytest.raises(CatalogError, match="size: 50 is below the cached range ending at 80"):
        cat.update_title("a", size=50)
    with pytest.raises(CatalogError, match="hits: not a field"):
        cat.update_title("a", hits=5)
    replaced = cat.replace_tracks("a", [dict(TS_TRACK, track_index=3, packets=7)])
    assert [(t.track_index, t.packets) for t in replaced.tracks] == [(3, 7)]
    assert cat.db.execute("SELECT count(*) FROM tracks").fetchone()[0] == 1


@pytest.mark.parametrize("kwargs, field", [
    (dict(size=-1), "size"),
    (dict(duration_ns=1.5), "duration_ns"),
    (dict(bitrate=True), "bitrate"),
    (dict(state="half"), "state"),
    (dict(container=""), "container"),
    (dict(now=float("nan")), "now"),
    (dict(pinned=1), "pinned"),
    (dict(tracks=[dict(TS_TRACK, payload_type=128)]), r"tracks\[0\].payload_type"),
    (dict(tracks=[dict(TS_TRACK, clock_rate=0)]), r"tracks\[0\].clock_rate"),
    (dict(tracks=[dict(TS_TRACK, bogus=1)]), r"tracks\[0\]: .*bogus"),
    (dict(tracks=[TS_TRACK, TS_TRACK]), "duplicate track_index 0"),
])
def test_invalid_input_names_the_field(cat, kwargs, field):
    with pytest.raises(CatalogError, match=field):
        _add(cat, "a", **kwargs)
    assert cat.list_titles() == []


def test_invalid_state_changes_name_the_field(cat):
    _add(cat, "a", size=100)
    with pytest.raises(CatalogError, match="state: expected one of"):
        cat.set_state("a", "gone")
    with pytest.raises(CatalogError, match=r"end: expected a value greater than start \(5\)"):
        cat.add_cached_range("a", 5, 5)
    with pytest.raises(CatalogError, match="start: expected a non-negative integer"):
        cat.add_cached_range("a", -1, 5)
    with pytest.raises(CatalogError, match="end: 101 is beyond the size"):
        cat.add_cached_range("a", 0, 101)
    assert cat.get_title("a").state == "complete"
    assert cat.cached_ranges("a") == []


def test_remove_cascades_to_tracks_and_ranges(cat):
    _add(cat, "a", tracks=[TS_TRACK, dict(TS_TRACK, track_index=1)])
    _add(cat, "b", tracks=[TS_TRACK])
    cat.add_cached_range("a", 0, 10)
    cat.add_cached_range("a", 20, 30)
    cat.add_cached_range("b", 0, 5)
    cat.remove_title("a")
    assert cat.db.execute("SELECT count(*) FROM tracks").fetchone()[0] == 1
    assert cat.db.execute("SELECT title_id, start FROM cached_ranges").fetchall() == [
        (cat.get_title("b").id, 0)]
    # The same holds for a raw delete: the cascade is in the schema, not in Python.
    cat.db.execute("DELETE FROM titles WHERE name = 'b'")
    assert cat.db.execute("SELECT count(*) FROM tracks").fetchone()[0] == 0
    assert cat.total_cached_bytes() == 0


# -- cached ranges ---------------------------------------------------------


def test_range_merging_examples(cat):
    _add(cat, "a")
    assert cat.add_cached_range("a", 10, 20) == (10, 20)
    assert cat.add_cached_range("a", 30, 40) == (30, 40)
    assert cat.add_cached_range("a", 20, 25) == (10, 25)    # adjacent on the left
    assert cat.add_cached_range("a", 28, 30) == (28, 40)    # adjacent on the right
    assert cat.cached_ranges("a") == [(10, 25), (28, 40)]
    assert cat.add_cached_range("a", 12, 14) == (10, 25)    # inside
    assert cat.add_cached_range("a", 0, 100) == (0, 100)    # swallows everything
    assert cat.cached_ranges("a") == [(0, 100)]
    assert cat.cached_bytes("a") == 100
    cat.clear_cached_ranges("a")
    assert cat.cached_ranges("a") == []


_ranges = st.lists(
    st.tuples(st.integers(0, 200), st.integers(1, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(a=_ranges, b=_ranges)
def test_merged_ranges_are_the_union_sorted_and_disjoint(a, b):
    with open_catalog(None) as cat:
        _add(cat, "a")
        _add(cat, "b")
        for name, ranges in (("a", a), ("b", b)):
            for start, end in ranges:
                cat.add_cached_range(name, start, end)
        for name, ranges in (("a", a), ("b", b)):
            stored = cat.cached_ranges(name)
            union = {i for s, e in ranges for i in range(s, e)}
            assert {i for s, e in stored for i in range(s, e)} == union
            # sorted, and a gap between neighbours (touching ones are merged)
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(stored, stored[1:]))
            assert cat.cached_bytes(name) == len(union)
        assert cat.total_cached_bytes() == cat.cached_bytes("a") + cat.cached_bytes("b")


# -- concurrency -------------------------------------------------------------


def test_two_connections_see_each_others_commits(tmp_path):
    path = tmp_path / "catalog.db"
    with open_catalog(path) as one, open_catalog(path) as two:
        _add(one, "a", size=100)
        assert two.get_title("a").size == 100
        two.add_cached_range("a", 0, 50)
        assert one.cached_ranges("a") == [(0, 50)]
        two.remove_title("a")
        assert one.get_title("a") is None


def test_readers_are_not_blocked_and_writers_time_out_cleanly(tmp_path):
    path = tmp_path / "catalog.db"
    with open_catalog(path) as one, open_catalog(path) as two:
        _add(one, "a")
        two.db.execute("PRAGMA busy_timeout = 50")
        with transaction(one.db):
            one.db.execute("UPDATE titles SET hits = 9")
            assert two.get_title("a").hits == 0  # WAL: reads the last commit
            with pytest.raises(CatalogError, match="locked"):
                two.record_hit("a", 1.0)
        assert two.get_title("a").hits == 9


# -- title names -------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "a", "film.ts", "films/2024/big_buck-bunny.ts", "...", ".hidden", "a/b.c/d", "x" * 255,
])
def test_valid_title_names(name):
    assert validate_title_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "empty"),
    ("x" * 256, "256 characters"),
    ("/etc/passwd", "must not start with '/'"),
    ("a//b", "empty segment"),
    ("a/", "empty segment"),
    ("..", "'..' segment"),
    ("a/../../etc", "'..' segment"),
    ("a/./b", "'.' segment"),
    ("a b", "contains ' '"),
    ("a\\..\\b", "contains '\\\\\\\\'"),
    ("a\x00b", "contains"),
    ("film\n", "contains"),
    ("caf\u00e9", "contains"),
    ("a?b", "contains"),
    (7, "must be a string"),
])
def test_invalid_title_names(name, why):
    with pytest.raises(InvalidTitleName, match=why):
        validate_title_name(name)


def test_add_title_validates_the_name(cat):
    with pytest.raises(InvalidTitleName):
        _add(cat, "../escape")
    assert cat.list_titles() == []


_segment = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
_candidate_names = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="ab./\\\x00-_ ", max_size=40),
    st.lists(st.sampled_from(["a", ".", "..", "", "...", "b.c", "/"]), max_size=8).map("/".join),
    st.lists(_segment, min_size=1, max_size=6).map("/".join),
)


@settings(max_examples=300)
@given(name=_candidate_names)
def test_accepted_names_cannot_escape_the_cache_folder(name):
    try:
        validate_title_name(name)
    except InvalidTitleName:
        return
    base = "/var/lib/kvod/cache"
    joined = posixpath.normpath(posixpath.join(base, name))
    assert joined.startswith(base + "/")
    # canonical: the folder is the name itself, so two names never share one
    assert posixpath.normpath(name) == name
    assert joined == base + "/" + name
    assert ".." not in name.split("/") and "\\" not in name and "\x00" not in name


@given(segments=st.lists(_segment.filter(lambda s: s not in (".", "..")), min_size=1, max_size=8))
def test_well_formed_names_are_accepted(segments):
    name = "/".join(segments)[:255].rstrip("/")
    if name and not name.split("/")[-1] in (".", ".."):
        assert validate_title_name(name) == name


def test_file_catalog_commits_without_fsync_per_commit(tmp_path):
    """WAL + synchronous=NORMAL: safe against corruption, cheap commits."""
    from catalog import open_catalog
    db = open_catalog(tmp_path / "c.db")
    try:
        assert db.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        db.close()
