"""The supervisor's restart/backoff and time-limit rules and the quarantine rule, on fakes.

Processes are fakes (``FakeProcess``), the clocks are plain numbers, the database is a real
SQLite file (it is what the processes share).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lakehook.errors import ConfigError
from lakehook.settings import Settings
from pipeline.model import RefStatus
from server import worker_main
from server.jobs import PENDING, QUARANTINED, JobQueue
from server.metrics import Metrics
from server.quarantine import (
    CRASHED,
    KILLED,
    MEMORY,
    TIME,
    Death,
    Progress,
    Quarantine,
    Quarantined,
    decide,
)
from server.store import Database, SqliteStatusStore
from server.supervisor import STABLE_SECONDS, Supervisor, backoff, death_of
from server.worker_main import EXIT_MEMORY, RECONCILER, WORKER, autogroup


class FakeProcess:
    pids = iter(range(1000, 100000))

    def __init__(self, role: str, index: int) -> None:
        self.role, self.index = role, index
        self.pid: int | None = next(self.pids)
        self.exitcode: int | None = None
        self.signals: list[str] = []

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self.signals.append("TERM")
        self.exitcode = -signal.SIGTERM

    def kill(self) -> None:
        self.signals.append("KILL")
        self.exitcode = -signal.SIGKILL

    def join(self, timeout: float | None = None) -> None:
        return None


class Harness:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.settings = replace(Settings.load({}), state_dir=tmp_path, workers=2, **overrides)
        self.db = Database(tmp_path / "jobs.sqlite")
        self.queue = JobQueue(self.db, lease_seconds=3600)
        self.store = SqliteStatusStore(self.db)
        self.quarantine = Quarantine(self.db, self.settings)
        self.metrics = Metrics()
        self.now = 100.0
        self.wall = 1_000_000.0
        self.started: list[FakeProcess] = []
        self.supervisor = Supervisor(
            self.settings,
            self.queue,
            self.quarantine,
            self.metrics,
            spawn=self.spawn,
            clock=lambda: self.now,
            wall=lambda: self.wall,
        )

    def spawn(self, role: str, index: int) -> FakeProcess:
        process = FakeProcess(role, index)
        self.started.append(process)
        return process

    def process(self, role: str = WORKER, index: int = 0) -> FakeProcess:
        slot = next(s for s in self.supervisor.slots if (s.role, s.index) == (role, index))
        assert isinstance(slot.process, FakeProcess)
        return slot.process

    def process_slot_empty(self, role: str = WORKER, index: int = 0) -> bool:
        slot = next(s for s in self.supervisor.slots if (s.role, s.index) == (role, index))
        return slot.process is None

    def claim_as(self, process: FakeProcess, ref: str = "main") -> int:
        self.queue.enqueue("s", "branch", ref, "sync_branch")
        job = self.queue.claim(f"{process.pid}:MainThread")
        assert job is not None
        return job.id

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_starts_one_process_per_worker_and_a_reconciler(h: Harness) -> None:
    h.supervisor.tick()
    assert sorted((p.role, p.index) for p in h.started) == [
        (RECONCILER, 0),
        (WORKER, 0),
        (WORKER, 1),
    ]
    h.supervisor.tick()
    assert len(h.started) == 3  # nothing ended, nothing restarted
    assert [w["pid"] for w in h.supervisor.workers()] == [p.pid for p in h.started]


def test_a_process_that_ends_is_replaced_after_an_exponential_backoff(h: Harness) -> None:
    h.supervisor.tick()
    delays = []
    for _ in range(5):
        first = h.process()
        first.exitcode = 1
        h.supervisor.tick()  # noticed; the replacement waits for its backoff
        ended_at = h.now
        assert h.process_slot_empty()
        while h.process_slot_empty():
            h.now += 0.25
            h.supervisor.tick()
        delays.append(h.now - ended_at)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert h.metric("lakehook_worker_restarts_total", role=WORKER, reason=CRASHED) == 5
    assert h.supervisor.workers()[0]["restarts"] == 5


def test_backoff_is_capped_and_starts_over_after_a_stable_run(h: Harness) -> None:
    assert [backoff(n, 30.0) for n in (1, 2, 3, 6, 7, 20)] == [0.5, 1.0, 2.0, 16.0, 30.0, 30.0]
    h.supervisor.tick()
    for _ in range(3):  # three quick exits
        h.process().exitcode = 1
        h.supervisor.tick()
        h.now += 10
        h.supervisor.tick()
    h.now += STABLE_SECONDS  # then it ran long enough
    h.process().exitcode = 1
    h.supervisor.tick()
    h.now += 0.5
    h.supervisor.tick()
    assert not h.process_slot_empty()


def test_exit_codes_say_which_limit(h: Harness) -> None:
    assert death_of(EXIT_MEMORY) == Death(MEMORY, "MemoryError")
    assert death_of(-signal.SIGKILL) == Death(KILLED, "SIGKILL")
    assert death_of(1) == Death(CRASHED, "exit code 1")
    assert death_of(-signal.SIGKILL, killed_for=TIME).reason == TIME


def test_a_job_whose_worker_dies_is_due_again_at_once(h: Harness) -> None:
    h.supervisor.tick()
    worker = h.process()
    job_id = h.claim_as(worker)
    h.quarantine.record_progress(job_id, "h1", "h1", "raw/big.csv")
    worker.exitcode = -signal.SIGKILL
    h.supervisor.tick()
    job = h.queue.get(job_id)
    assert job is not None
    assert (job.state, job.worker) == (PENDING, "")
    assert "SIGKILL" in job.error
    status = h.store.get_status("s", "main")
    assert status is not None
    assert status.state == "pending"
    assert "retried on another worker" in status.reason
    assert h.queue.claim("other:MainThread") is not None  # claimable at once


def test_second_death_on_one_head_quarantines_with_limit_file_and_hint(h: Harness) -> None:
    h.supervisor.tick()
    job_id = h.claim_as(h.process(WORKER, 0))
    h.quarantine.record_progress(job_id, "h1", "h1", "raw/LB_BIG.csv")
    h.process(WORKER, 0).exitcode = EXIT_MEMORY
    h.supervisor.tick()
    again = h.queue.claim(f"{h.process(WORKER, 1).pid}:MainThread")
    assert again is not None
    assert again.id == job_id
    h.quarantine.record_progress(job_id, "h1", "h1", "raw/LB_BIG.csv")
    h.process(WORKER, 1).exitcode = EXIT_MEMORY
    h.supervisor.tick()

    job = h.queue.get(job_id)
    assert job is not None
    assert job.state == QUARANTINED
    status = h.store.get_status("s", "main")
    assert status is not None
    assert (status.state, status.head_commit, status.source_commit) == ("failed", "h1", "h1")
    (error,) = status.errors
    assert error["stage"] == "quarantine"
    assert error["limit"] == MEMORY
    assert error["file"] == "raw/LB_BIG.csv"
    assert "memory ceiling" in error["message"]
    assert "LAKEHOOK_WORKER_MEMORY_LIMIT_MB" in error["hint"]
    assert h.metric("lakehook_quarantined_jobs_total", limit=MEMORY) == 1
    # never claimed again for that head: a new job for it is refused before any dataset
    with pytest.raises(Quarantined, match="quarantined"):
        h.quarantine.check("s", "branch", "main", "h1")
    h.quarantine.check("s", "branch", "main", "h2")  # a new head is processed again
    assert h.queue.claim("w") is None


def test_deaths_on_an_older_head_do_not_count() -> None:
    assert decide(Progress(head="h1", deaths=0)) == (1, False)
    assert decide(Progress(head="h1", deaths=1, death_head="h1")) == (2, True)
    assert decide(Progress(head="h2", deaths=1, death_head="h1")) == (1, False)


def test_a_job_past_its_time_limit_gets_its_worker_killed_then_quarantined(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, job_time_limit_seconds=60.0)
    h.supervisor.tick()
    worker = h.process()
    job_id = h.claim_as(worker)
    h.quarantine.record_progress(job_id, "h1", "h1", "raw/slow.csv")
    job = h.queue.get(job_id)
    assert job is not None
    assert job.started_at is not None
    h.wall = job.started_at + 59
    h.supervisor.tick()
    assert worker.signals == []
    h.wall = job.started_at + 61
    h.supervisor.tick()
    assert worker.signals == ["KILL"]
    h.supervisor.tick()  # noticed: first death, retried
    assert h.metric("lakehook_worker_restarts_total", role=WORKER, reason=TIME) == 1
    job = h.queue.get(job_id)
    assert job is not None
    assert job.state == PENDING
    h.now += 1
    h.supervisor.tick()
    second = h.queue.claim(f"{h.process(WORKER, 1).pid}:MainThread")
    assert second is not None
    h.wall = (second.started_at or 0) + 61
    h.supervisor.tick()
    h.supervisor.tick()
    status = h.store.get_status("s", "main")
    assert status is not None
    assert status.errors[0]["limit"] == TIME
    assert "wall-clock limit (60 s" in status.errors[0]["message"]
    assert "raw/slow.csv" in status.errors[0]["message"]


def test_stop_terminates_every_process(h: Harness) -> None:
    h.supervisor.tick()
    h.supervisor.stop_all()
    assert all(p.signals == ["TERM"] for p in h.started)
    assert all(w["pid"] is None for w in h.supervisor.workers())


def test_a_status_is_kept_when_quarantining(h: Harness) -> None:
    h.store.put_status(RefStatus("s", "main", "branch", "s_main", "h0", "h0", "synced"))
    h.supervisor.tick()
    job_id = h.claim_as(h.process())
    h.quarantine.record_progress(job_id, "h1", "h1", "raw/x.csv")
    for index in (0, 1):
        if index:
            assert h.queue.claim(f"{h.process(WORKER, 1).pid}:MainThread") is not None
        h.process(WORKER, index).exitcode = -signal.SIGKILL
        h.supervisor.tick()
    status = h.store.get_status("s", "main")
    assert status is not None
    assert status.schema == "s_main"  # the previous verified state stays visible
    assert status.errors[0]["limit"] == KILLED


# ---- test-only fault points of the worker processes (lakehook/faults.py) -------------------


def test_fault_points_narrowed_to_a_dataset_and_several_at_once() -> None:
    from lakehook import faults

    seen: list[str] = []
    faults.ACTIONS["record"] = seen.append
    try:
        faults.arm("before-dataset:LB_BOOM=record,after-verify=record", testing=True)
        faults.reached("before-dataset", "DM")
        faults.reached("before-dataset", "LB_BOOM")
        faults.reached("after-verify")
        assert seen == ["before-dataset:LB_BOOM", "after-verify"]
        with pytest.raises(ConfigError, match="unknown point"):
            faults.parse("before-lunch:X=record")
        with pytest.raises(ConfigError, match="tests only"):
            faults.validate("before-dataset:X=hang", testing=False)
    finally:
        faults.arm("", testing=True)
        del faults.ACTIONS["record"]


def test_allocate_refuses_to_eat_a_machine_without_a_ceiling() -> None:
    import resource

    from lakehook import faults

    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        pytest.fail("this test process has an address-space ceiling; the check needs none")
    with pytest.raises(MemoryError, match="no memory ceiling"):
        faults.ACTIONS["allocate"]("before-dataset:X")


def test_memory_error_ends_a_worker_process_and_a_quarantined_head_ends_its_job(
    h: Harness,
) -> None:
    from server.worker import WorkerPool
    from tests.fakes.processor import FakeProcessor

    class Exhausting(FakeProcessor):
        def sync_branch(self, repo: str, branch: str) -> RefStatus:
            pool.before_dataset("raw/x.csv", "h1", "h1")
            if branch == "boom":
                raise MemoryError
            return super().sync_branch(repo, branch)

    pool = WorkerPool(
        None,
        h.queue,
        Exhausting(),
        h.store,
        h.settings,
        h.metrics,
        quarantine=h.quarantine,
        fatal=(MemoryError,),
    )
    h.queue.enqueue("s", "branch", "boom", "sync_branch")
    with pytest.raises(MemoryError):  # not recorded as a failed job: the process must end
        pool.run_here(threading.Event())
    (running,) = h.queue.running()
    assert h.quarantine.progress(running.id).dataset == "raw/x.csv"

    error = {"stage": "quarantine", "kind": "input", "message": "quarantined: memory", "job": 0}
    h.db.connection().execute(
        "INSERT INTO quarantine VALUES ('s', 'branch', 'q', 'h1', 0, ?, 0)", (json.dumps(error),)
    )
    job_id, _ = h.queue.enqueue("s", "branch", "q", "sync_branch")
    stop = threading.Event()
    waiter = threading.Thread(target=pool.run_here, args=(stop,))
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while (job := h.queue.get(job_id)) is not None and job.state != QUARANTINED:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    finally:
        stop.set()
        waiter.join(10)
    # the refused job's own "processing" mark does not hide the quarantine
    status = h.store.get_status("s", "q")
    assert status is not None
    assert (status.state, status.errors[0]["stage"]) == ("failed", "quarantine")


def test_the_intake_never_checkpoints_in_a_commit_its_supervisor_does(tmp_path: Path) -> None:
    """A webhook's commit used to pay for SQLite's automatic WAL checkpoint (an fsync of the
    database file) whenever it pushed the WAL past 1000 pages: a p99 spike under disk load."""
    from server.app import build_context
    from tests.fakes.lakefs import FakeLakeFS
    from tests.fakes.processor import FakeProcessor

    settings = replace(Settings.load({}), state_dir=tmp_path, workers=1)
    ctx = build_context(settings, FakeProcessor(), FakeLakeFS(), intake_only=True)
    assert ctx.state is not None
    state = ctx.state
    db = state.db
    assert isinstance(db, Database)
    assert db.connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for n in range(1500):  # each a webhook's commit
        ctx.queue.enqueue("s", "tag", f"t{n}", "delete_tag")
    wal = Path(f"{settings.jobs_db}-wal")
    assert wal.stat().st_size > 2 * 1000 * 4096  # no commit copied the WAL back

    supervisor = Supervisor(
        settings, ctx.queue, state.quarantine(settings), Metrics(), spawn=FakeProcess
    )
    supervisor.tick()  # checkpoints (and starts the processes)
    ctx.queue.enqueue("s", "tag", "after", "delete_tag")  # the WAL starts over after it
    busy, frames, _ = db.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, frames < 50) == (0, True), frames
    assert (
        Database(tmp_path / "w.sqlite")
        .connection()
        .execute("PRAGMA wal_autocheckpoint")
        .fetchone()[0]
        == 1000
    )  # the workers keep SQLite's own checkpoints


def _leave_in_a_child(
    increment: int, prelude: str = "", *, leader: bool = False
) -> tuple[int | None, int, Any]:
    """leave_intake_group(increment) in a new interpreter (a session leader already if
    ``leader``): its answer, the child's session, and the child's scheduling group afterwards
    (never setsid() the test process itself)."""
    code = (
        "import json, os; import server.worker_main as w; real = w.autogroup; "
        f"{prelude}"
        f"nice = w.leave_intake_group({increment}); "
        "print(json.dumps([nice, os.getsid(0), real()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=leader,
    )
    nice, session, group = json.loads(out.stdout)
    return nice, session, group


def test_a_worker_process_leaves_the_intakes_scheduling_group() -> None:
    """Autogroup scheduling shares the cores between sessions first: the workers' busy session
    must not be the intake's (issue 16), and a group's niceness follows the increment, from
    0 where the intake is in the kernel's root group (the CI machine runs its jobs there).
    Where the kernel makes no autogroups, only the session changes and no niceness is
    claimed."""
    mine = autogroup()
    nice, session, group = _leave_in_a_child(3)
    assert session != os.getsid(0)  # a session of its own
    if mine is None:
        assert (nice, group) == (None, None)
    else:
        assert group[0] != mine[0]  # so a scheduling group of its own
        assert nice == group[1] == min(mine[1] + 3, 19)
    # LAKEHOOK_WORKER_NICE=0 turns it off: the process stays in the intake's session and group
    nice, session, group = _leave_in_a_child(0)
    assert (nice, session) == (None, os.getsid(0))
    assert group == (None if mine is None else list(mine))


def test_autogroup_reads_a_group_the_root_group_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty /proc/<pid>/autogroup is the kernel's root group, not "no autogroups": the CI
    machine's intake runs there, and until 2026-12-02 its workers then kept their new
    groups at the intake's weight (a CI failure: groups at nice 0 where 10 was due)."""
    for pid, text in {"1": "/autogroup-42 nice 5\n", "2": "", "3": "garbage\n"}.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "autogroup").write_text(text)
    monkeypatch.setattr(worker_main, "PROC", tmp_path)
    assert autogroup(1) == ("/autogroup-42", 5)
    assert autogroup(2) == (worker_main.ROOT_GROUP, 0)
    assert autogroup(3) is None  # unreadable: treated as none, never a crash
    assert autogroup(4) is None  # no file: a kernel without autogroups


def test_an_intake_in_the_root_group_sends_a_worker_to_a_nicer_group_of_its_own() -> None:
    """The CI machine's case on any machine: the intake's group reads as the root group."""
    first = (
        "calls = [(w.ROOT_GROUP, 0)]; "
        "w.autogroup = lambda pid='self': calls.pop() if calls else real(pid); "
    )
    nice, session, group = _leave_in_a_child(3, first)
    assert session != os.getsid(0)
    if autogroup() is not None:  # a kernel with autogroups: the child's new group is nicer
        assert group[0] != worker_main.ROOT_GROUP
        assert nice == group[1] == 3


def test_a_session_leader_never_renices_the_group_it_is_in() -> None:
    """setsid() fails for a session leader, which stays in its group: writing a niceness then
    would slow down whatever else shares that group (before 2026-12-02 it was written)."""
    nice, _, group = _leave_in_a_child(3, leader=True)
    assert nice is None
    assert group is None or group[1] == 0


def test_no_autogroup_means_a_session_of_its_own_and_nothing_written() -> None:
    """A kernel without autogroups: no group to read is no failure, and no niceness is
    written to a group that the kernel does not have."""
    nice, session, group = _leave_in_a_child(3, "w.autogroup = lambda pid='self': None; ")
    assert (nice, session != os.getsid(0)) == (None, True)
    assert group is None or group[1] == 0  # a new group starts at 0, and nobody changed it
