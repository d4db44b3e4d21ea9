"""One behaviour suite for both job queues and state stores: SQLite (one server) and PostgreSQL
(replicas sharing ``LAKEHOOK_QUEUE_URL``).

Each test opens the backend as several independent handles (``Backend.open``: own
connections, like separate processes or replicas). The PostgreSQL half runs against the local
stack's ``lakehook`` database, in a schema of its own per test (parallel-safe), is marked
``stack`` and FAILS, never skips, when that PostgreSQL does not answer.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
import pytest

from lakehook.errors import LeaseLost, ServiceUnavailable
from lakehook.settings import Settings
from lakehook.stack.components import stack_queue_url
from pipeline.model import RefStatus
from server.jobs import DONE, FAILED, PENDING, QUARANTINED, RUNNING, Lease
from server.quarantine import KILLED, Death
from server.state import State, open_state

WAIT = 20.0  # seconds any poll below may take on a loaded machine


@dataclass
class Backend:
    name: str
    settings: Settings
    opened: list[State] = field(default_factory=list)

    def open(self, lease_seconds: float = 60.0) -> State:
        """A new handle on the one shared database (its own connections)."""
        settings = replace(self.settings, job_lease_seconds=lease_seconds)
        try:
            state = open_state(settings, "worker")
        except ServiceUnavailable as err:
            pytest.fail(
                f"the local stack's PostgreSQL does not answer ({err}): `lakehook stack up`"
            )
        self.opened.append(state)
        return state


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.stack)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    settings = Settings(state_dir=tmp_path / "state")
    schema = f"queue_contract_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        url = f"{stack_queue_url(Settings.load())}?options=-csearch_path%3D{schema}"
        settings = replace(settings, queue_url=url)
    subject = Backend(request.param, settings)
    yield subject
    for state in subject.opened:
        state.close()
    if request.param == "postgresql" and subject.opened:  # (nothing to drop when it never ran)
        with psycopg.connect(stack_queue_url(Settings.load()), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def poll(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT:.0f} s")
        time.sleep(0.01)


def test_claim_leases_with_a_new_generation_and_one_job_per_ref(backend: Backend) -> None:
    queue = backend.open().queue
    assert queue.claim("w") is None
    assert not queue.has_due()
    job_id, coalesced = queue.enqueue("r", "branch", "main", "sync_branch", event="post-commit")
    assert not coalesced
    assert queue.has_due()
    job = queue.claim("w1")
    assert job is not None
    assert job.id == job_id
    assert (job.state, job.generation, job.attempts, job.worker) == (RUNNING, 1, 1, "w1")
    assert queue.claim("w2") is None  # nothing else is due
    assert queue.holds(job.id, 1)
    assert queue.renew(job.id, "w1", 1)
    assert not queue.renew(job.id, "w2", 1)  # only the holder renews


def test_pending_jobs_of_one_ref_coalesce_and_a_running_one_gets_one_successor(
    backend: Backend,
) -> None:
    a, b = backend.open().queue, backend.open().queue
    first, coalesced = a.enqueue("r", "branch", "main", "sync_branch")
    assert (b.enqueue("r", "branch", "main", "sync_branch"), coalesced) == ((first, True), False)
    # a delete supersedes a pending sync; a sync after it supersedes the delete again
    assert b.enqueue("r", "branch", "main", "delete_branch") == (first, True)
    assert a.get(first).kind == "delete_branch"  # type: ignore[union-attr]
    other, _ = a.enqueue("r", "branch", "dev", "sync_branch")
    assert other != first
    job = a.claim("w1")
    assert job is not None
    assert job.id == first
    successor, coalesced = b.enqueue("r", "branch", "main", "sync_branch")
    assert successor not in (first, other)
    assert not coalesced
    assert b.enqueue("r", "branch", "main", "sync_branch") == (successor, True)
    # the ref's successor waits while its job runs; the other ref is claimed meanwhile
    second = b.claim("w2")
    assert second is not None
    assert second.id == other
    assert b.claim("w3") is None
    assert a.complete(first, "w1", 1)
    third = b.claim("w3")
    assert third is not None
    assert third.id == successor
    assert b.active_refs("r") == {("branch", "main"), ("branch", "dev")}


def test_an_expired_lease_is_fenced_and_the_job_completes_exactly_once(
    backend: Backend,
) -> None:
    old_side, new_side = backend.open(lease_seconds=0.3), backend.open(lease_seconds=60)
    job_id, _ = old_side.queue.enqueue("r", "branch", "main", "sync_branch")
    job = old_side.queue.claim("old")
    assert job is not None
    lease = Lease(old_side.queue, job, "old")
    lease.check()  # held
    poll(new_side.queue.has_due, "the lease's expiry")
    taken = new_side.queue.claim("new")
    assert taken is not None
    assert taken.id == job_id
    assert taken.generation == job.generation + 1
    # the old holder is fenced out of every write
    with pytest.raises(LeaseLost):
        lease.check()
    assert not old_side.queue.renew(job_id, "old", job.generation)
    assert not old_side.queue.complete(job_id, "old", job.generation)
    assert not old_side.queue.fail(job_id, "old", "x", job.generation)
    assert not old_side.queue.retry_later(job_id, "old", 0, "x", job.generation)
    assert not old_side.queue.release(job_id, "old", job.generation, "x")
    # the same worker name with the stale generation is fenced too
    assert not new_side.queue.complete(job_id, "new", job.generation)
    assert new_side.queue.complete(job_id, "new", taken.generation)
    assert not new_side.queue.complete(job_id, "new", taken.generation)  # exactly once
    done = new_side.queue.get(job_id)
    assert done is not None
    assert done.state == DONE
    assert done.attempts == 2
    assert new_side.queue.counts()[DONE] == 1


def test_a_renewed_lease_does_not_expire(backend: Backend) -> None:
    queue = backend.open(lease_seconds=0.6).queue
    queue.enqueue("r", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    lease = Lease(queue, job, "w")
    until = time.monotonic() + 1.5
    while time.monotonic() < until:  # renew every tenth of a second for longer than a lease
        assert lease.renew()
        assert not queue.has_due()
        time.sleep(0.1)
    lease.check()
    assert queue.complete(job.id, "w", job.generation)


def test_lease_expiry_is_decided_by_the_databases_clock(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose wall clock runs an hour fast must not take leases that are still held:
    PostgreSQL compares leases on its own clock. (SQLite serves one machine, one clock.)"""
    holder, skewed = backend.open(lease_seconds=60), backend.open(lease_seconds=60)
    holder.queue.enqueue("r", "branch", "main", "sync_branch")
    job = holder.queue.claim("holder")
    assert job is not None
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    if backend.name == "postgresql":
        assert not skewed.queue.has_due()
        assert skewed.queue.claim("skewed") is None
        assert holder.queue.holds(job.id, job.generation)
    else:
        assert skewed.queue.has_due()


def test_retry_later_waits_and_release_is_due_at_once(backend: Backend) -> None:
    queue = backend.open().queue
    job_id, _ = queue.enqueue("r", "branch", "main", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    assert queue.retry_later(job_id, "w", 3600, "lakeFS down", job.generation)
    assert not queue.has_due()
    assert queue.claim("w") is None
    got = queue.get(job_id)
    assert got is not None
    assert (got.state, got.error) == (PENDING, "lakeFS down")
    # an event makes a waiting job due at once; a reconcile sweep keeps its backoff
    assert queue.enqueue("r", "branch", "main", "sync_branch", event="reconcile") == (job_id, True)
    assert queue.claim("w") is None
    assert queue.enqueue("r", "branch", "main", "sync_branch", event="post-commit") == (
        job_id,
        True,
    )
    again = queue.claim("w")
    assert again is not None
    assert again.generation == 2
    assert queue.release(job_id, "w", again.generation, "stopping")
    third = queue.claim("w")
    assert third is not None
    assert third.generation == 3
    assert queue.fail(job_id, "w", "bad CSV", third.generation)
    failed = queue.get(job_id)
    assert failed is not None
    assert (failed.state, failed.error) == (FAILED, "bad CSV")


def test_racing_claimers_take_each_job_exactly_once(backend: Backend) -> None:
    """Eight claimers, each on its own handle, race for 60 jobs on 30 refs (two jobs a ref:
    one whose lease ran out plus its successor): every job runs once, never two of one ref
    at the same moment."""
    setup = backend.open(lease_seconds=3)
    refs = [f"b{i}" for i in range(30)]
    for ref in refs:  # a job whose worker vanished, and a pending successor
        setup.queue.enqueue("r", "branch", ref, "sync_branch")
    claimed_first = {job.id for _ in refs if (job := setup.queue.claim("vanished")) is not None}
    assert len(claimed_first) == len(refs)
    for ref in refs:
        setup.queue.enqueue("r", "branch", ref, "sync_branch")
    total = 2 * len(refs)

    handles = [backend.open(lease_seconds=60) for _ in range(8)]
    lock = threading.Lock()
    running: dict[str, str] = {}
    runs: list[tuple[int, int]] = []
    overlaps: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(handles))

    def claimer(n: int, state: State) -> None:
        worker = f"{os.getpid()}:c{n}"
        try:
            start.wait()
            deadline = time.monotonic() + WAIT * 2
            while len(runs) < total and time.monotonic() < deadline:
                job = state.queue.claim(worker)  # the vanished worker's, once its lease ran out
                if job is None:
                    time.sleep(0.01)
                    continue
                with lock:
                    if job.ref in running:
                        overlaps.append(job.ref)
                    running[job.ref] = worker
                time.sleep(0.002)  # "work"
                with lock:
                    running.pop(job.ref, None)
                    runs.append((job.id, job.generation))
                assert state.queue.complete(job.id, worker, job.generation)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=claimer, args=(n, h)) for n, h in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert errors == []
    assert overlaps == []
    ids = [job_id for job_id, _ in runs]
    assert len(ids) == len(set(ids)) == total
    assert setup.queue.counts()[DONE] == total
    assert setup.queue.counts()[RUNNING] == setup.queue.counts()[PENDING] == 0


def test_racing_enqueues_of_one_event_make_one_job(backend: Backend) -> None:
    """Replicas receiving the same webhook at once (lakeFS retries, duplicates): one job."""
    handles = [backend.open() for _ in range(6)]
    start = threading.Barrier(len(handles))
    results: list[tuple[int, bool]] = []

    def deliver(state: State) -> None:
        start.wait()
        for _ in range(5):
            results.append(state.queue.enqueue("r", "branch", "main", "sync_branch"))

    threads = [threading.Thread(target=deliver, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(not coalesced for _, coalesced in results) == 1
    assert handles[0].queue.counts()[PENDING] == 1


def test_recover_frees_only_this_hosts_dead_workers_jobs(backend: Backend) -> None:
    queue = backend.open().queue
    dead_pid = 2**22 + 7  # above Linux's pid_max default: never a live process
    mine = queue.worker_name("t")
    names = {
        "dead": mine.replace(str(os.getpid()), str(dead_pid), 1),
        "alive": mine.replace(str(os.getpid()), str(os.getppid()), 1),
    }
    ids = {}
    for ref, worker in names.items():
        ids[ref], _ = queue.enqueue("r", "branch", ref, "sync_branch")
        job = queue.claim(worker)
        assert job is not None
        assert job.id == ids[ref]
    if backend.name == "postgresql":
        ids["elsewhere"], _ = queue.enqueue("r", "branch", "elsewhere", "sync_branch")
        assert queue.claim(f"{dead_pid}:t@another-host") is not None
    assert queue.recover() == 1
    states = {ref: queue.get(i).state for ref, i in ids.items()}  # type: ignore[union-attr]
    assert states.pop("dead") == PENDING
    assert set(states.values()) == {RUNNING}
    assert {j.worker for j in queue.running()} == {names["alive"]}


def test_only_one_reconciler_sweeps_at_a_time(backend: Backend) -> None:
    a, b = backend.open().queue, backend.open().queue
    with a.sweep_lock() as mine:
        assert mine
        with b.sweep_lock() as theirs:
            # one server has one reconciler (SQLite); replicas take turns (PostgreSQL)
            assert theirs is (backend.name == "sqlite")
    with b.sweep_lock() as theirs:
        assert theirs


def test_statuses_schema_names_and_merge_records_are_shared(backend: Backend) -> None:
    a, b = backend.open().store, backend.open().store
    status = RefStatus("r", "main", "branch", "r_main", "c1", None, "synced", updated_at=1.0)
    a.put_status(status)
    a.put_status(replace(status, state="processing", updated_at=2.0))
    seen = b.get_status("r", "main")
    assert seen is not None
    assert seen.state == "processing"
    assert [s.ref for s in b.list_statuses("r")] == ["main"]
    b.delete_status("r", "main")
    assert a.get_status("r", "main") is None

    assert not b.merge_recorded("r", "main", "c1")
    a.record_merge("r", "main", "c1")
    a.record_merge("r", "main", "c1")  # every attempt records afresh
    assert b.merge_recorded("r", "main", "c1")
    assert not b.merge_recorded("r", "dev", "c1")

    # two refs whose names collide, claimed at the same moment from two handles: two schemas
    handles = [backend.open().store for _ in range(4)]
    start = threading.Barrier(len(handles))
    names: dict[str, str] = {}

    def claim(n: int) -> None:
        ref = "a-b" if n % 2 else "a_b"
        start.wait()
        names[f"{ref}/{n}"] = handles[n].save_schema_name("r", "branch", ref, "r_a_b")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    by_ref = {key.split("/")[0]: name for key, name in names.items()}
    assert len(names) == 4
    assert len(set(names.values())) == 2
    assert set(by_ref.values()) == set(a.schema_mapping().values())
    assert "r_a_b" in by_ref.values()


def test_two_worker_deaths_on_one_head_quarantine_it_for_every_handle(
    backend: Backend,
) -> None:
    a, b = backend.open(), backend.open()
    quarantine = a.quarantine(a_settings := replace(backend.settings))
    job_id, _ = a.queue.enqueue("r", "branch", "main", "sync_branch")
    for round_ in (1, 2):
        job = a.queue.claim(a.queue.worker_name("t"))
        assert job is not None
        assert job.id == job_id
        quarantine.record_progress(job_id, "head1", "src0", "raw/lb.csv")
        state = quarantine.after_death(job, Death(KILLED, "SIGKILL"))
        assert state == (PENDING if round_ == 1 else QUARANTINED)
    assert a.queue.claim("w") is None
    ended = b.queue.get(job_id)
    assert ended is not None
    assert ended.state == QUARANTINED
    from server.quarantine import Quarantined

    with pytest.raises(Quarantined):
        b.quarantine(a_settings).check("r", "branch", "main", "head1")
    b.quarantine(a_settings).check("r", "branch", "main", "head2")  # a new head runs
    status = b.store.get_status("r", "main")
    assert status is not None
    assert status.state == "failed"
    assert "raw/lb.csv" in str(status.errors)


def test_jobs_that_ended_before_the_retention_are_forgotten_and_nothing_else(
    backend: Backend,
) -> None:
    """Without pruning the job table only grew: at a million jobs every /metrics counted
    them (80-140 ms) and a repository's job list took 230 ms (measured 2026-12-02)."""
    state = backend.open()
    queue = state.queue
    ended: dict[str, int] = {}
    for n, outcome in enumerate(("done", "failed", "done-recent")):
        job_id, _ = queue.enqueue("r", "branch", f"b{n}", "sync_branch")
        job = queue.claim("w")
        assert job is not None
        assert job.id == job_id
        if outcome == "failed":
            assert queue.fail(job_id, "w", "broken", job.generation)
        else:
            assert queue.complete(job_id, "w", job.generation)
        ended[outcome] = job_id
    state.quarantine(backend.settings).record_progress(ended["done"], "h", "s", "raw/a.csv")
    quarantined, _ = queue.enqueue("r", "branch", "poison", "sync_branch")
    job = queue.claim("w")
    assert job is not None
    assert job.id == quarantined
    assert queue.end_quarantined(quarantined, "w", "killed twice", job.generation)
    pending, _ = queue.enqueue("r", "branch", "waiting", "sync_branch")
    # the first two ended long ago: move their ends back, as the database's clock would have
    db = queue.db  # type: ignore[attr-defined]
    for job_id in (ended["done"], ended["failed"], quarantined):
        db.connection().execute("UPDATE job SET finished_at=? WHERE id=?", (1000.0, job_id))
    db.connection().execute("UPDATE job SET created_at=? WHERE id=?", (1000.0, pending))

    assert queue.prune(before=2000.0) == 2
    assert queue.get(ended["done"]) is None
    assert queue.get(ended["failed"]) is None
    kept = {ended["done-recent"], pending, quarantined}
    assert {j.id for j in queue.recent("r")} == kept
    assert queue.prune(before=2000.0) == 0  # nothing more to forget
    faults = db.connection().execute(
        "SELECT count(*) AS n FROM job_fault WHERE job_id=?", (ended["done"],)
    )
    assert int(next(iter(faults))["n"]) == 0
