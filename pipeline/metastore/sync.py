"""Make a Hive schema hold exactly the tables a ref's manifests describe.

``desired_tables_from_manifests`` and ``plan_sync`` are pure; ``sync_ref`` and ``copy_schema``
run a plan against a ``Metastore``. Table definitions carry the manifest's source commit and
fingerprint as table properties, so a plan can tell a stale table from a current one without
reading any data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from lakehook import faults, fence
from lakehook.errors import LakehookError, TransientError
from pipeline.metastore import ddl
from pipeline.model import TableManifest
from pipeline.naming import normalize_location, table_location
from pipeline.ports import Column, Metastore, TableDef

SOURCE_COMMIT_PROPERTY = "lakehook.source_commit"
FINGERPRINT_PROPERTY = "lakehook.fingerprint"

CREATE = "create"
REPLACE = "replace"
DROP = "drop"

DEFAULT_WORKERS = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SyncAction:
    """One step of a sync plan: ``create``, ``replace`` or ``drop`` one table."""

    kind: str
    table: str
    definition: TableDef | None  # None for drop
    reason: str


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: the actions run and the tables that failed (table, message)."""

    schema: str
    actions: tuple[SyncAction, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


def desired_tables_from_manifests(
    repo: str, ref: str, schema: str, manifests: Mapping[str, TableManifest]
) -> dict[str, TableDef]:
    """The table definitions a ref's schema must hold (contract §7).

    Args:
        repo: the lakeFS repository.
        ref: the branch or tag whose data the tables read.
        schema: the ref's Hive schema.
        manifests: table -> manifest at the ref's head.

    Returns:
        table -> external Parquet table at ``s3a://<repo>/<ref>/tables/<table>/``.
    """
    return {
        table: TableDef(
            schema=schema,
            name=table,
            location=table_location(repo, ref, table),
            columns=tuple(Column(c.name, c.type, c.label) for c in manifest.columns),
            properties={
                SOURCE_COMMIT_PROPERTY: manifest.source_commit,
                FINGERPRINT_PROPERTY: manifest.fingerprint,
            },
        )
        for table, manifest in sorted(manifests.items())
    }


def differences(desired: TableDef, actual: TableDef) -> list[str]:
    """What makes ``actual`` differ from ``desired``: columns, types, location, fingerprint.

    Column comments and other properties do not count (labels change the fingerprint anyway).
    """
    out = []
    want = [(c.name.lower(), c.type.lower().replace(" ", "")) for c in desired.columns]
    have = [(c.name.lower(), c.type.lower().replace(" ", "")) for c in actual.columns]
    if [n for n, _ in want] != [n for n, _ in have]:
        out.append(f"columns {[n for n, _ in have]} instead of {[n for n, _ in want]}")
    else:
        out += [
            f"column {n}: type {h} instead of {w}"
            for (n, w), (_, h) in zip(want, have, strict=True)
            if w != h
        ]
    if normalize_location(desired.location) != normalize_location(actual.location):
        out.append(f"location {actual.location} instead of {desired.location}")
    fingerprint = desired.properties.get(FINGERPRINT_PROPERTY)
    if fingerprint is not None and actual.properties.get(FINGERPRINT_PROPERTY) != fingerprint:
        found = actual.properties.get(FINGERPRINT_PROPERTY) or "none"
        out.append(f"fingerprint {found[:12]} instead of {fingerprint[:12]}")
    return out


def plan_sync(
    desired: Mapping[str, TableDef], actual: Mapping[str, TableDef | None]
) -> list[SyncAction]:
    """The actions that turn ``actual`` into ``desired``: drops, then replaces, then creates.

    Args:
        desired: table -> definition it must have.
        actual: table -> definition it has (``None``: listed but unreadable, so recreate).

    Returns:
        The actions, sorted by table within each kind; empty when nothing differs.
    """
    drops, replaces, creates = [], [], []
    for table in sorted(set(actual) - set(desired)):
        drops.append(SyncAction(DROP, table, None, "no manifest at the head"))
    for table in sorted(desired):
        want, have = desired[table], actual.get(table)
        if have is None:
            why = "missing" if table not in actual else "unreadable"
            creates.append(SyncAction(CREATE, table, want, why))
            continue
        diff = differences(want, have)
        if diff:
            replaces.append(SyncAction(REPLACE, table, want, "; ".join(diff)))
    return drops + replaces + creates


def parallel_map(func: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[func(i) for i in items]`` on up to ``workers`` threads, results in input order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [func(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(func, items))


def read_tables(
    metastore: Metastore, schema: str, workers: int = DEFAULT_WORKERS
) -> dict[str, TableDef | None]:
    """Every table of ``schema`` and its definition (``None`` when it cannot be read)."""
    names = metastore.list_tables(schema)

    def get(name: str) -> TableDef | None:
        try:
            return metastore.get_table(schema, name)
        except TransientError:
            raise
        except LakehookError:
            return None

    return dict(zip(names, parallel_map(get, names, workers), strict=True))


def execute(
    metastore: Metastore,
    schema: str,
    plan: list[SyncAction],
    workers: int = DEFAULT_WORKERS,
    done: Callable[[str], None] | None = None,
) -> SyncResult:
    """Run ``plan``. Transient errors propagate; other per-table errors are collected.

    Every name, type and location is checked (``ddl``) before the adapter sees it: an unsafe
    definition fails its table only, and nothing of it is registered.
    The job's fence is checked before each change (the pool's threads do not inherit it).
    """
    guard = fence.current()

    def run(action: SyncAction) -> tuple[str, str] | None:
        guard.check()
        try:
            if action.kind == DROP:
                metastore.drop_table(ddl.identifier(schema, "schema"), ddl.identifier(action.table))
            else:
                assert action.definition is not None
                metastore.create_table(ddl.checked(action.definition))
        except TransientError:
            raise
        except LakehookError as err:
            return action.table, f"{action.kind} failed: {err.message}"
        faults.reached("after-metastore-change")
        if done is not None and action.kind != DROP:
            done(action.table)
        return None

    failures = [f for f in parallel_map(run, plan, workers) if f is not None]
    return SyncResult(schema, tuple(plan), tuple(failures))


def sync_ref(
    metastore: Metastore,
    schema: str,
    desired_tables: Mapping[str, TableDef],
    workers: int = DEFAULT_WORKERS,
    done: Callable[[str], None] | None = None,
) -> SyncResult:
    """Make ``schema`` hold exactly ``desired_tables``; idempotent.

    Creates the schema when missing, drops tables without a manifest, replaces tables whose
    columns, types, location or fingerprint differ, creates missing ones. ``done(table)`` is
    called (on the pool's thread) as soon as a table has been created or replaced.

    Raises:
        ServiceUnavailable: the metastore or engine did not answer.
    """
    metastore.create_schema(schema)
    actual = read_tables(metastore, schema, workers)
    return execute(metastore, schema, plan_sync(desired_tables, actual), workers, done)


def rewrite_for_ref(table: TableDef, schema: str, repo: str, ref: str) -> TableDef:
    """``table`` moved to ``schema`` and pointed at ``ref``'s copy of its data."""
    return replace(table, schema=schema, location=table_location(repo, ref, table.name))


def copy_schema(
    metastore: Metastore,
    source_schema: str,
    target_schema: str,
    repo: str,
    target_ref: str,
    workers: int = DEFAULT_WORKERS,
) -> SyncResult:
    """Give ``target_schema`` the tables of ``source_schema``, locations rewritten to ``target_ref``.

    For post-create-branch: no reprocessing, reads only table definitions. The caller must
    then verify the result against the new ref's manifests (contract §7: a ref's tables are
    those whose manifests are at its head) and ``sync_ref`` when they differ.

    Args:
        metastore: the metastore adapter.
        source_schema: the schema of the ref the branch was created from.
        target_schema: the new branch's schema.
        repo: the lakeFS repository.
        target_ref: the new branch.
        workers: parallel metastore calls.

    Returns:
        The actions run on ``target_schema``.

    Raises:
        NotFound: ``source_schema`` does not exist.
        ServiceUnavailable: the metastore or engine did not answer.
    """
    source = read_tables(metastore, source_schema, workers)
    desired = {
        name: rewrite_for_ref(table, target_schema, repo, target_ref)
        for name, table in source.items()
        if table is not None
    }
    metastore.create_schema(target_schema)
    existing = metastore.list_tables(target_schema)
    actual = read_tables(metastore, target_schema, workers) if existing else {}
    return execute(metastore, target_schema, plan_sync(desired, actual), workers)
