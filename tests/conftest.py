"""Shared fixtures: the stack fixtures are usable from every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import lakehook_server, stack_settings
from tests.repositories import delete_created

__all__ = ["lakehook_server", "stack_settings"]


@pytest.fixture(autouse=True, scope="module")
def _delete_created_repositories() -> Iterator[None]:
    """The lakeFS repositories a module created are deleted when it ends (tests/repositories)."""
    yield
    delete_created()


# `make test`'s parallel phase (pytest-xdist, --dist loadfile) hands whole files to its workers
# in collection order. The longest real-stack files go first (durations of a full run, longest
# first), the other stack files next and the fast unit tests last, so that no long file starts
# when the others are done and leaves the cores idle while it runs alone.
LONGEST_FIRST = (
    "test_faults.py",
    "test_engine_differential.py",
    "test_outages.py",
    "test_drift_stack.py",
    "test_end_to_end.py",
    "test_delivery_semantics.py",
    "test_restarts.py",
    "test_replicas.py",
    "test_metastore_stack.py",
    "test_metastore_contract.py",
    "test_lineage_marquez.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    stack_files = {item.path for item in items if item.get_closest_marker("stack")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_FIRST:
            return (0, LONGEST_FIRST.index(name))
        return (1, 0) if item.path in stack_files else (2, 0)

    items.sort(key=rank)  # stable: each file's own order is kept
