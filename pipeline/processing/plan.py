"""What to do for one branch head: the plan. ``make_plan`` is pure; ``plan_branch`` reads.

A dataset is (re)processed only when its fingerprint changed: the raw object's checksum, its
rows in the contents file, the key config, ``invalid_values`` and the processing version. A
table whose raw CSV is gone is removed. The plan also finds a lakehook working branch that
already holds committed outputs for this source commit (a crash or a dirty branch interrupted
the merge): then nothing is recomputed, only merged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lakehook.errors import InputError, NotFound
from pipeline import naming
from pipeline.model import PROCESSING_VERSION, SOURCE_COMMIT_KEY, TableManifest
from pipeline.ports import LakeFS, ObjectInfo
from pipeline.processing.config import StudyConfig, parse_config, read_config_bytes
from pipeline.processing.contents import MAX_COLUMNS, Contents, DatasetContents, parse_contents
from pipeline.provenance import (
    BRANCH_KEY,
    MANIFESTS_KEY,
    WORKING_PREFIX,
    Provenance,
    describe_rejection,
    manifests_digest,
    working_branch,
)

__all__ = ["WORKING_PREFIX", "working_branch"]


def fingerprint(
    dataset: str,
    raw_checksum: str,
    contents: DatasetContents | None,
    config: StudyConfig,
) -> str:
    text = json.dumps(
        {
            "dataset": dataset,
            "raw": raw_checksum,
            "contents": contents.fingerprint if contents else None,
            "keys": config.keys_fingerprint,
            "invalid_values": config.invalid_values,
            "processing_version": PROCESSING_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TableTask:
    table: str
    dataset: str
    raw_path: str
    raw_checksum: str
    contents: DatasetContents | None
    fingerprint: str
    raw_size: int = 0


@dataclass(frozen=True)
class BranchPlan:
    repository: str
    branch: str
    head_commit: str
    source_commit: str
    config: StudyConfig
    contents_path: str
    contents_fingerprint: str = ""
    tasks: tuple[TableTask, ...] = ()
    current: Mapping[str, TableManifest] = field(default_factory=dict)  # manifests at the head
    removed: tuple[str, ...] = ()
    errors: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    ready_branch: str | None = None
    # objects the write-back deletes: files under tables/ no trusted manifest lists, and
    # manifests lakehook does not trust (contract §8 v1.1 "Signed outputs")
    discard: tuple[str, ...] = ()

    @property
    def working_branch(self) -> str:
        return working_branch(self.branch, self.source_commit)


def _error(err: InputError, **where: str) -> dict[str, Any]:
    return {**where, **err.as_dict()}


def make_plan(
    repository: str,
    branch: str,
    head_commit: str,
    source_commit: str,
    config: StudyConfig | InputError,
    contents: Contents | InputError | None,
    raw_objects: Sequence[ObjectInfo],
    manifests: Mapping[str, TableManifest],
    ready_branch: str | None = None,
    rejected: Mapping[str, tuple[str, str]] | None = None,
    stray: Sequence[str] = (),
    max_columns: int = MAX_COLUMNS,
) -> BranchPlan:
    """Decide which datasets to process and which tables to remove. Pure.

    ``manifests`` are the trusted ones only; ``rejected`` (table -> (path, why)) are manifests
    lakehook does not trust: their tables count as never processed (rebuilt from raw), and
    the status says so. ``stray`` files and rejected manifests are deleted by the write-back.
    """
    rejected = dict(rejected or {})
    discard = tuple(sorted({*stray, *(path for path, _ in rejected.values())}))
    plan = _make_plan(
        repository,
        branch,
        head_commit,
        source_commit,
        config,
        contents,
        raw_objects,
        manifests,
        ready_branch,
        max_columns,
    )
    if not rejected and not discard:
        return plan
    raw_of = {t.table: t.raw_path for t in plan.tasks}
    warnings = [
        describe_rejection(path, why, raw_of.get(table))
        for table, (path, why) in sorted(rejected.items())
    ]
    return replace(plan, warnings=(*plan.warnings, *warnings), discard=discard)


def _make_plan(
    repository: str,
    branch: str,
    head_commit: str,
    source_commit: str,
    config: StudyConfig | InputError,
    contents: Contents | InputError | None,
    raw_objects: Sequence[ObjectInfo],
    manifests: Mapping[str, TableManifest],
    ready_branch: str | None,
    max_columns: int,
) -> BranchPlan:
    if isinstance(config, InputError):
        return BranchPlan(
            repository,
            branch,
            head_commit,
            source_commit,
            StudyConfig(),
            "",
            current=manifests,
            errors=(_error(config, stage="config"),),
        )
    base = BranchPlan(
        repository,
        branch,
        head_commit,
        source_commit,
        config,
        config.contents,
        current=manifests,
        warnings=config.warnings,
    )
    if ready_branch is not None:
        return replace(base, ready_branch=ready_branch)
    if isinstance(contents, InputError):
        return replace(base, errors=(_error(contents, stage="contents"),))
    errors: list[dict[str, Any]] = []
    warnings = list(config.warnings)
    datasets: dict[str, list[ObjectInfo]] = {}
    for obj in raw_objects:
        rest = obj.path[len(config.raw) :]
        if "/" in rest or not rest.lower().endswith(".csv") or obj.path == config.contents:
            continue
        table = naming.table_name(rest[:-4])
        if not naming.is_meaningful(table):
            errors.append(
                {
                    "table": table,
                    "file": obj.path,
                    "message": f"the file name {rest!r} gives no table name (a table name needs "
                    "a letter or digit: the stem, lower-cased, [a-z0-9_] kept)",
                    "hint": "rename the file, e.g. raw/dm.csv",
                }
            )
            continue
        datasets.setdefault(table, []).append(obj)
    if contents is None:
        warnings.append(f"{config.contents} not found: every dataset is processed as varchar")
    tasks: list[TableTask] = []
    failed_tables: set[str] = set()
    for table, objs in sorted(datasets.items()):
        if len(objs) > 1:
            for obj in objs:
                errors.append(
                    {
                        "table": table,
                        "file": obj.path,
                        "message": f"{', '.join(o.path for o in objs)} all become table {table!r}",
                        "hint": "rename one of the files",
                    }
                )
            failed_tables.add(table)
            continue
        obj = objs[0]
        dataset = obj.path[len(config.raw) : -4]
        declared = contents.for_dataset(dataset) if contents else None
        problems = declared.errors(config.contents, max_columns) if declared else []
        if problems:
            errors += [_error(p, table=table, dataset=dataset) for p in problems]
            failed_tables.add(table)
            continue
        print_ = fingerprint(dataset, obj.checksum, declared, config)
        existing = manifests.get(table)
        if existing is not None and existing.fingerprint == print_:
            continue
        tasks.append(TableTask(table, dataset, obj.path, obj.checksum, declared, print_, obj.size))
    if contents is not None:
        known = [o.path[len(config.raw) : -4] for objs in datasets.values() for o in objs]
        for name in contents.unknown_datasets(known):  # a warning (contract §5 v1.1)
            first = contents.datasets[name.lower()].columns[0].line
            warnings.append(
                f"{config.contents}, line {first}: the contents declare dataset {name!r} but "
                f"{config.raw}{name}.csv does not exist yet (nothing to process for it)"
            )
        warnings += key_family_warnings(contents, config.keys)
    removed = tuple(sorted(t for t in manifests if t not in datasets))
    return replace(
        base, tasks=tuple(tasks), removed=removed, errors=tuple(errors), warnings=tuple(warnings)
    )


def key_family_warnings(contents: Contents, keys: Mapping[str, Sequence[str]]) -> list[str]:
    """Key columns declared with different type families in different datasets (contract §6)."""
    out = []
    for key, natural in keys.items():
        for column in natural:
            families: dict[str, list[str]] = {}
            for ds in contents.datasets.values():
                for col in ds.columns:
                    if col.name.lower() == column.lower() and col.ctype is not None:
                        families.setdefault(col.ctype.family, []).append(ds.dataset)
            if len(families) > 1:
                detail = "; ".join(
                    f"{f}: {', '.join(sorted(d))}" for f, d in sorted(families.items())
                )
                out.append(
                    f"key {key}: column {column} is declared with different types ({detail}); "
                    "its keys will not agree across these datasets"
                )
    return out


def read_manifests(
    lakefs: LakeFS, repo: str, ref: str, provenance: Provenance
) -> dict[str, TableManifest]:
    """Every manifest at ``ref`` that lakehook trusts: table -> manifest.

    Only manifests signed by lakehook whose Parquet files still match their fingerprints
    count (``Provenance.check_manifests``); any other is treated as absent.
    """
    return provenance.check_manifests(lakefs, repo, ref).trusted


def plan_branch(
    lakefs: LakeFS, repo: str, branch: str, provenance: Provenance, max_columns: int = MAX_COLUMNS
) -> BranchPlan:
    """Read the head of ``branch`` and plan its processing."""
    head = lakefs.branch_head(repo, branch)
    commit = lakefs.get_commit(repo, head)
    source = provenance.source_commit_at(lakefs, repo, commit)
    check = provenance.check_manifests(lakefs, repo, head)
    manifests = check.trusted
    ready = _ready_branch(lakefs, repo, branch, source, provenance)
    try:
        config: StudyConfig | InputError = parse_config(read_config_bytes(lakefs, repo, head))
    except InputError as err:
        config = err
    if isinstance(config, InputError):
        return make_plan(
            repo,
            branch,
            head,
            source,
            config,
            None,
            [],
            manifests,
            None,
            check.rejected,
            check.stray,
        )
    contents: Contents | InputError | None = None
    if lakefs.stat_object(repo, head, config.contents) is not None:
        try:
            contents = parse_contents(
                lakefs.read_object(repo, head, config.contents), config.contents, max_columns
            )
        except InputError as err:
            contents = err
    raw = lakefs.list_objects(repo, head, config.raw)
    return make_plan(
        repo,
        branch,
        head,
        source,
        config,
        contents,
        raw,
        manifests,
        ready,
        check.rejected,
        check.stray,
        max_columns,
    )


def _ready_branch(
    lakefs: LakeFS, repo: str, branch: str, source: str, provenance: Provenance
) -> str | None:
    """The working branch holding lakehook's committed outputs of ``source``, if any.

    Only when its head is lakehook's own commit (``Provenance.is_lakehook_commit``) for this
    branch and source, and the manifests there are exactly the trusted ones it signed: a
    branch a person made under that name is never merged as lakehook's.
    """
    name = working_branch(branch, source)
    try:
        head = lakefs.branch_head(repo, name)
    except NotFound:
        return None
    commit = lakefs.get_commit(repo, head)
    if not (
        provenance.is_lakehook_commit(repo, commit)
        and commit.metadata.get(SOURCE_COMMIT_KEY) == source
        and commit.metadata.get(BRANCH_KEY) == branch
    ):
        return None
    check = provenance.check_manifests(lakefs, repo, head)
    if check.rejected or manifests_digest(check.trusted) != commit.metadata.get(MANIFESTS_KEY):
        return None
    return name
