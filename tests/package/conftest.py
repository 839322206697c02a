"""The package tests run from `make test-package` (which builds the .debs
first and sets KVOD_PACKAGE_TESTS), not as part of `make test`."""

import os

if not os.environ.get("KVOD_PACKAGE_TESTS"):
    collect_ignore_glob = ["test_*.py"]
