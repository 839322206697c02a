"""The RTSP server's title cache: from SQLite once, until the catalog changes."""

from __future__ import annotations

from catalog import open_catalog
from catalog.title_cache import TitleCache


def _add(cat, name: str) -> None:
    cat.add_title(name, container="mpegts", state="complete", now=1.0, size=10,
                  media_path=None, folder=None, tracks=[])


def test_a_title_is_read_once_while_the_catalog_stays_the_same(tmp_path):
    cat = open_catalog(str(tmp_path / "c.db"))
    _add(cat, "a")
    titles = TitleCache(cat)
    first = titles.get_title("a")
    assert titles.get_title("a") is first and titles.get_title("nope") is None
    assert titles.get_title("nope") is None
    assert (titles.misses, titles.hits) == (2, 2)
    cat.close()


def test_a_write_of_its_own_connection_is_seen(tmp_path):
    cat = open_catalog(str(tmp_path / "c.db"))
    _add(cat, "a")
    titles = TitleCache(cat)
    assert not titles.get_title("a").pinned
    cat.set_pinned("a", True)
    assert titles.get_title("a").pinned
    titles.record_hit("a", now=5.0)
    assert titles.get_title("a").hits == 1
    cat.close()


def test_a_commit_of_another_connection_is_seen(tmp_path):
    """The kvod CLI (another process) or the fill's writer thread: another
    connection to the same file."""
    cat = open_catalog(str(tmp_path / "c.db"))
    titles = TitleCache(cat)
    assert titles.get_title("b") is None
    other = open_catalog(str(tmp_path / "c.db"))
    _add(other, "b")
    assert titles.get_title("b") is not None
    other.remove_title("b")
    assert titles.get_title("b") is None
    other.close()
    cat.close()


def test_made_up_names_cannot_grow_it_without_bound(tmp_path):
    cat = open_catalog(str(tmp_path / "c.db"))
    titles = TitleCache(cat, max_titles=8)
    for i in range(100):
        assert titles.get_title(f"made-up-{i}") is None
        assert len(titles._titles) <= 8
    cat.close()
