"""The kvod catalog: titles, tracks and cached byte ranges in SQLite.

No Twisted here and nothing else of kvod's: the daemon, the CLI and the
tests all use this package the same way.
"""

from catalog.cache_entries import (CacheEntry, cache_entries, get_meta, keep_cached_below,
                                   set_meta, set_priority)
from catalog.db import transaction
from catalog.errors import (
    CatalogError,
    CatalogUnusable,
    InvalidTitleName,
    TitleExists,
    TitleNotFound,
)
from catalog.migrations import MIGRATIONS, Migration, migrate
from catalog.titles import (
    STATES,
    Catalog,
    Title,
    Track,
    TrackSpec,
    open_catalog,
    validate_title_name,
)

__all__ = [
    "CacheEntry",
    "cache_entries",
    "get_meta",
    "keep_cached_below",
    "set_meta",
    "set_priority",
    "MIGRATIONS",
    "STATES",
    "Catalog",
    "CatalogError",
    "CatalogUnusable",
    "InvalidTitleName",
    "Migration",
    "Title",
    "TitleExists",
    "TitleNotFound",
    "Track",
    "TrackSpec",
    "migrate",
    "open_catalog",
    "transaction",
    "validate_title_name",
]
