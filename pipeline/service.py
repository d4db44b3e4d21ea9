"""``BranchService``: the real ``Processor`` — makes one ref's derived state right.

For a branch: plan from its head, process the changed datasets (each inside its lineage run),
write the outputs back through a lakehook working branch, sync the branch's Hive schema to the
manifests now at the head, verify metastore, data and declaration agree, classify drift, and
record the status. For branch creation: copy the source's schema (fast), then the same sync.
Every step is idempotent, so a duplicated, late or replayed job converges to the same end
state.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from lakehook import faults, fence
from lakehook.errors import ConfigError, InvalidEvent, NotFound
from lakehook.settings import Settings
from pipeline import drift as drift_rules
from pipeline import gate as gate_rules
from pipeline import naming
from pipeline import steps as job_steps
from pipeline.drift import KeyConfig
from pipeline.metastore.repair import sync_and_verify
from pipeline.metastore.sync import SyncResult, copy_schema
from pipeline.metastore.verify import Problem, probe_identities, verify_ref
from pipeline.model import (
    Drift,
    GateDecision,
    RefStatus,
    RemovedTable,
    TableManifest,
    TableRun,
    TableStatus,
)
from pipeline.ports import LakeFS, Metastore, StatusStore
from pipeline.processing.config import StudyConfig, load_config
from pipeline.processing.engines import process_tasks
from pipeline.processing.plan import BranchPlan, TableTask, plan_branch, read_manifests
from pipeline.processing.trino_engine import TrinoEngine
from pipeline.processing.writeback import write_back
from pipeline.provenance import Provenance, is_working_branch_name

log = logging.getLogger(__name__)
T = TypeVar("T")

BRANCH = "branch"
TAG = "tag"


@dataclass(frozen=True)
class _Baseline:
    """What a ref's status drift is measured against, and the result."""

    base: str  # the commit whose manifests and key config are the "before"
    drifts: dict[str, Drift]
    removed: tuple[RemovedTable, ...]
    last_synced: str | None  # the previous synced state's head (None: never synced)
    last_synced_base: str | None  # the baseline that synced state was measured against


@dataclass
class BranchService:
    """The ``pipeline.ports.Processor`` used by the server."""

    settings: Settings
    lakefs: LakeFS
    metastore: Metastore
    store: StatusStore
    recorder: Any = None  # pipeline.lineage.recorder.LineageRecorder, or None
    workdir: Path | None = None
    # signs and verifies what lakehook writes; None: from settings (key in the state dir)
    provenance: Provenance = field(default=None, repr=False)  # type: ignore[assignment]
    trino_engine: TrinoEngine | None = None  # built on first use when a dataset needs it
    # called before each dataset is processed with (raw path, head, source commit): the worker
    # process records it (a worker that dies names the file) and refuses a quarantined head
    before_dataset: Callable[[str, str, str], None] | None = None
    _manifest_cache: OrderedDict[tuple[str, str], dict[str, TableManifest]] = field(
        default_factory=OrderedDict, repr=False
    )
    _config_cache: OrderedDict[tuple[str, str], StudyConfig] = field(
        default_factory=OrderedDict, repr=False
    )
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.provenance is None:
            self.provenance = Provenance.from_settings(self.settings, merges=self.store)
        elif self.provenance.merges is None:
            self.provenance = replace(self.provenance, merges=self.store)

    # ---- naming -------------------------------------------------------------------------------
    def schema_for(self, repo: str, ref: str, ref_type: str = BRANCH) -> str:
        problem = naming.ref_problem(ref)
        if problem is not None:  # refused, never mapped to a location another ref owns
            message = f"{ref_type} {ref!r}: {problem}"
            self.store.put_status(
                RefStatus(
                    repo,
                    ref,
                    ref_type,
                    "",
                    "",
                    None,
                    "failed",
                    errors=({"message": message, "hint": "rename the branch or tag"},),
                    reason=message,
                    updated_at=time.time(),
                )
            )
            raise InvalidEvent(f"repository {repo!r}: {message}")
        name = naming.schema_name(repo, ref, self.store.schema_mapping(), ref_type)
        # the store claims the name atomically: another ref may have taken it meanwhile
        return self.store.save_schema_name(repo, ref_type, ref, name)

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix="lakehook-") as tmp:
            yield Path(tmp)

    # ---- Processor ----------------------------------------------------------------------------
    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        guard = fence.current()
        schema = self.schema_for(repo, branch)
        with job_steps.step(job_steps.LAKEFS_READS):
            plan = plan_branch(
                self.lakefs, repo, branch, self.provenance, self.settings.max_columns
            )
        previous = self.store.get_status(repo, branch)
        keys = dict(plan.config.keys)

        with self._scratch() as scratch, contextlib.ExitStack() as lineage:
            parent = self._commit_run(lineage, repo, branch, plan)
            contexts = []
            for task in plan.tasks:
                contexts.append(self._table_run(lineage, parent, task, plan.contents_path, schema))
                faults.reached("after-lineage-start")
            with job_steps.step(job_steps.PROCESSING):
                runs = process_tasks(
                    self.lakefs,
                    plan,
                    scratch,
                    self.settings.trino_engine_threshold,
                    self._trino,
                    self.settings.max_columns,
                    before=lambda task: self._before(plan, task),
                )
            with job_steps.step(job_steps.UPLOAD):
                result = write_back(self.lakefs, plan, runs, scratch, self.provenance, guard)
            with job_steps.step(job_steps.LAKEFS_READS):
                baseline = self._baseline(repo, previous, plan.head_commit, result.manifests, keys)
            for ctx, run in zip(contexts, runs, strict=True):
                if ctx is not None:
                    ctx.finish(
                        replace(
                            run,
                            output_commit=result.output_commit,
                            schema=schema,
                            drift=baseline.drifts.get(run.table, Drift()),
                        )
                    )
        if not runs and not _finished(previous, plan.source_commit):
            output = result.output_commit or plan.head_commit
            self._complete_resumed(plan, result.manifests, schema, output)

        with job_steps.step(job_steps.LAKEFS_READS):
            head = self.lakefs.branch_head(repo, branch)
        errors: list[dict[str, Any]] = [dict(e) for e in (*plan.errors, *result.errors)]
        warnings = [*plan.warnings, *result.warnings]
        if result.pending_reason:
            status = self._status(
                repo,
                branch,
                BRANCH,
                schema,
                head,
                previous.source_commit if previous else None,
                "pending",
                result.manifests,
                baseline.drifts,
                previous,
                warnings,
                errors,
                reason=result.pending_reason,
                baseline=baseline,
            )
            guard.check()
            self.store.put_status(status)
            return status

        guard.check()
        sync, problems = sync_and_verify(
            self.metastore,
            self.lakefs,
            repo,
            branch,
            schema,
            result.manifests,
            probed=_probed(previous, schema),
        )
        faults.reached("after-verify")
        errors += [{"table": t, "message": m, "stage": "metastore"} for t, m in sync.failed]
        errors += [{**p.to_dict(), "stage": "verify"} for p in problems]
        verified = _verified(repo, branch, schema, result.manifests, sync, problems)
        state = "failed" if errors else "synced"
        reason = ""
        newer = self.provenance.source_commit_at(
            self.lakefs, repo, self.lakefs.get_commit(repo, head)
        )
        if newer != plan.source_commit and not errors:
            # a user commit landed while this one was processed (before lakehook's merge, or
            # after it): the head is not what was verified; the reconciler, or the commit's
            # own event, processes it next
            state = "pending"
            reason = f"commit {newer[:12]} arrived while {plan.source_commit[:12]} was processed"
        status = self._status(
            repo,
            branch,
            BRANCH,
            schema,
            head,
            plan.source_commit,
            state,
            result.manifests,
            baseline.drifts,
            previous,
            warnings,
            errors,
            reason=reason,
            baseline=baseline,
            verified=verified,
        )
        guard.check()
        self.store.put_status(status)
        return status

    def create_branch(self, repo: str, branch: str, source_ref: str) -> RefStatus:
        schema = self.schema_for(repo, branch)
        source_type = (
            TAG if any(t.name == source_ref for t in self.lakefs.list_tags(repo)) else BRANCH
        )
        source_schema = self.store.schema_mapping().get((repo, source_type, source_ref))
        if source_schema is not None:
            fence.current().check()
            with contextlib.suppress(NotFound), job_steps.step(job_steps.METASTORE):
                copy_schema(self.metastore, source_schema, schema, repo, branch)
        return self.sync_branch(repo, branch)

    def delete_branch(self, repo: str, branch: str) -> None:
        schema = self.store.schema_mapping().get((repo, BRANCH, branch))
        if schema is not None:
            fence.current().check()
            self.metastore.drop_schema(schema)
        fence.current().check()
        self.store.delete_status(repo, branch, BRANCH)

    def sync_tag(self, repo: str, tag: str) -> RefStatus:
        schema = self.schema_for(repo, tag, TAG)
        head = self.lakefs.resolve(repo, tag)
        check = self.provenance.check_manifests(self.lakefs, repo, head)
        manifests = check.trusted
        warnings = [
            f"{path} {why}; not registered in the tag's schema (a tag is never rewritten)"
            for path, why in sorted(check.rejected.values())
        ]
        commit = self.lakefs.get_commit(repo, head)
        source_commit = self.provenance.source_commit_at(self.lakefs, repo, commit)
        previous = self.store.get_status(repo, tag, TAG)
        sync, problems = sync_and_verify(
            self.metastore,
            self.lakefs,
            repo,
            tag,
            schema,
            manifests,
            probed=_probed(previous, schema),
        )
        errors: list[dict[str, Any]] = [
            {"table": t, "message": m, "stage": "metastore"} for t, m in sync.failed
        ]
        errors += [{**p.to_dict(), "stage": "verify"} for p in problems]
        status = self._status(
            repo,
            tag,
            TAG,
            schema,
            head,
            source_commit,
            "failed" if errors else "synced",
            manifests,
            {},
            None,
            warnings,
            errors,
            verified=_verified(repo, tag, schema, manifests, sync, problems),
            prior=previous,
        )
        fence.current().check()
        self.store.put_status(status)
        return status

    def delete_tag(self, repo: str, tag: str) -> None:
        schema = self.store.schema_mapping().get((repo, TAG, tag))
        if schema is not None:
            fence.current().check()
            self.metastore.drop_schema(schema)
        fence.current().check()
        self.store.delete_status(repo, tag, TAG)

    def metastore_problems(self, status: RefStatus) -> list[str]:
        if status.state != "synced" or not status.schema:
            return []
        manifests = self._manifests_at(status.repository, status.head_commit)
        problems = verify_ref(
            self.metastore,
            None,
            status.repository,
            status.ref,
            status.schema,
            manifests,
            probe=False,
        )
        return [f"{p.table}: {p.what}" for p in problems]

    def _manifests_at(self, repo: str, commit: str) -> dict[str, TableManifest]:
        """Manifests at a commit (immutable, so cached; the newest 256 commits)."""
        return _cached(
            self._manifest_cache,
            self._cache_lock,
            (repo, commit),
            lambda: read_manifests(self.lakefs, repo, commit, self.provenance),
        )

    def _config_at(self, repo: str, commit: str) -> StudyConfig:
        """``lakehook.yaml`` at a commit (immutable, so cached; an invalid one is not)."""
        return _cached(
            self._config_cache,
            self._cache_lock,
            (repo, commit),
            lambda: load_config(self.lakefs, repo, commit),
        )

    def gate(
        self, repo: str, source_ref: str, destination_branch: str, source_commit: str | None
    ) -> GateDecision:
        source_head = source_commit or self.lakefs.resolve(repo, source_ref)
        # lakehook's own merge only when lakehook recorded it before asking lakeFS (contract
        # §8 v1.1): never a branch name, a prefix or metadata a person could copy
        if self.provenance.is_lakehook_merge(repo, destination_branch, source_head):
            return GateDecision(True, ("lakehook's own merge",))
        destination_head = self.lakefs.branch_head(repo, destination_branch)
        # what a commit holds never changes: a merge retried, or the next one into the same
        # destination head, reads lakeFS for the refs only (docs/benchmarks.md, issue 16)
        destination_config = self._config_at(repo, destination_head)
        source_config = self._config_at(repo, source_head)
        source_status, unknown_commit = self._source_status(repo, source_ref, source_head)
        decision = gate_rules.decide(
            destination_branch=destination_branch,
            protected=destination_config.gate_protected,
            allow=destination_config.gate_allow,
            source_status=source_status,
            source_head=source_head,
            source_manifests=self._manifests_at(repo, source_head),
            destination_manifests=self._manifests_at(repo, destination_head),
            source_keys=source_config.keys,
            destination_keys=destination_config.keys,
            is_lakehook_merge=False,
        )
        if not decision.allowed and is_working_branch_name(source_ref):
            reserved = (
                f"{source_ref} is named like a lakehook working branch, but lakehook did not "
                "make this merge; lakehook never processes branches named _lakehook-*: "
                "create the branch under another name, commit, and merge that"
            )
            return GateDecision(False, (reserved, *decision.reasons))
        if not decision.allowed and unknown_commit:
            return GateDecision(False, (unknown_commit,))
        return decision

    def _source_status(
        self, repo: str, source_ref: str, source_head: str
    ) -> tuple[RefStatus | None, str]:
        """The recorded status the gate checks for a merge source given as branch, tag or
        commit id: the branch's, the tag's, or for a bare commit the synced status of a ref
        whose head it is. For a commit no ref stands for, ``(None, reason)``."""
        if any(b.name == source_ref for b in self.lakefs.list_branches(repo)):
            return self.store.get_status(repo, source_ref, BRANCH), ""
        if any(t.name == source_ref for t in self.lakefs.list_tags(repo)):
            return self.store.get_status(repo, source_ref, TAG), ""
        synced = sorted(
            (
                s
                for s in self.store.list_statuses(repo)
                if s.head_commit == source_head and s.state == "synced"
            ),
            key=lambda s: (s.ref_type != BRANCH, s.ref),
        )
        if synced:
            return synced[0], ""
        return None, (
            f"commit {source_head[:12]} is not the synced head of any branch or tag lakehook "
            f"knows in {repo}, so lakehook has not checked what it would bring; merge from a "
            f"branch or tag whose state is synced (`lakehook status --repo {repo}`)"
        )

    # ---- drift baseline (contract §9 v1.1, docs/metastore.md "Drift in the status") ----------
    def _state_at(self, repo: str, commit: str) -> tuple[dict[str, TableManifest], KeyConfig]:
        """Manifests and key config at a commit (immutable, so cached: ``_manifests_at``,
        ``_config_at``)."""
        try:
            keys = dict(self._config_at(repo, commit).keys)
        except ConfigError:  # an invalid lakehook.yaml was never a synced state's config
            keys = {}
        return self._manifests_at(repo, commit), keys

    def _baseline(
        self,
        repo: str,
        previous: RefStatus | None,
        head_before: str,
        manifests: Mapping[str, TableManifest],
        keys: KeyConfig,
    ) -> _Baseline:
        """Drift of ``manifests`` against the ref's previous synced state, whatever changed it."""
        last_synced = last_synced_base = None
        if previous is not None:
            last_synced = previous.last_synced_commit or (
                previous.head_commit if previous.state == "synced" else None
            )
            last_synced_base = previous.last_synced_drift_base
            if last_synced is None and previous.drift_base:
                head_before = previous.drift_base  # never synced yet: keep the first baseline
        unchanged = False
        if last_synced is not None:
            with contextlib.suppress(NotFound):
                synced_manifests, synced_keys = self._state_at(repo, last_synced)
                unchanged = drift_rules.same_state(synced_manifests, manifests, synced_keys, keys)
        base = drift_rules.drift_base(
            last_synced=last_synced,
            last_synced_base=last_synced_base,
            unchanged_since_synced=unchanged,
            first_base=head_before,
        )
        try:
            base_manifests, base_keys = self._state_at(repo, base)
        except NotFound:  # the baseline commit is gone (garbage-collected): measure from here
            base_manifests, base_keys = dict(manifests), keys
        drifts, removed = drift_rules.drift_against(
            base_manifests, manifests, base_keys=base_keys, keys=keys
        )
        return _Baseline(
            base=base,
            drifts=drifts,
            removed=tuple(RemovedTable(t, d) for t, d in removed.items()),
            last_synced=last_synced,
            last_synced_base=last_synced_base,
        )

    # ---- helpers ------------------------------------------------------------------------------
    def _before(self, plan: BranchPlan, task: TableTask) -> None:
        """Right before a dataset is processed here: tell the worker, then a test's fault point."""
        if self.before_dataset is not None:
            self.before_dataset(task.raw_path, plan.head_commit, plan.source_commit)
        faults.reached("before-dataset", task.dataset)

    def _complete_resumed(
        self,
        plan: BranchPlan,
        manifests: Mapping[str, TableManifest],
        schema: str,
        output_commit: str,
    ) -> None:
        """An interrupted job of this source commit wrote its tables but may not have ended
        their lineage runs: end them now, under the same run ids (once: the journal is read)."""
        if self.recorder is None:
            return
        for manifest in manifests.values():
            if manifest.source_commit == plan.source_commit:
                run = TableRun(
                    repository=plan.repository,
                    branch=plan.branch,
                    source_commit=manifest.source_commit,
                    table=manifest.table,
                    dataset=manifest.dataset,
                    raw_path=manifest.raw_path,
                    raw_checksum=manifest.raw_checksum,
                    contents_path=manifest.contents_path,
                    output_commit=output_commit,
                    manifest=manifest,
                    schema=schema,
                )
                self.recorder.complete_resumed(run)

    def _trino(self) -> TrinoEngine:
        if self.trino_engine is None:
            self.trino_engine = TrinoEngine.from_settings(self.settings, self.lakefs)
        return self.trino_engine

    def _commit_run(
        self, stack: contextlib.ExitStack, repo: str, branch: str, plan: BranchPlan
    ) -> Any:
        if self.recorder is None:
            return None
        ingestion = self._ingestion(plan) if plan.tasks else None
        return stack.enter_context(
            self.recorder.commit_run(repo, branch, plan.source_commit, ingestion)
        )

    def _ingestion(self, plan: BranchPlan) -> Any:
        """The source commit as lineage's ingestion run (None when lakeFS cannot say)."""
        from pipeline.lineage.events import IngestionPlan

        try:
            commit = self.lakefs.get_commit(plan.repository, plan.source_commit)
        except Exception:  # lineage never stops processing; the table runs still go out
            log.warning("lineage: commit %s not readable; no ingestion run", plan.source_commit)
            return None
        raw = {task.raw_path for task in plan.tasks}
        raw |= {m.raw_path for m in plan.current.values() if m.raw_path}
        return IngestionPlan(
            repository=plan.repository,
            branch=plan.branch,
            commit=commit.id,
            committer=commit.committer,
            message=commit.message,
            created_at=float(commit.creation_date),
            raw_paths=tuple(sorted(raw)),
        )

    def _table_run(
        self,
        stack: contextlib.ExitStack,
        parent: Any,
        task: TableTask,
        contents_path: str,
        schema: str,
    ) -> Any:
        if parent is None:
            return None
        return stack.enter_context(
            parent.table_run(
                task.table,
                task.dataset,
                raw_path=task.raw_path,
                contents_path=contents_path,
                schema=schema,
            )
        )

    def _status(
        self,
        repo: str,
        ref: str,
        ref_type: str,
        schema: str,
        head: str,
        source_commit: str | None,
        state: str,
        manifests: Mapping[str, TableManifest],
        drifts: Mapping[str, Drift],
        previous: RefStatus | None,
        warnings: list[str],
        errors: list[dict[str, Any]],
        reason: str = "",
        baseline: _Baseline | None = None,
        verified: Mapping[str, str] | None = None,
        prior: RefStatus | None = None,
    ) -> RefStatus:
        """The status to store. ``verified``: table -> its probe identity where this run
        verified it, "" where verification found a problem; a table it does not name keeps the
        identity its previous status (``previous``, else ``prior``) had probed."""
        before = previous or prior
        probed = {t.table: t.probed for t in before.tables} if before else {}
        probed.update(verified or {})
        earlier = {t.table: t for t in previous.tables} if previous else {}
        tables = []
        for table, manifest in sorted(manifests.items()):
            drift = drifts.get(table)
            if drift is None:
                old = earlier.get(table)
                drift = old.drift if old and old.fingerprint == manifest.fingerprint else Drift()
            tables.append(
                TableStatus(
                    table=table,
                    location=naming.table_location(repo, ref, table),
                    rows=manifest.rows,
                    columns=tuple((c.name, c.type) for c in manifest.columns),
                    drift=drift,
                    invalid_values=dict(manifest.invalid_values),
                    null_keys=dict(manifest.null_keys),
                    fingerprint=manifest.fingerprint,
                    engine=manifest.engine,
                    probed=probed.get(table, ""),
                )
            )
            warnings = warnings + [f"{table}: {w}" for w in manifest.warnings]
        # one warning per key (contract §6): the manifests' view (which also sees undeclared
        # columns) replaces the contents' view of the same key
        family = drift_rules.key_family_warnings(manifests)
        warned = {w.split(":", 1)[0] for w in family}
        warnings = [w for w in warnings if w.split(":", 1)[0] not in warned] + family
        if state == "failed" and not reason:
            reason = f"{len(errors)} error(s): " + "; ".join(
                str(e.get("message", e)) for e in errors[:3]
            )
        return RefStatus(
            repository=repo,
            ref=ref,
            ref_type=ref_type,
            schema=schema,
            head_commit=head,
            source_commit=source_commit,
            state=state,
            tables=tuple(tables),
            warnings=tuple(dict.fromkeys(warnings)),
            errors=tuple(errors),
            reason=reason,
            updated_at=time.time(),
            removed_tables=baseline.removed if baseline else (),
            drift_base=baseline.base if baseline else None,
            last_synced_commit=(
                head if state == "synced" else (baseline.last_synced if baseline else None)
            ),
            last_synced_drift_base=(
                (baseline.base if state == "synced" else baseline.last_synced_base)
                if baseline
                else None
            ),
        )


def _finished(previous: RefStatus | None, source_commit: str) -> bool:
    """The recorded status already says ``source_commit`` was finished with."""
    return (
        previous is not None
        and previous.source_commit == source_commit
        and previous.state in ("synced", "failed")
    )


def build_processor(
    settings: Settings, status_store: StatusStore, *, lineage: bool = True, lazy: bool = False
) -> BranchService:
    """The composition root of processing: real adapters from ``settings``.

    ``lineage=False`` for the intake process, which only reads (the gate, reconcile requests);
    ``lazy=True`` builds the lakeFS and metastore adapters on first use (``adapters.lazy``).
    """

    def lakefs() -> LakeFS:
        from pipeline.adapters.lakefs import LakeFSClient

        return LakeFSClient.from_settings(settings)

    def metastore() -> Metastore:
        if settings.metastore_api == "thrift":
            from pipeline.adapters.hive_metastore import HiveMetastore

            return HiveMetastore.from_settings(settings)
        from pipeline.adapters.trino_metastore import TrinoMetastore

        return TrinoMetastore.from_settings(settings)

    recorder = None
    try:
        from pipeline.lineage import build_recorder

        recorder = build_recorder(settings) if lineage else None
    except ImportError:  # pragma: no cover - lineage package not installed yet
        log.warning("lineage recorder unavailable; lineage is not recorded")
    if lazy:
        from pipeline.adapters.lazy import Lazy

        return BranchService(
            settings=settings,
            lakefs=cast("LakeFS", Lazy(lakefs, "lakeFS")),
            metastore=cast("Metastore", Lazy(metastore, "metastore")),
            store=status_store,
            recorder=recorder,
            workdir=settings.state_dir / "work",
        )
    return BranchService(
        settings=settings,
        lakefs=lakefs(),
        metastore=metastore(),
        store=status_store,
        recorder=recorder,
        workdir=settings.state_dir / "work",
    )


def _probed(previous: RefStatus | None, schema: str) -> dict[str, str]:
    """table -> the probe identity the ref's previous status had verified at ``schema``."""
    if previous is None or previous.schema != schema:
        return {}
    return {t.table: t.probed for t in previous.tables if t.probed}


def _verified(
    repo: str,
    ref: str,
    schema: str,
    manifests: Mapping[str, TableManifest],
    sync: SyncResult,
    problems: list[Problem],
) -> dict[str, str]:
    """table -> its probe identity where this verification found nothing wrong, else ""."""
    bad = {p.table for p in problems} | {t for t, _ in sync.failed}
    return {
        t: "" if t in bad else identity
        for t, identity in probe_identities(repo, ref, schema, manifests).items()
    }


def is_commit_id(ref: str) -> bool:
    """Whether ``ref`` has the form of a lakeFS commit id (64 lower-case hex digits). A payload
    could name a branch that way; its cached reads would sit under that name, never under a
    commit id lakeFS sends for a real merge (those are sha256 digests)."""
    return len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)


def _cached(
    cache: OrderedDict[tuple[str, str], T],
    lock: threading.Lock,
    key: tuple[str, str],
    read: Callable[[], T],
    size: int = 256,
) -> T:
    """``cache[key]`` for a commit id, read once (outside the lock) when missing; the newest
    ``size`` kept."""
    if not is_commit_id(key[1]):  # a ref whose commit moves: read every time
        return read()
    with lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = read()
    with lock:
        cache[key] = value
        while len(cache) > size:
            cache.popitem(last=False)
    return value
