"""Sync a ref's schema, verify it, and repair what a re-sync can repair.

The metastore is a cache of the manifests: when verification finds it drifted (a table dropped
or altered behind lakehook's back, a missed event), one more sync re-derives it from the
manifests and the result is verified again. Problems that a sync cannot fix (Parquet files
that disagree with their manifest, a failing probe) are returned, never hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline import steps
from pipeline.metastore.sync import (
    DEFAULT_WORKERS,
    SyncResult,
    desired_tables_from_manifests,
    sync_ref,
)
from pipeline.metastore.verify import (
    METASTORE_PROBLEMS,
    Problem,
    probe_identity,
    table_checks,
    verify_ref,
)
from pipeline.model import TableManifest
from pipeline.ports import LakeFS, Metastore


def sync_and_verify(
    metastore: Metastore,
    lakefs: LakeFS | None,
    repo: str,
    ref: str,
    schema: str,
    manifests: Mapping[str, TableManifest],
    *,
    probe: bool = True,
    workers: int = DEFAULT_WORKERS,
    probed: Mapping[str, str] | None = None,
) -> tuple[SyncResult, list[Problem]]:
    """Sync ``schema`` to ``manifests``, verify, and re-sync once if the metastore drifted.

    Args:
        metastore: the metastore adapter.
        lakefs: where Parquet footers are read (``None``: skip that check).
        repo: the lakeFS repository.
        ref: the branch or tag.
        schema: its Hive schema.
        manifests: table -> manifest at the ref's head.
        probe: run the probe query per table.
        workers: parallel calls.
        probed: table -> the ``probe_identity`` last probed without a problem at this schema
            (the ref's previous status); a table whose identity is still that, and whose
            definition this sync did not have to write, is not probed again. A repair (the
            metastore had drifted) probes every table.

    Returns:
        The last sync's result and the problems left after it (empty: synced).

    Raises:
        ServiceUnavailable: a service did not answer.
    """
    desired = desired_tables_from_manifests(repo, ref, schema, manifests)
    known = probed or {}
    same = frozenset(
        t for t in manifests if known.get(t) == probe_identity(desired[t], manifests[t])
    )
    # a table's footers and probe start as soon as its definition is written, on their own
    # pool, while the other tables are still being synced (the probes are most of the time)
    early: dict[str, Future[tuple[list[Problem], list[Problem]]]] = {}
    with ThreadPoolExecutor(max(workers, 1), thread_name_prefix="verify") as pool:

        def start(table: str, written: bool = False) -> None:
            if table in manifests and table not in early:
                early[table] = pool.submit(
                    table_checks,
                    metastore,
                    lakefs,
                    repo,
                    ref,
                    schema,
                    manifests[table],
                    probe and (written or table not in same),
                )

        with steps.step(steps.METASTORE):
            result = sync_ref(
                metastore, schema, desired, workers, done=lambda t: start(t, written=True)
            )
        for table in sorted(manifests):  # the tables the sync left as they were
            start(table)
        with steps.step(steps.VERIFICATION):
            problems = verify_ref(
                metastore,
                lakefs,
                repo,
                ref,
                schema,
                manifests,
                probe=probe,
                workers=workers,
                early=early,
            )
    if any(p.what in METASTORE_PROBLEMS for p in problems):
        with steps.step(steps.METASTORE):
            result = sync_ref(metastore, schema, desired, workers)
        with steps.step(steps.VERIFICATION):
            problems = verify_ref(
                metastore, lakefs, repo, ref, schema, manifests, probe=probe, workers=workers
            )
    return result, problems
