"""The catalog's errors: what its callers catch, apart from the code that
raises them (the database layer and the diagnosis of a damaged file both
do)."""

from __future__ import annotations


class CatalogError(Exception):
    """The catalog refused an operation or could not be opened."""


class CatalogUnusable(CatalogError):
    """The catalog file cannot be used as it is: damaged, not a file, not
    accessible. The message is one line naming the file, what is wrong and
    what the operator can do about it."""

    def __init__(self, path: str, problem: str, advice: str) -> None:
        # One line, whatever SQLite's own message held (quick_check's are several).
        problem = " ".join(problem.split())
        super().__init__(f"catalog {path}: {problem}; {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice


class TitleExists(CatalogError):
    """A title with this name is already in the catalog."""


class TitleNotFound(CatalogError):
    """No title with this name is in the catalog."""


class InvalidTitleName(CatalogError):
    """A title name is not a safe, path-like name."""
