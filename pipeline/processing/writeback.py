"""Write-back: outputs reach the user's branch through a lakehook working branch.

1. A working branch ``_lakehook-<branch>-<source[:12]>`` is created from the processed commit
   (never from the user's branch, whose uncommitted changes must not be swept in).
2. New Parquet files and manifests are uploaded there, stale files and removed tables deleted,
   and one commit is made with ``lakehook.origin=lakehook`` and ``lakehook.source_commit``.
3. The working branch is merged into the user's branch with the same metadata, then deleted.

Every manifest is sealed (file fingerprints + signature) and both commits are signed by
``pipeline.provenance``; the merge is recorded in the job database right before lakeFS is
asked for it, so the pre-merge gate knows it for lakehook's own. Objects the plan discards
(files under ``tables/`` no trusted manifest lists, manifests lakehook does not trust) are
deleted on the working branch first.

A dirty user branch refuses the merge: the outputs wait, committed, on the working branch and
the branch is ``pending``; the next attempt finds them (``BranchPlan.ready_branch``) and only
merges. A crash before the commit leaves nothing visible; the retry starts the branch afresh.

Every step can be repeated after a crash, deciding from what lakeFS shows, never from what the
job remembers: a working-branch commit already made is reused (``ready_branch``); a merge
already made is recognised in the destination's history (a lakehook commit whose second parent
is the working branch's head, ``find_merge``) and counts as done; a working branch already gone
counts as deleted. Before each write the job's fence is checked (``lakehook.fence``), so a
worker that lost its job writes nothing more.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakehook import faults
from lakehook.errors import NotFound, RefMoved, TerminalError
from lakehook.fence import UNFENCED, Fence
from pipeline import steps
from pipeline.model import SOURCE_COMMIT_KEY, TableManifest, TableRun
from pipeline.ports import LakeFS, ObjectInfo
from pipeline.processing.plan import BranchPlan, read_manifests
from pipeline.processing.table import local_dir, table_prefix
from pipeline.provenance import Provenance

UPLOADS = 4  # Parquet files uploaded at the same time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteBack:
    """What the write-back did."""

    output_commit: str | None  # the merge commit on the user's branch (None: nothing changed)
    manifests: Mapping[str, TableManifest]  # the manifests the branch holds afterwards
    pending_reason: str = ""
    written: tuple[str, ...] = ()  # objects uploaded
    deleted: tuple[str, ...] = ()  # objects deleted
    warnings: tuple[str, ...] = ()
    errors: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def resulting_manifests(plan: BranchPlan, runs: Sequence[TableRun]) -> dict[str, TableManifest]:
    """Manifests after the write-back: new ones replace, failed keep the old, removed go. Pure."""
    out = {t: m for t, m in plan.current.items() if t not in plan.removed}
    for run in runs:
        if run.manifest is not None:
            out[run.table] = run.manifest
    return dict(sorted(out.items()))


MERGE_SEARCH_DEPTH = 100  # destination commits searched for a merge already made


def find_merge(
    lakefs: LakeFS,
    repo: str,
    branch: str,
    work_head: str,
    source: str,
    provenance: Provenance,
) -> str | None:
    """The lakehook merge of ``work_head`` into ``branch`` for ``source``, if already made.

    Recognised by the destination's history: lakehook's own signed commit
    (``Provenance.is_lakehook_commit``) for this source commit whose parents include the
    working branch's head.
    """
    for commit in lakefs.log(repo, branch, limit=MERGE_SEARCH_DEPTH):
        if (
            work_head in commit.parents[1:]
            and commit.metadata.get(SOURCE_COMMIT_KEY) == source
            and provenance.is_lakehook_commit(repo, commit)
        ):
            return commit.id
    return None


def delete_working_branch(lakefs: LakeFS, repo: str, work: str, fence: Fence = UNFENCED) -> None:
    """Delete a working branch; one already gone is as good as deleted."""
    fence.check()
    with contextlib.suppress(NotFound):
        lakefs.delete_branch(repo, work)


def write_back(
    lakefs: LakeFS,
    plan: BranchPlan,
    runs: Sequence[TableRun],
    scratch: Path,
    provenance: Provenance,
    fence: Fence = UNFENCED,
) -> WriteBack:
    errors = [
        dict(r.error_detail or {"table": r.table, "message": r.error}) for r in runs if r.error
    ]
    repo, _branch = plan.repository, plan.branch
    if plan.ready_branch is not None:
        manifests = read_manifests(lakefs, repo, plan.ready_branch, provenance)
        with steps.step(steps.COMMIT_MERGE):
            return _merge(
                lakefs, plan, plan.ready_branch, manifests, (), (), errors, provenance, fence
            )
    manifests = resulting_manifests(plan, runs)
    done = [r for r in runs if r.manifest is not None]
    work = plan.working_branch
    in_place = any(r.in_place for r in runs)  # the Trino engine wrote on the working branch
    if not done and not plan.removed and not plan.discard:
        if in_place:
            delete_working_branch(lakefs, repo, work, fence)
        return WriteBack(None, manifests, errors=tuple(errors))

    if not in_place:
        delete_working_branch(lakefs, repo, work, fence)  # a stale attempt that never committed
        fence.check()
        lakefs.create_branch(repo, work, plan.head_commit)
    written: list[str] = []
    deleted: list[str] = list(plan.discard)
    for path in plan.discard:
        with contextlib.suppress(NotFound):
            lakefs.delete_object(repo, work, path)

    def put(run: TableRun, path: str) -> ObjectInfo:
        if run.in_place:  # already there: fingerprint it where it is
            info = lakefs.stat_object(repo, work, path)
            if info is None:
                raise NotFound(f"{path} is missing on {work}")
            return info
        with (local_dir(scratch, run.table) / Path(path).name).open("rb") as data:
            return lakefs.upload_object(repo, work, path, data)

    # every table's Parquet files at once (each a PUT lakeFS answers on its own); the
    # manifests, which fingerprint them, follow table by table
    files = [(run, path) for run in done for path in (run.manifest.files if run.manifest else ())]
    with ThreadPoolExecutor(UPLOADS, thread_name_prefix="upload") as pool:
        infos = list(pool.map(lambda item: put(*item), files))
    by_path = {path: info for (_, path), info in zip(files, infos, strict=True)}
    for run in done:
        assert run.manifest is not None
        keep = set(run.manifest.files)
        uploaded = {path: by_path[path] for path in run.manifest.files}
        written += run.manifest.files
        sealed = provenance.seal(run.manifest, uploaded)
        manifests[run.table] = sealed
        for obj in lakefs.list_objects(repo, work, table_prefix(run.table)):
            if obj.path not in keep:
                lakefs.delete_object(repo, work, obj.path)
                deleted.append(obj.path)
        lakefs.upload_object(repo, work, sealed.path, sealed.to_json())
        written.append(sealed.path)
    for table in plan.removed:
        for obj in lakefs.list_objects(repo, work, table_prefix(table)):
            lakefs.delete_object(repo, work, obj.path)
            deleted.append(obj.path)
        path = plan.current[table].path
        with contextlib.suppress(NotFound):
            lakefs.delete_object(repo, work, path)
        deleted.append(path)
    tables = sorted({r.table for r in done} | set(plan.removed))
    faults.reached("after-upload")
    if not lakefs.uncommitted(repo, work):
        delete_working_branch(lakefs, repo, work, fence)
        return WriteBack(None, manifests, written=tuple(written), errors=tuple(errors))
    fence.check()
    with steps.step(steps.COMMIT_MERGE):
        lakefs.commit(
            repo,
            work,
            f"lakehook: {len(tables)} table(s) from {plan.source_commit[:12]}: {', '.join(tables)}",
            provenance.commit_metadata(
                repo, plan.branch, plan.source_commit, plan.head_commit, manifests, tables
            ),
        )
        faults.reached("after-working-commit")
        return _merge(lakefs, plan, work, manifests, written, deleted, errors, provenance, fence)


def _merge(
    lakefs: LakeFS,
    plan: BranchPlan,
    work: str,
    manifests: Mapping[str, TableManifest],
    written: Sequence[str],
    deleted: Sequence[str],
    errors: list[dict[str, Any]],
    provenance: Provenance,
    fence: Fence = UNFENCED,
) -> WriteBack:
    repo, branch = plan.repository, plan.branch
    tables = sorted(manifests)
    work_head = lakefs.branch_head(repo, work)
    merged = find_merge(lakefs, repo, branch, work_head, plan.source_commit, provenance)
    if merged is not None:  # an interrupted attempt merged already: finish its clean-up
        log.info("outputs of %s were merged already (%s)", plan.source_commit[:12], merged[:12])
        delete_working_branch(lakefs, repo, work, fence)
        faults.reached("after-working-branch-delete")
        return WriteBack(
            merged, manifests, "", tuple(written), tuple(deleted), errors=tuple(errors)
        )
    metadata = provenance.commit_metadata(
        repo, branch, plan.source_commit, work_head, manifests, tables
    )
    fence.check()
    provenance.record_merge(repo, branch, work_head)  # before lakeFS runs the pre-merge gate
    try:
        merged = lakefs.merge(
            repo, work, branch, f"lakehook: outputs of {plan.source_commit[:12]}", metadata
        )
    except RefMoved as err:
        if lakefs.uncommitted(repo, branch):
            reason = (
                f"{branch} has uncommitted changes; lakehook's outputs wait on {work} and are "
                "merged as soon as the branch is committed or reset"
            )
            log.info("write-back pending: %s", reason)
            return WriteBack(
                None, manifests, reason, tuple(written), tuple(deleted), errors=tuple(errors)
            )
        raise err
    except TerminalError as err:
        found = find_merge(lakefs, repo, branch, work_head, plan.source_commit, provenance)
        if found is not None:  # made by a concurrent attempt (a worker that lost its lease)
            delete_working_branch(lakefs, repo, work, fence)
            return WriteBack(
                found, manifests, "", tuple(written), tuple(deleted), errors=tuple(errors)
            )
        errors.append(
            {
                "stage": "write-back",
                "message": f"merging {work} into {branch} failed: {err}",
                "hint": f"resolve the conflict under tables/ or _lakehook/ on {branch}, "
                "then run lakehook reconcile",
            }
        )
        return WriteBack(
            None, plan.current, "", tuple(written), tuple(deleted), errors=tuple(errors)
        )
    faults.reached("after-merge", branch)
    delete_working_branch(lakefs, repo, work, fence)
    faults.reached("after-working-branch-delete")
    return WriteBack(merged, manifests, "", tuple(written), tuple(deleted), errors=tuple(errors))
