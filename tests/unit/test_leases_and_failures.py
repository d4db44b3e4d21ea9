"""Fenced leases, one failure classification, and the reconciler's coverage (issue 12)."""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cherrypy
import pytest
from tenacity import wait_none

from lakehook import fence
from lakehook.errors import (
    ConfigError,
    InputError,
    KeyCollision,
    LeaseLost,
    NotFound,
    ServiceMisconfigured,
    ServiceUnavailable,
    TerminalError,
)
from lakehook.failures import INPUT, INTERNAL, SERVICE, backoff, classify
from lakehook.settings import Settings
from pipeline.model import RefStatus
from server.actions import install
from server.jobs import DONE, FAILED, PENDING, RUNNING, JobQueue, Lease
from server.metrics import Metrics
from server.quarantine import Quarantine
from server.store import Database, SqliteStatusStore
from server.worker import Reconciler, WorkerPool
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.processor import FakeProcessor


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "jobs.sqlite")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- leases -----------------------------------------------------------------------------------


def test_each_claim_has_a_new_generation_and_the_old_one_is_fenced_out(db: Database) -> None:
    queue = JobQueue(db, lease_seconds=0.05)
    queue.enqueue("s", "branch", "main", "sync_branch")
    first = queue.claim("w1")
    assert first is not None
    old = Lease(queue, first, "w1")
    old.check()  # held
    time.sleep(0.1)  # w1 stalls past its lease; another worker takes the job
    second = queue.claim("w2")
    assert second is not None
    assert second.generation == first.generation + 1
    with pytest.raises(LeaseLost):
        old.check()
    assert not old.renew()
    assert not queue.complete(first.id, "w1", first.generation)
    new = Lease(queue, second, "w2")
    new.check()
    assert queue.complete(second.id, "w2", second.generation)


def test_same_worker_name_does_not_defeat_the_fence(db: Database) -> None:
    """A restarted thread may reuse a worker name; only the generation says who holds it."""
    queue = JobQueue(db, lease_seconds=0.05)
    queue.enqueue("s", "branch", "main", "sync_branch")
    first = queue.claim("1:w")
    assert first is not None
    time.sleep(0.1)
    second = queue.claim("1:w")
    assert second is not None
    assert not queue.renew(first.id, "1:w", first.generation)
    assert not queue.complete(first.id, "1:w", first.generation)
    assert queue.complete(second.id, "1:w", second.generation)


def test_lease_expires_by_the_monotonic_clock_without_a_confirmed_renewal(db: Database) -> None:
    queue = JobQueue(db, lease_seconds=60)
    queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    clock = Clock()
    lease = Lease(queue, job, "w", clock=clock)
    clock.now += 40
    lease.check()  # 20 s left, more than the margin
    assert lease.renew()
    clock.now += 49
    lease.check()  # renewed at 1040: 11 s left > margin (10 s)
    clock.now += 2
    with pytest.raises(LeaseLost, match="expired"):
        lease.check()  # nobody took it (yet), but this worker can no longer be sure it holds it


class BrokenRenewals(JobQueue):
    def renew(self, job_id: int, worker: str, generation: int | None = None) -> bool:
        raise OSError("disk I/O error")


def _pool(
    queue: JobQueue, processor: Any, store: Any, **settings: Any
) -> tuple[WorkerPool, Metrics]:
    metrics = Metrics()
    base = replace(Settings.load({}, None), **settings)
    return WorkerPool(cherrypy.engine, queue, processor, store, base, metrics), metrics


class SlowProcessor(FakeProcessor):
    """Runs long enough for the renewer to act, checking its fence before 'writing'."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = False

    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        time.sleep(0.3)
        fence.current().check()
        self.wrote = True
        return super().sync_branch(repo, branch)


def test_a_failing_renewer_stops_the_job_visibly_and_requeues_it(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    queue = BrokenRenewals(db, lease_seconds=0.3)
    store = SqliteStatusStore(db)
    processor = SlowProcessor()
    pool, metrics = _pool(queue, processor, store)
    job_id, _ = queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    pool._work(job, "w")
    assert not processor.wrote  # stopped before its write
    after = queue.get(job_id)
    assert after is not None
    assert after.state == PENDING  # handed back at once
    assert "renewing the lease failed" in after.error
    assert metrics.lease_lost.labels("renew-error")._value.get() == 1
    assert "renewing the lease failed" in caplog.text
    status = store.get_status("s", "main")
    assert status is None or status.state != "failed"  # a lost lease marks nothing


def test_a_stale_worker_writes_nothing_once_another_holds_the_job(db: Database) -> None:
    queue = JobQueue(db, lease_seconds=30)
    store = SqliteStatusStore(db)
    processor = SlowProcessor()
    pool, _ = _pool(queue, processor, store)
    job_id, _ = queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("old")
    assert job is not None
    worker = threading.Thread(target=pool._work, args=(job, "old"))
    worker.start()
    time.sleep(0.05)
    with db.transaction() as conn:  # the lease is taken over (as after an expiry)
        conn.execute("UPDATE job SET generation=generation+1, worker='new' WHERE id=?", (job_id,))
    worker.join(5)
    assert not processor.wrote
    after = queue.get(job_id)
    assert after is not None
    assert (after.state, after.generation) == (RUNNING, job.generation + 1)  # left to its holder


# ---- one classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (InputError("bad", file="raw/dm.csv", line=3), INPUT),
        (ConfigError("bad yaml"), INPUT),
        (KeyCollision("two keys"), INPUT),
        (TerminalError("merge conflict"), INPUT),
        (ServiceUnavailable("HMS down"), SERVICE),
        (ServiceMisconfigured("S3 gateway answered 403"), SERVICE),
        (KeyError("oops"), INTERNAL),
        (AssertionError(), INTERNAL),
        # the server's own disk or file handles ran out: retried once freed, not a bug
        (OSError(errno.ENOSPC, "No space left on device"), SERVICE),
        (OSError(errno.EMFILE, "Too many open files"), SERVICE),
        (OSError("error writing bytes. Detail: [errno 28] No space left on device"), SERVICE),
        (OSError(errno.EACCES, "Permission denied"), INTERNAL),
    ],
)
def test_every_failure_has_one_kind(err: Exception, kind: str) -> None:
    failure = classify(err)
    assert failure.kind == kind
    assert failure.final == (kind != SERVICE)
    if kind == INTERNAL:
        assert "please report" in failure.message
        assert "Traceback" not in failure.message


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert all(0 <= backoff(1) <= 1.0 for _ in range(20))
    assert all(0 <= backoff(30, maximum=300) <= 300 for _ in range(20))
    assert len({round(backoff(8), 6) for _ in range(20)}) > 1  # jittered


class Failing(FakeProcessor):
    def __init__(self, err: Exception) -> None:
        super().__init__()
        self.err = err

    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        self._record("sync_branch", repo, branch)
        raise self.err


def test_service_failures_are_retried_without_giving_up_and_shown_in_the_status(
    db: Database,
) -> None:
    queue, store = JobQueue(db), SqliteStatusStore(db)
    processor = Failing(ServiceUnavailable("Trino did not answer"))
    pool, metrics = _pool(queue, processor, store)
    pool.in_place_wait = wait_none()
    job_id, _ = queue.enqueue("s", "branch", "main", "sync_branch")
    for attempt in range(1, 13):  # far beyond any former max-attempts
        with db.transaction() as conn:
            conn.execute("UPDATE job SET not_before=0 WHERE id=?", (job_id,))
        job = queue.claim("w")
        assert job is not None
        assert job.attempts == attempt
        pool._work(job, "w")
        after = queue.get(job_id)
        assert after is not None
        assert after.state == PENDING
        status = store.get_status("s", "main")
        assert status is not None
        assert status.state == "pending"
        assert status.retry is not None
        assert status.retry["attempts"] == attempt
        assert status.retry["next_try_at"] > time.time() - 1
        assert "Trino did not answer" in status.reason
    assert metrics.failures.labels(SERVICE)._value.get() == 12
    assert len(processor.calls) == 12 * 3  # each attempt also retried in place


def test_input_failure_is_final_for_its_head_and_not_reenqueued(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    install(lakefs, "s", "main", "http://x:1")
    queue, store = JobQueue(db), SqliteStatusStore(db)
    err = InputError("no such column", file="lakehook.yaml", line=2, hint="fix it")
    pool, metrics = _pool(queue, Failing(err), store)
    pool.lakefs = lakefs
    job_id, _ = queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    pool._work(job, "w")
    assert queue.get(job_id).state == FAILED  # type: ignore[union-attr]
    status = store.get_status("s", "main")
    assert status is not None
    assert status.state == "failed"
    assert status.head_commit == lakefs.branch_head("s", "main")
    assert status.errors[0]["kind"] == INPUT
    reconciler = Reconciler(lakefs, queue, store, Metrics())
    assert reconciler.sweep() == []  # not retried every sweep
    assert reconciler.sweep() == []
    lakefs.upload_object("s", "main", "lakehook.yaml", b"version: 1\n")
    lakefs.commit("s", "main", "fixed", {})
    assert len(reconciler.sweep()) == 1  # the input changed: tried again


def test_internal_error_is_reported_as_such_with_the_traceback_in_the_log_only(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    queue, store = JobQueue(db), SqliteStatusStore(db)
    pool, metrics = _pool(queue, Failing(ZeroDivisionError("division by zero")), store)
    queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    pool._work(job, "w")
    status = store.get_status("s", "main")
    assert status is not None
    assert status.state == "failed"
    assert "internal error" in status.reason
    assert "please report" in status.errors[0]["message"]
    assert status.errors[0]["kind"] == INTERNAL
    assert "Traceback" not in str(status.to_dict())
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    assert metrics.failures.labels(INTERNAL)._value.get() == 1


class PriorityProbe(FakeProcessor):
    """Records the niceness of the thread each job runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.nice: list[int] = []
        self.policy: list[int] = []

    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        self.policy.append(os.sched_getscheduler(threading.get_native_id()))
        return super().sync_branch(repo, branch)


@pytest.mark.parametrize("idle", [False, True], ids=["nice", "nice+idle"])
def test_jobs_run_in_a_nicer_thread_while_claims_and_ends_keep_the_workers_priority(
    db: Database, idle: bool
) -> None:
    """With ``idle`` (LAKEHOOK_WORKER_SCHEDULING=idle, the default) the job thread also runs
    under SCHED_IDLE, so that the intake's threads preempt it at once when they wake."""
    queue, store = JobQueue(db), SqliteStatusStore(db)
    processor = PriorityProbe()
    pool = WorkerPool(
        None,
        queue,
        processor,
        store,
        replace(Settings.load({}, None), workers=1),
        Metrics(),
        job_nice=3,
        job_idle=idle,
    )
    stop = threading.Event()
    claims: list[tuple[int, int]] = []
    claim = queue.claim

    def claiming(worker: str) -> Any:
        tid = threading.get_native_id()
        claims.append((os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)))
        return claim(worker)

    queue.claim = claiming  # type: ignore[method-assign]
    before = os.getpriority(os.PRIO_PROCESS, 0)
    job_ids = [queue.enqueue("s", "branch", f"b{n}", "sync_branch")[0] for n in range(2)]
    thread = threading.Thread(target=pool.run_here, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not all(queue.get(j).state == DONE for j in job_ids):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, [queue.get(j) for j in job_ids]
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    expected = min(before + 3, 19)
    assert processor.nice == [expected, expected]  # both jobs, in one job thread
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    assert processor.policy == [policy, policy]
    # the worker thread's own priority and policy are untouched
    assert set(claims) == {(before, os.SCHED_OTHER)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # nor the process's
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_claims_renewals_and_ends_take_the_write_lock_inside_one_sqlite_call(db: Database) -> None:
    """No ``BEGIN IMMEDIATE`` ... ``COMMIT`` in a worker's hot path: between those statements
    the thread needs the interpreter, which the job's thread holds, with the database's write
    lock held; the intake's webhooks waited for it (0.5-0.7 s, docs/benchmarks.md)."""
    queue = JobQueue(db)
    opened: list[str] = []
    transaction = db.transaction

    def spied() -> Any:
        opened.append("transaction")
        return transaction()

    first = queue.enqueue("s", "branch", "a", "sync_branch")[0]
    second = queue.enqueue("s", "branch", "b", "sync_branch")[0]
    db.transaction = spied  # type: ignore[method-assign]
    job = queue.claim("1:w")
    assert job is not None
    assert job.id == first
    assert queue.renew(job.id, "1:w", job.generation)
    assert queue.complete(job.id, "1:w", job.generation)
    other = queue.claim("1:w")
    assert other is not None
    assert other.id == second
    assert queue.retry_later(other.id, "1:w", 60, "later", other.generation)
    assert queue.claim("1:w") is None  # nothing due
    assert opened == []


def test_the_job_threads_writes_take_the_write_lock_inside_one_sqlite_call(db: Database) -> None:
    """The status, progress and merge records a job writes: the job thread runs at a low
    priority (SCHED_IDLE), and preempted between ``BEGIN IMMEDIATE`` and ``COMMIT`` it would
    hold the write lock the intake's webhooks wait for."""
    store = SqliteStatusStore(db)
    quarantine = Quarantine(db, Settings.load({}, None))
    opened: list[str] = []
    transaction = db.transaction

    def spied() -> Any:
        opened.append("transaction")
        return transaction()

    db.transaction = spied  # type: ignore[method-assign]
    status = RefStatus("s", "b", "branch", "s_b", "h" * 64, None, "processing")
    store.put_status(status)
    quarantine.record_progress(1, "h" * 64, "c" * 64, "raw/lb.csv")
    store.record_merge("s", "main", "c" * 64)
    store.delete_status("s", "gone")
    assert opened == []
    assert store.get_status("s", "b") == status
    assert quarantine.progress(1).dataset == "raw/lb.csv"
    assert store.merge_recorded("s", "main", "c" * 64)


# ---- reconciler ---------------------------------------------------------------------------------


def test_reconciler_finds_actions_on_any_branch_and_bounds_each_sweep(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    lakefs.create_branch("s", "a-first", "main")
    lakefs.create_branch("s", "zz-actions", "main")
    install(lakefs, "s", "zz-actions", "http://x:1")  # neither main nor the first branch
    for n in range(7):
        lakefs.create_branch("s", f"b{n}", "main")
    queue, store = JobQueue(db), SqliteStatusStore(db)
    reconciler = Reconciler(lakefs, queue, store, Metrics(), max_refs=4, server_url="http://x:1")
    assert reconciler.repositories() == ["s"]
    other = Reconciler(lakefs, queue, store, Metrics(), server_url="http://y:2")
    assert other.repositories() == []  # its actions call another server
    seen: set[str] = set()
    for _ in range(3):  # 10 branches, 4 per sweep: covered in three sweeps, round robin
        jobs = reconciler.sweep()
        assert len(jobs) <= 4
        seen |= {j.ref for j in map(queue.get, jobs) if j is not None}
    assert seen == {b.name for b in lakefs.list_branches("s")}


def test_a_sweep_queues_the_known_repositories_work_before_discovering_the_rest(
    db: Database,
) -> None:
    """A restarted server's first sweep: the missed commit of a repository lakehook has tables
    for is queued, and the workers woken, before a thousand other repositories are looked at."""
    lakefs = FakeLakeFS()
    for n in range(30):
        lakefs.create_repository(f"a{n}", f"local://a{n}")  # listed before "s"
    lakefs.create_repository("s", "local://s")
    install(lakefs, "s", "main", "http://x:1")
    queue, store = JobQueue(db), SqliteStatusStore(db)
    store.save_schema_name("s", "branch", "main", "s_main")  # lakehook has tables for "s"
    order: list[str] = []
    listed = lakefs.list_branches

    def listing(repo: str) -> Any:
        order.append(repo)
        return listed(repo)

    lakefs.list_branches = listing  # type: ignore[method-assign]
    woken: list[int] = []
    reconciler = Reconciler(
        lakefs,
        queue,
        store,
        Metrics(),
        wake=lambda: woken.append(len(order)),
        server_url="http://x:1",
    )
    jobs = reconciler.sweep()
    assert [queue.get(j).ref for j in jobs] == ["main"]  # type: ignore[union-attr]
    assert order[0] == "s"
    # woken once the known repository's job was queued, before the 30 others were listed
    assert woken
    assert set(order[: woken[0]]) == {"s"}
    assert len(order) > woken[0]  # the others were looked at after that


class CountingLakeFS(FakeLakeFS):
    """The fake lakeFS, counting the calls a sweep's discovery makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def list_branches(self, repo: str) -> Any:
        self._count("list_branches")
        return super().list_branches(repo)

    def list_objects(self, repo: str, ref: str, prefix: str = "") -> Any:
        self._count("list_objects")
        return super().list_objects(repo, ref, prefix)


def test_discovery_does_not_list_every_foreign_repository_on_every_sweep(db: Database) -> None:
    """A lakeFS of many repositories that are not lakehook's: one discovery, then only ours."""
    lakefs = CountingLakeFS()
    for n in range(50):  # other teams' repositories, or other lakehook servers'
        lakefs.create_repository(f"other{n}", f"local://other{n}")
    install(lakefs, "other0", "main", "http://y:2")
    lakefs.create_repository("s", "local://s")
    install(lakefs, "s", "main", "http://x:1")
    now = [1000.0]
    reconciler = Reconciler(
        lakefs,
        JobQueue(db),
        SqliteStatusStore(db),
        Metrics(),
        server_url="http://x:1",
        discovery_interval=600,
        clock=lambda: now[0],
    )
    assert reconciler.repositories() == ["s"]
    first = dict(lakefs.calls)
    assert first["list_branches"] == 51
    lakefs.calls.clear()
    for _ in range(10):  # the next sweeps: only "s" is looked at, its head's answer remembered
        now[0] += 5
        assert reconciler.repositories() == ["s"]
    assert lakefs.calls == {"list_branches": 10}
    # a commit on ours is a new head: looked at once
    lakefs.upload_object("s", "main", "raw/x.csv", b"a\n1\n")
    lakefs.commit("s", "main", "data", {})
    lakefs.calls.clear()
    assert reconciler.repositories() == ["s"]
    assert lakefs.calls == {"list_branches": 1, "list_objects": 1}
    # after the discovery interval, a repository that got lakehook's actions meanwhile is found
    install(lakefs, "other7", "main", "http://x:1")
    now[0] += 5
    assert reconciler.repositories() == ["s"]
    now[0] += 600
    assert sorted(reconciler.repositories()) == ["other7", "s"]


def test_reconciler_counts_errors_and_goes_on(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    install(lakefs, "s", "main", "http://x:1")
    lakefs.create_branch("s", "dev", "main")
    queue, store, metrics = JobQueue(db), SqliteStatusStore(db), Metrics()
    for branch in ("main", "dev"):
        head = lakefs.branch_head("s", branch)
        store.put_status(RefStatus("s", branch, "branch", f"s_{branch}", head, head, "synced"))

    class Broken(FakeProcessor):
        def metastore_problems(self, status: RefStatus) -> list[str]:
            if status.ref == "main":
                raise ServiceUnavailable("HMS down")
            return ["dm: table missing"]

    reconciler = Reconciler(lakefs, queue, store, metrics, processor=Broken())
    jobs = reconciler.sweep()
    assert [j.ref for j in map(queue.get, jobs) if j] == ["dev"]  # main's error did not stop it
    assert metrics.reconcile_errors._value.get() == 1


def test_a_sweep_during_a_service_outage_warns_without_a_traceback(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(FakeLakeFS):
        def list_repositories(self) -> list[str]:
            raise ServiceUnavailable("lakeFS unreachable: connection refused")

    metrics = Metrics()
    reconciler = Reconciler(Down(), JobQueue(db), SqliteStatusStore(db), metrics)
    with caplog.at_level("WARNING", logger="lakehook.worker"):
        assert reconciler.sweep() == []
    sweeps = [r for r in caplog.records if "sweep" in r.getMessage()]
    assert sweeps, caplog.text
    # an outage is expected weather, not a lakehook bug: a warning naming the service, no
    # traceback every sweep interval for as long as the service is down
    assert all(r.levelname == "WARNING" and not r.exc_info for r in sweeps), caplog.text
    assert "lakeFS unreachable" in caplog.text
    assert metrics.reconcile_errors._value.get() == 1


def test_a_sweep_that_hits_a_lakehook_bug_logs_the_traceback(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(FakeLakeFS):
        def list_repositories(self) -> list[str]:
            raise ZeroDivisionError("division by zero")

    reconciler = Reconciler(Buggy(), JobQueue(db), SqliteStatusStore(db), Metrics())
    assert reconciler.sweep() == []
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records), caplog.text


def test_reconciler_deletes_working_branches_no_job_needs(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    install(lakefs, "s", "main", "http://x:1")
    lakefs.create_branch("s", "dev", "main")
    lakefs.create_branch("s", "wip", "main")
    for name in ("_lakehook-main-0123456789ab", "_lakehook-dev-0123456789ab"):
        lakefs.create_branch("s", name, "main")
    lakefs.create_branch("s", "_lakehook-wip-0123456789ab", "main")
    lakefs.create_branch("s", "_lakehook-gone-0123456789ab", "main")  # its branch was deleted
    queue, store = JobQueue(db), SqliteStatusStore(db)
    queue.enqueue("s", "branch", "dev", "sync_branch")  # dev's job still needs its branch
    head = lakefs.branch_head("s", "wip")
    store.put_status(RefStatus("s", "wip", "branch", "s_wip", head, None, "pending"))
    clock = Clock()
    clock.now = 10_000.0
    reconciler = Reconciler(lakefs, queue, store, Metrics(), working_branch_grace=60, clock=clock)
    assert sorted(reconciler.clean_working_branches("s")) == [
        "_lakehook-gone-0123456789ab",
        "_lakehook-main-0123456789ab",
    ]
    left = {b.name for b in lakefs.list_branches("s")}
    assert {"_lakehook-dev-0123456789ab", "_lakehook-wip-0123456789ab"} <= left
    clock.now = 0.0  # within the grace period nothing is deleted
    lakefs.create_branch("s", "_lakehook-main-fedcba987654", "main")
    assert reconciler.clean_working_branches("s") == []


def test_generation_survives_reopen_of_an_old_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE job (id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, "
        "ref_type TEXT NOT NULL, ref TEXT NOT NULL, kind TEXT NOT NULL, "
        "args TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0, "
        "lease_until REAL NOT NULL DEFAULT 0, worker TEXT NOT NULL DEFAULT '', "
        "created_at REAL NOT NULL, started_at REAL, finished_at REAL, "
        "event TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '');"
    )
    conn.close()
    queue = JobQueue(Database(path))
    queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    assert job.generation == 1
    assert queue.complete(job.id, "w", 1)
    assert queue.counts()[DONE] == 1


# ---- the adapters' mapping at the edge ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "name", "expected"),
    [
        ("USER_ERROR", "SYNTAX_ERROR", TerminalError),
        ("INTERNAL_ERROR", "GENERIC_INTERNAL_ERROR", ServiceUnavailable),
        ("EXTERNAL", "HIVE_METASTORE_ERROR", ServiceUnavailable),
        ("INSUFFICIENT_RESOURCES", "EXCEEDED_GLOBAL_MEMORY_LIMIT", ServiceUnavailable),
    ],
)
def test_trino_errors_other_than_user_errors_are_service_failures(
    error_type: str, name: str, expected: type[Exception]
) -> None:
    import trino.exceptions

    from pipeline.adapters.trino_metastore import _translated

    err = trino.exceptions.TrinoQueryError(
        {"errorName": name, "errorType": error_type, "message": "boom"}, "q1"
    )
    with pytest.raises(expected), _translated("SELECT 1"):
        raise err
    assert classify(expected("x")).kind == (INPUT if expected is TerminalError else SERVICE)


def test_hms_meta_exception_is_a_service_failure() -> None:
    from pymetastore.hive_metastore import ttypes as hms

    from pipeline.adapters.hive_metastore import HiveMetastore

    adapter = HiveMetastore.__new__(HiveMetastore)
    adapter.host, adapter.port = "127.0.0.1", 9083
    adapter._local = threading.local()
    with pytest.raises(ServiceUnavailable), adapter._translated("create_table"):
        raise hms.MetaException(message="Got exception: java.io.IOException disk full")
    with pytest.raises(TerminalError), adapter._translated("create_table"):
        raise hms.InvalidObjectException(message="bad column type")


@pytest.mark.parametrize(
    ("status", "expected"),
    [(403, ServiceMisconfigured), (400, ServiceMisconfigured), (503, ServiceUnavailable)],
)
def test_s3_gateway_refusals_are_misconfiguration_not_outages(
    status: int, expected: type[Exception]
) -> None:
    from botocore.exceptions import ClientError

    from pipeline.adapters.lakefs import _s3_error

    err = ClientError(
        {"Error": {"Code": str(status)}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )
    mapped = _s3_error("upload s/main/x", err)
    assert type(mapped) is expected
    assert classify(mapped).kind == SERVICE
    assert classify(mapped).retry_in_place == (expected is ServiceUnavailable)


def test_timer_sweeps_forget_jobs_that_ended_before_the_retention(db: Database) -> None:
    """The reconciler's timer sweeps prune the job table (one replica at a time, under the
    sweep lock); an explicit reconcile of one repository does not."""
    queue, store = JobQueue(db), SqliteStatusStore(db)
    lakefs = FakeLakeFS()
    now = [1_000_000.0]
    reconciler = Reconciler(
        lakefs, queue, store, Metrics(), job_retention=7 * 86400, clock=lambda: now[0]
    )
    job_id, _ = queue.enqueue("s", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    assert queue.complete(job_id, "w", job.generation)
    db.connection().execute("UPDATE job SET finished_at=? WHERE id=?", (now[0] - 86400, job_id))
    reconciler.sweep()
    assert queue.get(job_id) is not None  # a day old: kept
    now[0] += 7 * 86400
    with pytest.raises(NotFound):
        reconciler.sweep("nowhere")
    assert queue.get(job_id) is not None  # an explicit sweep does not prune
    reconciler.sweep()
    assert queue.get(job_id) is None  # eight days old: forgotten
    # 0 keeps them for ever
    kept, _ = queue.enqueue("s", "branch", "dev", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    assert queue.complete(kept, "w", job.generation)
    db.connection().execute("UPDATE job SET finished_at=0 WHERE id=?", (kept,))
    Reconciler(lakefs, queue, store, Metrics(), job_retention=0).sweep()
    assert queue.get(kept) is not None
