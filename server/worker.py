"""Workers and the reconciler, as CherryPy bus plugins (they start and stop with the engine).

A worker claims a job, keeps its lease alive while the processor runs, and ends it: done;
``TransientError`` retried in place with exponential backoff (tenacity), then re-queued with a
delay until ``job_max_attempts``; ``TerminalError`` (or attempts exhausted) recorded as failed,
with the message in the ref's status. The reconciler lists every repository carrying lakehook's
actions and enqueues each ref whose head differs from what was last recorded, so a lost webhook
is caught without anyone noticing it was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from cherrypy.process.plugins import Monitor, SimplePlugin
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from lakehook.errors import NotFound, TerminalError, TransientError
from lakehook.settings import Settings
from pipeline.model import RefStatus
from pipeline.ports import LakeFS, Processor, StatusStore
from pipeline.provenance import is_working_branch_name
from server.actions import has_actions
from server.jobs import Job, JobQueue
from server.metrics import Metrics

log = logging.getLogger("lakehook.worker")

IN_PLACE_ATTEMPTS = 3
RETRY_STAGES = ("metastore", "verify", "write-back")


def run_job(processor: Processor, job: Job) -> None:
    """Call the processor method a job stands for."""
    if job.kind == "sync_branch":
        processor.sync_branch(job.repo, job.ref)
    elif job.kind == "create_branch":
        processor.create_branch(job.repo, job.ref, str(job.args.get("source_ref", "")))
    elif job.kind == "delete_branch":
        processor.delete_branch(job.repo, job.ref)
    elif job.kind == "sync_tag":
        processor.sync_tag(job.repo, job.ref)
    elif job.kind == "delete_tag":
        processor.delete_tag(job.repo, job.ref)
    else:
        raise TerminalError(f"unknown job kind {job.kind!r}")


def mark(store: StatusStore, job: Job, state: str, reason: str, error: str = "") -> None:
    """Show a queued/running/failed job in the ref's status, keeping what was last verified."""
    if job.kind.startswith("delete"):
        return
    current = store.get_status(job.repo, job.ref, job.ref_type)
    if current is None:
        current = RefStatus(job.repo, job.ref, job.ref_type, "", "", None, state)
    errors = current.errors
    if error:
        errors = ({"stage": "job", "message": error, "job": job.id},)
    store.put_status(
        replace(current, state=state, reason=reason, errors=errors, updated_at=time.time())
    )


class WorkerPool(SimplePlugin):  # type: ignore[misc]
    def __init__(
        self,
        bus: Any,
        queue: JobQueue,
        processor: Processor,
        store: StatusStore,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        super().__init__(bus)
        self.queue, self.processor, self.store = queue, processor, store
        self.settings, self.metrics = settings, metrics
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        recovered = self.queue.recover()
        if recovered:
            log.info("re-queued %d job(s) left running by a previous process", recovered)
        self._stop.clear()
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._loop, name=f"lakehook-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    start.priority = 80  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        import os

        worker = f"{os.getpid()}:{threading.current_thread().name}"
        while not self._stop.is_set():
            try:
                job = self.queue.claim(worker)
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._work(job, worker)

    def _work(self, job: Job, worker: str) -> None:
        extra = {"repository": job.repo, "ref": job.ref, "job_id": job.id, "kind": job.kind}
        log.info("job started", extra=extra)
        started = time.monotonic()
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(job, worker, done), daemon=True)
        renewer.start()
        try:
            mark(self.store, job, "processing", f"job {job.id} ({job.kind}) running")
            for attempt in Retrying(
                stop=stop_after_attempt(IN_PLACE_ATTEMPTS),
                wait=wait_exponential(multiplier=0.5, max=8),
                retry=retry_if_exception_type(TransientError),
                before_sleep=lambda _state: self.metrics.retries.labels(job.kind).inc(),
                reraise=True,
            ):
                with attempt:
                    run_job(self.processor, job)
        except TransientError as err:
            self._transient(job, worker, err, extra)
            outcome = "retry"
        except NotFound as err:
            if job.kind.startswith("delete"):
                self.queue.complete(job.id, worker)
                outcome = "done"
            else:
                self._terminal(job, worker, err, extra)
                outcome = "failed"
        except TerminalError as err:
            self._terminal(job, worker, err, extra)
            outcome = "failed"
        except Exception as err:  # a bug must not kill the worker; record it like a failure
            log.exception("job crashed", extra=extra)
            self._terminal(job, worker, err, extra)
            outcome = "failed"
        else:
            self.queue.complete(job.id, worker)
            outcome = "done"
            log.info("job done", extra={**extra, "seconds": round(time.monotonic() - started, 3)})
        finally:
            done.set()
        self.metrics.job_duration.labels(job.kind, outcome).observe(time.monotonic() - started)

    def _renew(self, job: Job, worker: str, done: threading.Event) -> None:
        interval = max(self.queue.lease_seconds / 3, 0.5)
        while not done.wait(interval):
            if not self.queue.renew(job.id, worker):
                return

    def _transient(self, job: Job, worker: str, err: Exception, extra: dict[str, Any]) -> None:
        if job.attempts >= self.settings.job_max_attempts:
            self._terminal(job, worker, err, extra)
            return
        delay = min(2.0**job.attempts, 300.0)
        log.warning("job will be retried in %.0fs: %s", delay, err, extra=extra)
        self.metrics.retries.labels(job.kind).inc()
        mark(self.store, job, "pending", f"retrying in {delay:.0f}s after: {err}")
        self.queue.retry_later(job.id, worker, delay, str(err))

    def _terminal(self, job: Job, worker: str, err: Exception, extra: dict[str, Any]) -> None:
        log.error("job failed: %s", err, extra=extra)
        message = f"{type(err).__name__}: {err}"
        try:
            mark(self.store, job, "failed", message, error=message)
        finally:
            self.queue.fail(job.id, worker, message)


class Reconciler:
    """Compares every ref's head with the recorded status and enqueues the differences."""

    def __init__(
        self,
        lakefs: LakeFS,
        queue: JobQueue,
        store: StatusStore,
        metrics: Metrics,
        wake: Any = None,
        processor: Processor | None = None,
    ) -> None:
        self.lakefs, self.queue, self.store, self.metrics = lakefs, queue, store, metrics
        self.wake = wake
        self.processor = processor  # None: heads only, the metastore is not checked

    def repositories(self) -> list[str]:
        out = []
        for repo in self.lakefs.list_repositories():
            try:
                branches = self.lakefs.list_branches(repo)
                if any(has_actions(self.lakefs, repo, b.name) for b in branches[:1]) or any(
                    has_actions(self.lakefs, repo, b.name) for b in branches if b.name == "main"
                ):
                    out.append(repo)
            except NotFound:
                continue
        return out

    def sweep(self, repo: str | None = None, branch: str | None = None) -> list[int]:
        """Enqueue what differs; returns the job ids."""
        jobs: list[int] = []
        try:
            for name in [repo] if repo else self.repositories():
                jobs += self._sweep_repo(name, branch)
        except TransientError as err:
            self.metrics.sweeps.labels("error").inc()
            log.warning("reconcile sweep failed: %s", err)
            return jobs
        self.metrics.sweeps.labels("ok").inc()
        self.metrics.reconcile_enqueued.inc(len(jobs))
        if jobs and self.wake is not None:
            self.wake()
        return jobs

    def _sweep_repo(self, repo: str, only: str | None) -> list[int]:
        jobs: list[int] = []
        seen: set[tuple[str, str]] = set()
        for ref in self.lakefs.list_branches(repo):
            if is_working_branch_name(ref.name) or (only and ref.name != only):
                continue
            seen.add(("branch", ref.name))
            status = self.store.get_status(repo, ref.name)
            if only or _stale(status, ref.commit_id) or self._metastore_differs(status):
                jobs.append(
                    self.queue.enqueue(repo, "branch", ref.name, "sync_branch", event="reconcile")[
                        0
                    ]
                )
        if only:
            return jobs
        for ref in self.lakefs.list_tags(repo):
            seen.add(("tag", ref.name))
            status = self.store.get_status(repo, ref.name, "tag")
            if _stale(status, ref.commit_id) or self._metastore_differs(status):
                jobs.append(
                    self.queue.enqueue(repo, "tag", ref.name, "sync_tag", event="reconcile")[0]
                )
        for status in self.store.list_statuses(repo):
            if (status.ref_type, status.ref) not in seen:
                kind = "delete_tag" if status.ref_type == "tag" else "delete_branch"
                jobs.append(
                    self.queue.enqueue(repo, status.ref_type, status.ref, kind, event="reconcile")[
                        0
                    ]
                )
        return jobs

    def _metastore_differs(self, status: RefStatus | None) -> bool:
        if self.processor is None or status is None:
            return False
        try:
            problems = self.processor.metastore_problems(status)
        except TerminalError as err:
            log.warning("metastore check of %s failed: %s", status.ref, err)
            return False
        if problems:
            self.metrics.metastore_repairs.inc()
            log.warning(
                "metastore differs from the manifests (%s); re-syncing",
                "; ".join(problems),
                extra={"repository": status.repository, "ref": status.ref},
            )
        return bool(problems)


def _stale(status: RefStatus | None, head: str) -> bool:
    if status is None or status.head_commit != head:
        return True
    if status.state in ("pending",):
        return True  # e.g. outputs waiting for a dirty branch
    if status.state == "failed":
        return any(e.get("stage") in RETRY_STAGES or e.get("stage") == "job" for e in status.errors)
    return False


class ReconcilerPlugin(Monitor):  # type: ignore[misc]
    def __init__(self, bus: Any, reconciler: Reconciler, interval: float) -> None:
        super().__init__(bus, self._tick, frequency=interval, name="lakehook-reconciler")
        self.reconciler = reconciler

    def _tick(self) -> None:
        try:
            self.reconciler.sweep()
        except Exception:  # never let the timer die
            log.exception("reconcile sweep crashed")
