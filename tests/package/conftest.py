"""The package tests run from `make test-package` (which builds the .debs
first and sets KVOD_PACKAGE_TESTS), not as part of `make test`."""

import os

import pytest

# a container's debootstrap and apt steps have limits of up to 900 s each,
# and a test's first use of a container builds it: past pytest.ini's limit
PACKAGE_TEST_TIMEOUT = 3600

if not os.environ.get("KVOD_PACKAGE_TESTS"):
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.timeout(PACKAGE_TEST_TIMEOUT))
