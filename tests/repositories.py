"""Repositories the tests create in the shared lakeFS, deleted when their test module ends.

Every lakehook server a test starts looks once at every repository of its lakeFS for
lakehook's actions (``server.worker.Reconciler``: a listing of branches and a read of the
action files each). Left behind, the tests' repositories made that first sweep cost every
later server start more: 835 of them after a few local runs took about 13 s of lakeFS calls
per server start. Deleted per module (``tests/conftest.py``), a run keeps only the
repositories of the modules running now. A module-scoped fixture may share a repository
between its tests, so nothing is deleted before its module ends.
"""

from __future__ import annotations

import contextlib
import shutil

import lakefs_sdk

from lakehook.settings import Settings
from lakehook.stack import paths
from pipeline.adapters.lakefs import LakeFSClient

_created: list[str] = []


def created(name: str) -> str:
    """Register ``name`` (just created by a test) for deletion when its module ends."""
    _created.append(name)
    return name


def delete_created() -> None:
    """Delete the registered repositories (lakeFS's record and its local objects)."""
    names = list(_created)
    _created.clear()
    if not names:
        return
    repositories = LakeFSClient.from_settings(Settings.load()).sdk.repositories_api
    for name in names:
        with contextlib.suppress(lakefs_sdk.exceptions.NotFoundException):  # already gone
            repositories.delete_repository(name)
        # lakeFS keeps a deleted repository's objects: the local block store's directory
        shutil.rmtree(paths.data_dir("lakefs") / "objects" / name, ignore_errors=True)
