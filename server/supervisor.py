"""The intake's supervisor: starts the worker processes and replaces those that end.

``lakehook serve`` is one intake process (CherryPy: webhooks, gate, status API, health,
metrics; it never processes and never writes to lakeFS) plus ``settings.workers`` worker
processes and one reconciler process (``server.worker_main``), forked by a fork server that
shares nothing with the intake (``spawn_process``): they share only the SQLite database and
the metrics directory.

Each tick the supervisor

* notices a process that ended, accounts for the job it held (``server.quarantine``: retried
  once, quarantined the second time) and starts a replacement after an exponential backoff
  (``RESTART_BASE`` doubling per quick successive exit, capped by
  ``worker_restart_max_seconds``; a process that lived ``STABLE_SECONDS`` starts over);
* kills a worker whose job has run past ``job_time_limit_seconds`` (its lease is no longer
  renewed either), which then counts as a death of that job;
* every ``CHECKPOINT_SECONDS``, checkpoints the database's WAL, so that no webhook's commit
  has to (``server.store.Database``, ``autocheckpoint=False`` in the intake).

Everything time- and process-related is injected (``spawn``, ``clock``, ``wall``), so the
restart and backoff rules are tested on fakes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lakehook.settings import Settings
from server.jobs import QUARANTINED, Queue
from server.metrics import Metrics
from server.quarantine import CRASHED, KILLED, MEMORY, TIME, Death, Quarantine
from server.store import Database
from server.worker_main import EXIT_MEMORY, RECONCILER, WORKER

log = logging.getLogger("lakehook.supervisor")

RESTART_BASE = 0.5  # seconds before the first restart; doubles per quick successive exit
STABLE_SECONDS = 60.0  # a process that lived this long restarts after RESTART_BASE again
TICK = 0.1  # seconds between looks at the processes
CHECKPOINT_SECONDS = 1.0  # the intake's WAL checkpoint, off the request path (server.store)
STOP_GRACE = 10.0  # seconds a stopping worker may take to finish its job before SIGKILL


class Process(Protocol):
    """What the supervisor needs of a started process (``multiprocessing.Process``)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


Spawn = Callable[[str, int], Process]


# imported once by the fork server, so that a worker (or its replacement) is ready at once
PRELOAD = [
    "server.worker_main",
    "server.gate_process",
    "server.worker",
    "server.metrics",
    "pipeline.service",
    "pipeline.adapters.lakefs",
    "pipeline.adapters.hive_metastore",
    "pipeline.adapters.trino_metastore",
    "pipeline.lineage",
]


def spawn_process(settings: Settings) -> Spawn:
    """Start ``server.worker_main.main`` in a fresh process.

    The ``forkserver`` method: a single-threaded server process, started from a fresh
    interpreter, imports lakehook once (``PRELOAD``; seconds of imports) and forks each worker
    from that clean state, so nothing of the intake (its threads, sockets, locks) reaches a
    worker and a replacement starts in milliseconds. The fork server ends with the intake;
    the workers end with the fork server (``PR_SET_PDEATHSIG``).
    """
    from server import worker_main

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)

    def spawn(role: str, index: int) -> Process:
        ready = context.Event()  # set by the process once it can take jobs
        process = context.Process(
            target=worker_main.main,
            args=(settings, role, index, os.getpid(), ready),
            name=f"lakehook-{role}-{index}",
            daemon=False,
        )
        process.start()
        process.ready = ready  # type: ignore[attr-defined]
        return process

    return spawn


def backoff(failures: int, cap: float) -> float:
    """Seconds before restarting a process that ended ``failures`` times in quick succession."""
    return float(min(RESTART_BASE * 2 ** max(failures - 1, 0), cap))


def death_of(exitcode: int | None, killed_for: str = "") -> Death:
    """Why a process ended, from its exit code (or what the supervisor killed it for)."""
    if killed_for:
        return Death(killed_for, "killed by the supervisor")
    if exitcode == EXIT_MEMORY:
        return Death(MEMORY, "MemoryError")
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return Death(KILLED, name)
    return Death(CRASHED, f"exit code {exitcode}")


@dataclass
class Slot:
    """One process the supervisor keeps running."""

    role: str
    index: int
    process: Process | None = None
    started: float = 0.0
    failures: int = 0  # quick successive exits
    restart_at: float = 0.0
    killed_for: str = ""  # set when the supervisor kills it (the time limit)
    restarts: int = 0

    def describe(self) -> dict[str, Any]:
        ready = getattr(self.process, "ready", None)
        return {
            "role": self.role,
            "index": self.index,
            "pid": self.process.pid if self.process is not None else None,
            "ready": bool(ready is not None and ready.is_set()),
            "restarts": self.restarts,
        }


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        queue: Queue,
        quarantine: Quarantine,
        metrics: Metrics,
        spawn: Spawn | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.queue, self.quarantine, self.metrics = (
            settings,
            queue,
            quarantine,
            metrics,
        )
        self.spawn = spawn or spawn_process(settings)
        self.clock, self.wall = clock, wall
        self.slots = [Slot(WORKER, n) for n in range(settings.workers)] + [Slot(RECONCILER, 0)]
        self._lock = threading.Lock()
        self._checkpointed = float("-inf")

    # ---- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        """Free the jobs of a previous server's dead workers, start every process."""
        recovered = self.queue.recover()
        if recovered:
            log.info("re-queued %d job(s) left running by a previous server", recovered)
        self.tick()

    def run(self, stop: threading.Event) -> None:
        """Start the processes, keep them running until ``stop`` is set, then stop them."""
        try:
            self.start()
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # the supervisor must outlive any one bad tick
                    log.exception("supervisor tick failed")
                stop.wait(TICK)
        finally:
            self.stop_all()

    def tick(self) -> None:
        now = self.clock()
        with self._lock:
            for slot in self.slots:
                process = slot.process
                if process is not None and not process.is_alive():
                    self._ended(slot, process, now)
                if slot.process is None and now >= slot.restart_at:
                    self._start(slot, now)
            self._enforce_time_limit()
        db = getattr(self.queue, "db", None)
        if isinstance(db, Database) and now - self._checkpointed >= CHECKPOINT_SECONDS:
            self._checkpointed = now  # (PostgreSQL needs none of this)
            db.checkpoint()

    def workers(self) -> list[dict[str, Any]]:
        """Role, pid and restarts of each process (no lock: ``/healthz`` never waits)."""
        return [slot.describe() for slot in list(self.slots)]

    # ---- steps ------------------------------------------------------------------------------
    def _start(self, slot: Slot, now: float) -> None:
        slot.process = self.spawn(slot.role, slot.index)
        slot.started, slot.killed_for = now, ""
        log.info("started %s %d (pid %s)", slot.role, slot.index, slot.process.pid)

    def _ended(self, slot: Slot, process: Process, now: float) -> None:
        process.join(0)
        death = death_of(process.exitcode, slot.killed_for)
        log.warning(
            "%s %d (pid %s) ended: %s (%s)",
            slot.role,
            slot.index,
            process.pid,
            death.reason,
            death.detail,
        )
        for job in self.queue.running():
            if job.worker.split(":")[0] == str(process.pid):
                outcome = self.quarantine.after_death(job, death)
                if outcome == QUARANTINED:
                    self.metrics.quarantined.labels(death.reason).inc()
                    log.error("job %d quarantined after its second worker death", job.id)
                else:
                    log.warning("job %d is due again after its worker ended", job.id)
        slot.failures = 1 if now - slot.started >= STABLE_SECONDS else slot.failures + 1
        slot.restart_at = now + backoff(slot.failures, self.settings.worker_restart_max_seconds)
        slot.process = None
        slot.restarts += 1
        self.metrics.worker_restarts.labels(slot.role, death.reason).inc()

    def _enforce_time_limit(self) -> None:
        limit = self.settings.job_time_limit_seconds
        by_pid = {
            str(s.process.pid): s
            for s in self.slots
            if s.process is not None and s.role == WORKER and not s.killed_for
        }
        for job in self.queue.running():
            slot = by_pid.get(job.worker.split(":")[0])
            if slot is None or job.started_at is None or self.wall() - job.started_at <= limit:
                continue
            log.error(
                "job %d ran past its time limit (%.0f s); killing its worker (pid %s)",
                job.id,
                limit,
                job.worker,
            )
            slot.killed_for = TIME
            assert slot.process is not None
            slot.process.kill()

    def stop_all(self) -> None:
        """SIGTERM every process (a worker finishes its job), SIGKILL what is left after
        ``STOP_GRACE``. Their jobs are taken up by the next start (``Queue.recover``)."""
        with self._lock:
            alive = [s.process for s in self.slots if s.process is not None]
            for process in alive:
                if process.is_alive():
                    process.terminate()
            deadline = time.monotonic() + STOP_GRACE
            for process in alive:
                process.join(max(deadline - time.monotonic(), 0))
                if process.is_alive():
                    process.kill()
                    process.join(5)
            for slot in self.slots:
                slot.process = None


class SupervisorPlugin:
    """Runs the supervisor on its own thread while the CherryPy engine runs."""

    def __init__(self, bus: Any, supervisor: Supervisor) -> None:
        self.bus, self.supervisor = bus, supervisor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self) -> None:
        self.bus.subscribe("start", self.start)
        # before the HTTP server (50): a worker finishing its merge still needs the intake to
        # answer lakeFS's pre-merge hook, or the merge is refused
        self.bus.subscribe("stop", self.stop, priority=10)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.supervisor.run, args=(self._stop,), name="lakehook-supervisor"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_GRACE + 10)
            self._thread = None
