"""Workers and the reconciler, as CherryPy bus plugins (they start and stop with the engine).

A worker claims a job (a ``Lease`` with a new generation), renews the lease from a renewer
thread while the processor runs with that lease as its fence (``lakehook.fence``), and ends
the job by what ``lakehook.failures.classify`` says about the outcome:

* success: done;
* a **service** failure: retried in place a few times when it is transient, then put back
  with exponential backoff and jitter, attempt after attempt, never given up; the status is
  ``pending`` with the attempt count and the next try (``retry``);
* an **input** failure: ``failed`` for the head it failed on, with the reason; not retried
  until the head changes;
* an **internal** error (lakehook's bug): ``failed`` as "internal error, please report it",
  the traceback in the log only;
* ``LeaseLost`` (the lease expired or another worker took the job): stop, write nothing, mark
  nothing, hand the job back if still possible.

The renewer never dies silently: an exception while renewing is logged and counted and makes
the job stop at its next fence check, and the job is re-queued.

The reconciler covers every branch and tag of every repository that carries lakehook's
actions on any branch, a bounded number of refs per sweep (round robin), enqueues each ref
whose head differs from what was last recorded (so a lost webhook is caught), and deletes
``_lakehook-*`` working branches that no job needs any more.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from cherrypy.process.plugins import Monitor, SimplePlugin
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from lakehook import fence
from lakehook.errors import LeaseLost, NotFound, TerminalError
from lakehook.failures import INTERNAL, SERVICE, Failure, backoff, classify, retried_by_reconciler
from lakehook.settings import Settings
from pipeline import naming
from pipeline import steps as job_steps
from pipeline.model import RefStatus
from pipeline.ports import LakeFS, Processor, StatusStore
from pipeline.provenance import WORKING_PREFIX, is_working_branch_name
from server.actions import has_actions
from server.jobs import Job, Lease, Queue
from server.metrics import Metrics
from server.quarantine import Quarantine, Quarantined

log = logging.getLogger("lakehook.worker")

IN_PLACE_ATTEMPTS = 3


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


def mark(
    store: StatusStore,
    job: Job,
    state: str,
    reason: str,
    error: str | Mapping[str, Any] = "",
    *,
    retry: Mapping[str, Any] | None = None,
    head: str | None = None,
) -> None:
    """Show a queued/running/failed job in the ref's status, keeping what was last verified.

    ``error`` replaces the status's errors (a message, or a ``Failure.as_error`` entry);
    ``retry`` is the service-failure retry shown in the status; ``head`` the head it failed on.
    """
    if job.kind.startswith("delete"):
        return
    current = store.get_status(job.repo, job.ref, job.ref_type)
    if current is None:
        current = RefStatus(job.repo, job.ref, job.ref_type, "", "", None, state)
    errors = current.errors
    if isinstance(error, str) and error:
        errors = ({"stage": "job", "message": error, "job": job.id},)
    elif not isinstance(error, str):
        errors = (dict(error),)
    store.put_status(
        replace(
            current,
            state=state,
            reason=reason,
            errors=errors,
            head_commit=head or current.head_commit,
            retry=dict(retry) if retry is not None else current.retry,
            updated_at=time.time(),
        )
    )


def _retry_in_place(err: BaseException) -> bool:
    return not isinstance(err, LeaseLost) and classify(err).retry_in_place


class _JobThread:
    """One thread that runs a worker thread's jobs, ``nice`` nicer than the worker thread,
    and with ``idle`` under ``SCHED_IDLE``: any thread of normal policy that wakes (the
    intake's, answering a webhook) preempts it at once, where niceness alone only shortens its
    turn, and a core running only such threads counts as free when the kernel places a waking
    thread.

    Only the work is nice: Linux gives each thread its own niceness, inherited by the threads
    it starts (pyarrow's pool among them). The worker thread, which claims, renews and ends
    jobs in the database the intake writes too, keeps the intake's priority, so that a busy
    machine does not preempt it while it holds the write lock; and it writes in single
    statements (``Database.write``), so that it never waits for the interpreter lock, held by
    this thread's job, with the write lock held (traced: 0.55-0.72 s; docs/benchmarks.md).
    """

    def __init__(self, nice: int, idle: bool = False) -> None:
        self._jobs: queue_module.SimpleQueue[Callable[[], None] | None] = queue_module.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, args=(nice, idle), name="lakehook-job", daemon=True
        )
        self._thread.start()

    def _serve(self, nice: int, idle: bool) -> None:
        if sys.platform == "linux":  # per thread; elsewhere it would be the whole process
            tid = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
            except OSError:
                log.warning("could not lower the job thread's priority; jobs run at the intake's")
            if idle:
                try:
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                except OSError:
                    log.warning("could not run the job thread under SCHED_IDLE; niceness only")
        while (call := self._jobs.get()) is not None:
            call()

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the job thread; wait for it and raise what it raised."""
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as err:  # handed to the caller, MemoryError included
                failure.append(err)
            finally:
                done.set()

        self._jobs.put(run)
        done.wait()
        if failure:
            raise failure[0]


class WorkerPool(SimplePlugin):  # type: ignore[misc]
    def __init__(
        self,
        bus: Any,
        queue: Queue,
        processor: Processor,
        store: StatusStore,
        settings: Settings,
        metrics: Metrics,
        lakefs: LakeFS | None = None,
        *,
        quarantine: Quarantine | None = None,
        fatal: tuple[type[BaseException], ...] = (),
        job_nice: int = 0,
        job_idle: bool = False,
    ) -> None:
        super().__init__(bus)
        self.queue, self.processor, self.store = queue, processor, store
        self.settings, self.metrics = settings, metrics
        self.lakefs = lakefs  # to record the head an input failure happened at
        self.quarantine = quarantine  # None: no progress recorded, no quarantine check
        self.fatal = fatal  # exceptions that end the worker process instead of the job
        self.in_place_wait: Any = wait_exponential_jitter(initial=0.5, max=8)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current = threading.local()
        # > 0: each worker thread runs its jobs in a thread of its own that much nicer
        # (``_JobThread``); the worker thread, which claims and ends jobs, keeps its priority
        # job_idle: the job thread also runs under SCHED_IDLE (LAKEHOOK_WORKER_SCHEDULING=idle)
        self.job_nice, self.job_idle = job_nice, job_idle

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

    def run_here(self, stop: threading.Event) -> None:
        """Work in the calling thread until ``stop`` is set (a worker process's main loop)."""
        self._stop = stop
        self._loop()

    def before_dataset(self, raw_path: str, head: str, source_commit: str) -> None:
        """Called by the processor before each dataset: record it, refuse a quarantined head."""
        job: Job | None = getattr(self._current, "job", None)
        if job is None or self.quarantine is None:
            return
        self.quarantine.check(job.repo, job.ref_type, job.ref, head)
        self.quarantine.record_progress(job.id, head, source_commit, raw_path)

    def _loop(self) -> None:
        worker = self.queue.worker_name(threading.current_thread().name)
        poll = self.settings.queue_poll_interval
        while not self._stop.is_set():
            job = None
            try:
                if self.queue.has_due():  # a read; claiming is a write, so only when worth it
                    job = self.queue.claim(worker)
            except Exception:  # the database is busy or broken: say so, count it, go on
                self.metrics.worker_errors.labels("claim").inc()
                log.exception("claiming a job failed")
            if job is None:
                self._wake.wait(poll)
                self._wake.clear()
                continue
            try:
                self._work(job, worker)
            except self.fatal:  # e.g. MemoryError in a worker process: the process ends
                raise
            except Exception:  # never lose the worker thread; the lease expiry re-queues the job
                self.metrics.worker_errors.labels("job").inc()
                log.exception("ending job %d failed", job.id)
            finally:
                self._current.job = None

    def _job_thread(self) -> _JobThread | None:
        """This worker thread's job thread (made on first use), or None to run jobs inline."""
        if self.job_nice <= 0 and not self.job_idle:
            return None
        runner: _JobThread | None = getattr(self._current, "runner", None)
        if runner is None:
            runner = self._current.runner = _JobThread(self.job_nice, self.job_idle)
        return runner

    def _run(self, job: Job, lease: Lease, times: job_steps.StepTimes) -> None:
        """The job itself, fenced by its lease (in the job thread where there is one)."""
        self._current.job = job
        try:
            with fence.holding(lease):
                lease.check()
                mark(self.store, job, "processing", f"job {job.id} ({job.kind}) running")
                with job_steps.recording(times):  # seconds per step, over every attempt
                    for attempt in Retrying(
                        stop=stop_after_attempt(IN_PLACE_ATTEMPTS),
                        wait=self.in_place_wait,
                        retry=retry_if_exception(_retry_in_place),
                        before_sleep=lambda _state: self.metrics.retries.labels(job.kind).inc(),
                        reraise=True,
                    ):
                        with attempt:
                            run_job(self.processor, job)
                lease.check()
        finally:
            self._current.job = None

    def _work(self, job: Job, worker: str) -> None:
        extra = {"repository": job.repo, "ref": job.ref, "job_id": job.id, "kind": job.kind}
        log.info("job started", extra={**extra, "generation": job.generation})
        started = time.monotonic()
        times = job_steps.StepTimes()
        lease = Lease(self.queue, job, worker)
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(lease, done, extra), name=f"lease-{job.id}", daemon=True
        )
        renewer.start()
        runner = self._job_thread()
        try:
            if runner is None:
                self._run(job, lease, times)
            else:
                runner.call(lambda: self._run(job, lease, times))
        except LeaseLost as err:
            outcome = self._lease_lost(job, worker, lease, err, extra)
        except NotFound as err:
            if job.kind.startswith("delete"):
                self.queue.complete(job.id, worker, lease.generation)
                outcome = "done"
            else:
                outcome = self._failed(job, worker, lease, err, extra)
        except Quarantined as err:  # the status already says why; the job just ends
            log.warning("job refused: %s", err, extra=extra)
            self.queue.end_quarantined(job.id, worker, str(err), lease.generation)
            outcome = "quarantined"
        except self.fatal:  # e.g. MemoryError in a worker process: the process ends
            raise
        except Exception as err:
            outcome = self._failed(job, worker, lease, err, extra)
        else:
            if self.queue.complete(job.id, worker, lease.generation):
                outcome = "done"
                seconds = round(time.monotonic() - started, 3)
                log.info("job done", extra={**extra, "seconds": seconds, "steps": times.rounded()})
                for name, spent in times.seconds.items():
                    self.metrics.job_steps.labels(name).observe(spent)
            else:
                outcome = "lease-lost"
                log.warning("job finished after its lease was taken over", extra=extra)
        finally:
            done.set()
        self.metrics.job_duration.labels(job.kind, outcome).observe(time.monotonic() - started)

    def _renew(self, lease: Lease, done: threading.Event, extra: dict[str, Any]) -> None:
        until = time.monotonic() + self.settings.job_time_limit_seconds
        while not done.wait(lease.renew_interval):
            if time.monotonic() > until:  # past the job's time limit: let the lease run out
                log.warning("job ran past its time limit; lease not renewed", extra=extra)
                return
            try:
                if not lease.renew():
                    self.metrics.lease_lost.labels("taken-over").inc()
                    log.warning("lease lost: %s", lease.lost, extra=extra)
                    return
            except Exception as err:  # the job must stop, visibly, not run on unfenced
                lease.lose(f"renewing the lease failed: {type(err).__name__}: {err}")
                self.metrics.lease_lost.labels("renew-error").inc()
                log.exception(
                    "renewing the lease failed; the job stops and is re-queued", extra=extra
                )
                return

    def _lease_lost(
        self, job: Job, worker: str, lease: Lease, err: LeaseLost, extra: dict[str, Any]
    ) -> str:
        """Stop without writing or marking; hand the job back if this worker still can."""
        self.metrics.lease_lost.labels("stopped").inc()
        log.warning("job stopped, nothing more written: %s", err, extra=extra)
        try:
            if self.queue.release(job.id, worker, lease.generation, str(err)):
                log.info("job re-queued", extra=extra)
                self.wake()
        except Exception:  # the lease expiry re-queues it anyway
            log.exception("re-queueing the job failed; its lease expiry will", extra=extra)
        return "lease-lost"

    def _failed(
        self, job: Job, worker: str, lease: Lease, err: Exception, extra: dict[str, Any]
    ) -> str:
        failure = classify(err)
        self.metrics.failures.labels(failure.kind).inc()
        if failure.kind == INTERNAL:
            log.error("job crashed: %s", failure.message, exc_info=err, extra=extra)
        else:
            log.warning("job %s failure: %s", failure.kind, failure.message, extra=extra)
        try:
            lease.check()
        except LeaseLost as lost:
            return self._lease_lost(job, worker, lease, lost, extra)
        if failure.kind == SERVICE:
            return self._retry_later(job, worker, lease, failure, extra)
        head = self._head(job)
        mark(
            self.store,
            job,
            "failed",
            failure.message,
            error=failure.as_error(job=job.id, failed_on=head or ""),
            retry={},
            head=head,
        )
        self.queue.fail(job.id, worker, failure.message, lease.generation)
        return "failed"

    def _retry_later(
        self, job: Job, worker: str, lease: Lease, failure: Failure, extra: dict[str, Any]
    ) -> str:
        delay = backoff(job.attempts, maximum=self.settings.retry_max_delay)
        next_try = time.time() + delay
        self.metrics.retries.labels(job.kind).inc()
        log.warning(
            "job will be retried in %.0fs (attempt %d): %s",
            delay,
            job.attempts,
            failure.message,
            extra=extra,
        )
        mark(
            self.store,
            job,
            "pending",
            f"a service failed (attempt {job.attempts}, next try in {delay:.0f}s): "
            f"{failure.message}",
            retry={
                "kind": SERVICE,
                "attempts": job.attempts,
                "next_try_at": round(next_try, 3),
                "error": failure.message,
            },
        )
        self.queue.retry_later(job.id, worker, delay, failure.message, lease.generation)
        return "retry"

    def _head(self, job: Job) -> str | None:
        """The ref's head now: an input failure is final for this head."""
        if self.lakefs is None or job.kind.startswith("delete"):
            return None
        try:
            return self.lakefs.resolve(job.repo, job.ref)
        except Exception:
            log.warning("head of %s/%s unknown; failure recorded without it", job.repo, job.ref)
            return None


class Reconciler:
    """Compares refs' heads with the recorded statuses and enqueues the differences.

    A timer sweep looks at no more than ``max_refs`` refs, continuing round robin where the
    previous sweep stopped, so its work is bounded however many refs there are; an explicit
    ``sweep(repo)`` (``lakehook reconcile``) covers the whole repository at once.

    Finding the repositories is bounded too: whether a branch head carries lakehook's actions
    is remembered per commit (a commit never changes), and a repository found without them is
    not listed again for ``discovery_interval`` seconds unless lakehook has tables for it. A
    lakeFS of a thousand other repositories costs a sweep one listing of repositories, not a
    thousand listings of branches and reads of action files (measured on the shared test
    stack: 741 other repositories made every sweep about 2,200 lakeFS calls, 13 s for the
    first sweep after a restart on a quiet machine).
    """

    _MEMO_LIMIT = 65_536  # remembered (repository, commit) answers before the memo is reset

    def __init__(
        self,
        lakefs: LakeFS,
        queue: Queue,
        store: StatusStore,
        metrics: Metrics,
        wake: Any = None,
        processor: Processor | None = None,
        *,
        max_refs: int = 500,
        discovery_interval: float = 600.0,
        working_branch_grace: float = 900.0,
        server_url: str | None = None,
        job_retention: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lakefs, self.queue, self.store, self.metrics = lakefs, queue, store, metrics
        self.job_retention = job_retention  # seconds an ended job is kept; 0: for ever
        self.wake = wake
        self.processor = processor  # None: heads only, the metastore is not checked
        self.max_refs = max_refs
        self.discovery_interval = discovery_interval
        self.working_branch_grace = working_branch_grace
        self.server_url = server_url  # None: every repository with lakehook's actions
        self.clock = clock
        self._cursors = {"known": 0, "new": 0}  # where the next timer sweep starts, per group
        self._found: set[str] = set()  # repositories found with lakehook's actions
        self._lock = threading.Lock()
        self._has_actions: dict[tuple[str, str], bool] = {}  # (repository, commit) -> answer
        self._not_ours: dict[str, float] = {}  # repository -> when to look at it again

    # ---- what to look at -------------------------------------------------------------------
    def repositories(self) -> list[str]:
        """Repositories with lakehook's actions on any branch (calling this server)."""
        listed = self.lakefs.list_repositories()
        mapped, known = self._known(listed)
        first = [r for r in listed if r in known]
        return list(self._ours(first + [r for r in listed if r not in known], mapped))

    def _known(self, listed: list[str]) -> tuple[set[str], set[str]]:
        """The repositories lakehook has tables for, and those plus the ones it found its
        actions in (looked at first)."""
        mapped = {repo for repo, _, _ in self.store.schema_mapping()}
        with self._lock:
            self._not_ours = {r: t for r, t in self._not_ours.items() if r in set(listed)}
            return mapped, mapped | self._found

    def _ours(self, candidates: list[str], mapped: set[str]) -> dict[str, list[Any]]:
        """Those of ``candidates`` with lakehook's actions, skipping recent 'not ours' answers
        (except for the repositories lakehook has tables for: ``mapped``), with the branches
        listed to find out (the sweep goes on with them instead of listing them again)."""
        now = self.clock()
        out: dict[str, list[Any]] = {}
        for repo in candidates:
            with self._lock:
                if self._not_ours.get(repo, 0.0) > now and repo not in mapped:
                    continue
            try:
                branches = self.lakefs.list_branches(repo)
                ours = any(
                    self._actions_at(repo, b)
                    for b in branches
                    if not is_working_branch_name(b.name)
                )
            except NotFound:
                continue  # deleted while we looked
            with self._lock:
                if ours:
                    self._not_ours.pop(repo, None)
                    self._found.add(repo)
                else:
                    self._not_ours[repo] = now + self.discovery_interval
                    self._found.discard(repo)
            if ours:
                out[repo] = branches
        return out

    def _actions_at(self, repo: str, branch: Any) -> bool:
        """``has_actions`` on the branch's head, remembered per commit."""
        key = (repo, str(branch.commit_id))
        with self._lock:
            if key in self._has_actions:
                return self._has_actions[key]
        answer = has_actions(self.lakefs, repo, branch.commit_id, self.server_url)
        with self._lock:
            if len(self._has_actions) >= self._MEMO_LIMIT:
                self._has_actions.clear()
            self._has_actions[key] = answer
        return answer

    def sweep(self, repo: str | None = None, branch: str | None = None) -> list[int]:
        """Enqueue what differs; returns the job ids.

        A timer sweep (no ``repo``) logs and counts every error and goes on; an explicit one
        raises ``NotFound``/``TransientError`` for the API to answer 404/503.
        """
        jobs: list[int] = []
        try:
            if repo:
                jobs = self._sweep_repo(repo, branch)
            else:
                with self.queue.sweep_lock() as mine:
                    if not mine:  # another replica's reconciler is sweeping
                        self.metrics.sweeps.labels("skipped").inc()
                        return jobs
                    jobs = self._sweep_all()
                    self._prune()
        except Exception as err:
            self.metrics.sweeps.labels("error").inc()
            self.metrics.reconcile_errors.inc()
            if repo is None:
                failure = classify(err)
                if failure.kind == SERVICE:  # an outage: expected weather, said once a sweep
                    log.warning("reconcile sweep could not finish: %s", failure.message)
                else:
                    log.exception("reconcile sweep failed")
                return jobs
            log.warning("reconcile of %s failed: %s", repo, err)
            raise
        self.metrics.sweeps.labels("ok").inc()
        self.metrics.reconcile_enqueued.inc(len(jobs))
        if jobs and self.wake is not None:
            self.wake()
        return jobs

    def _prune(self) -> None:
        """Forget the jobs that ended more than ``job_retention`` seconds ago (timer sweeps:
        one replica at a time). A failure is logged; the sweep's work stands."""
        if self.job_retention <= 0:
            return
        try:
            pruned = self.queue.prune(self.clock() - self.job_retention)
        except Exception as err:  # a busy database now is no reason to fail the sweep
            log.warning("could not forget old jobs: %s", err)
            return
        if pruned:
            log.info(
                "forgot %d job(s) that ended over %g days ago", pruned, self.job_retention / 86400
            )

    def _sweep_all(self) -> list[int]:
        """The repositories lakehook knows first (their jobs are queued and the workers woken
        before the rest is looked at), then the others, within one budget of ``max_refs``."""
        listed = self.lakefs.list_repositories()
        mapped, known = self._known(listed)
        jobs, budget = self._sweep_group(
            "known", self._ours([r for r in listed if r in known], mapped)
        )
        if jobs and self.wake is not None:
            self.wake()
        # discovery runs whatever the budget left: what it finds joins the known group
        more, _ = self._sweep_group(
            "new", self._ours([r for r in listed if r not in known], mapped), max(budget, 0)
        )
        return jobs + more

    def _sweep_group(
        self, group: str, repos: Mapping[str, list[Any]], budget: int | None = None
    ) -> tuple[list[int], int]:
        """Check a window of the group's refs (round robin); returns the jobs and the budget left.

        ``repos``: repository -> its branches, as ``_ours`` listed them."""
        budget = self.max_refs if budget is None else budget
        refs: list[tuple[str, Any, str]] = []  # (repo, Ref, ref_type)
        for name, branches in repos.items():
            try:
                refs += [
                    (name, r, "branch") for r in branches if not is_working_branch_name(r.name)
                ]
                refs += [(name, r, "tag") for r in self.lakefs.list_tags(name)]
            except NotFound:
                continue
        with self._lock:
            start = self._cursors[group] % len(refs) if refs else 0
            window = (refs[start:] + refs[:start])[:budget]
            self._cursors[group] = start + len(window)
        jobs = [j for repo, ref, kind in window if (j := self._check(repo, ref, kind)) is not None]
        for name in repos:
            jobs += self._guarded(name, self._deleted_refs, name)
            self._guarded(name, self.clean_working_branches, name)
        return jobs, budget - len(window)

    def _guarded(self, repo: str, step: Callable[[str], Any], arg: str) -> Any:
        """One repository's step of a timer sweep: an error is logged and counted, not fatal."""
        try:
            return step(arg) or []
        except Exception:
            self.metrics.reconcile_errors.inc()
            log.exception("reconcile of %s: %s failed", repo, getattr(step, "__name__", step))
            return []

    def _sweep_repo(self, repo: str, only: str | None) -> list[int]:
        jobs: list[int] = []
        for ref in self.lakefs.list_branches(repo):
            if is_working_branch_name(ref.name) or (only and ref.name != only):
                continue
            job = self._check(repo, ref, "branch", force=bool(only), raising=True)
            if job is not None:
                jobs.append(job)
        if only:
            return jobs
        for ref in self.lakefs.list_tags(repo):
            job = self._check(repo, ref, "tag", raising=True)
            if job is not None:
                jobs.append(job)
        jobs += self._deleted_refs(repo)
        self._guarded(repo, self.clean_working_branches, repo)
        return jobs

    def _check(
        self, repo: str, ref: Any, ref_type: str, *, force: bool = False, raising: bool = False
    ) -> int | None:
        """Enqueue a sync of one ref if it differs; an error is logged and counted."""
        try:
            status = self.store.get_status(repo, ref.name, ref_type)
            if force or _stale(status, ref.commit_id) or self._metastore_differs(status):
                kind = "sync_tag" if ref_type == "tag" else "sync_branch"
                return self.queue.enqueue(repo, ref_type, ref.name, kind, event="reconcile")[0]
        except Exception:
            if raising:
                raise
            self.metrics.reconcile_errors.inc()
            log.exception("reconcile of %s %s/%s failed", ref_type, repo, ref.name)
        return None

    def _deleted_refs(self, repo: str) -> list[int]:
        """Statuses of refs that no longer exist: their schemas are dropped."""
        branches = {r.name for r in self.lakefs.list_branches(repo)}
        tags = {r.name for r in self.lakefs.list_tags(repo)}
        jobs = []
        for status in self.store.list_statuses(repo):
            if status.ref not in (tags if status.ref_type == "tag" else branches):
                kind = "delete_tag" if status.ref_type == "tag" else "delete_branch"
                jobs.append(
                    self.queue.enqueue(repo, status.ref_type, status.ref, kind, event="reconcile")[
                        0
                    ]
                )
        return jobs

    def clean_working_branches(self, repo: str) -> list[str]:
        """Delete ``_lakehook-*`` branches no job needs any more; returns their names.

        A working branch is needed while its branch has a pending or running job, while its
        branch is ``pending`` (outputs wait there for a dirty branch), and during the grace
        period after its head commit (a job may be about to use it).
        """
        branches = self.lakefs.list_branches(repo)
        users = [b.name for b in branches if not is_working_branch_name(b.name)]
        active = self.queue.active_refs(repo)
        deleted = []
        for work in branches:
            if not is_working_branch_name(work.name):
                continue
            owners = [b for b in users if _works_for(work.name, b)]
            if any(("branch", b) in active for b in owners):
                continue
            if any((s := self.store.get_status(repo, b)) and s.state == "pending" for b in owners):
                continue
            created = self.lakefs.get_commit(repo, work.commit_id).creation_date
            if self.clock() - created < self.working_branch_grace:
                continue
            try:
                self.lakefs.delete_branch(repo, work.name)
            except NotFound:
                continue
            deleted.append(work.name)
            self.metrics.working_branches_deleted.inc()
            log.info("deleted stale working branch %s/%s", repo, work.name)
        return deleted

    def _metastore_differs(self, status: RefStatus | None) -> bool:
        if self.processor is None or status is None:
            return False
        problems = self.processor.metastore_problems(status)
        if problems:
            self.metrics.metastore_repairs.inc()
            log.warning(
                "metastore differs from the manifests (%s); re-syncing",
                "; ".join(problems),
                extra={"repository": status.repository, "ref": status.ref},
            )
        return bool(problems)


_WORK_SUFFIX = re.compile(r"-[0-9a-f]{12}$")


def _works_for(work: str, branch: str) -> bool:
    """Whether ``work`` is a working branch of ``branch`` (for some source commit)."""
    prefix = f"{WORKING_PREFIX}{naming.sanitize(branch)}"
    return work.startswith(prefix) and bool(_WORK_SUFFIX.fullmatch(work[len(prefix) :]))


def _stale(status: RefStatus | None, head: str) -> bool:
    if status is None or status.head_commit != head:
        return True
    if status.state in ("pending",):
        return True  # e.g. outputs waiting for a dirty branch
    if status.state == "failed":
        # input and internal failures are final for this head (lakehook.failures)
        return any(retried_by_reconciler(e) for e in status.errors)
    return False


class ReconcilerPlugin(Monitor):  # type: ignore[misc]
    def __init__(self, bus: Any, reconciler: Reconciler, interval: float) -> None:
        super().__init__(bus, self._tick, frequency=interval, name="lakehook-reconciler")
        self.reconciler = reconciler

    def _tick(self) -> None:
        try:
            self.reconciler.sweep()
        except Exception:  # never let the timer die; sweep() has logged and counted it
            self.reconciler.metrics.reconcile_errors.inc()
            log.exception("reconcile sweep crashed")
