"""The durable job queue: one job per (repository, ref) at a time, coalesced, leased.

* ``enqueue`` records a job before the webhook is answered. A *pending* job for the same ref
  absorbs the new one (a newer head supersedes an older pending one: the job works from the
  head anyway); a running job for the same ref gets one pending successor.
* ``claim`` hands a worker the oldest due job whose ref has no running job, with a lease and
  a new **generation** (+1 per claim). Workers renew the lease while they work; a job whose
  lease ran out (its worker died, hung, or lost the database) is claimable again, by any
  process sharing the database file, and the new claim's generation fences the old one out.
* ``Lease`` is the worker's side of a claim and the job's ``lakehook.fence.Fence``: ``check()``
  before every write raises ``LeaseLost`` once the lease expired by the worker's own monotonic
  clock (renewals not confirmed in time) or the generation in the database is no longer its
  own. ``lease_until`` is stored as wall time so that other processes can see expiry; "do I
  still hold it" is decided by the generation, never by comparing clocks.
* ``complete``/``fail``/``retry_later``/``release`` end a claim only for the generation that
  holds it, so each job is finished exactly once, by its current holder.
* ``has_due`` is the cheap read a worker process polls before it tries to ``claim`` (a write).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from lakehook.errors import LeaseLost
from server.store import Database

PENDING, RUNNING, DONE, FAILED, SUPERSEDED = "pending", "running", "done", "failed", "superseded"
QUARANTINED = "quarantined"  # killed or exhausted two workers: never claimed again (quarantine)
STATES = (PENDING, RUNNING, DONE, FAILED, SUPERSEDED, QUARANTINED)
# forget jobs that ended before a time, and their fault records (DONE, FAILED, SUPERSEDED, time)
PRUNE = (
    "DELETE FROM job_fault WHERE job_id IN (SELECT id FROM job WHERE state IN (?, ?, ?) "
    "AND COALESCE(finished_at, created_at) < ?)",
    "DELETE FROM job WHERE state IN (?, ?, ?) AND COALESCE(finished_at, created_at) < ?",
)


def prune_ended(db: Any, before: float) -> int:
    """Delete the jobs that ended before ``before`` and their fault records, in one
    transaction of ``db`` (the SQLite ``Database`` or the PostgreSQL one: the same SQL)."""
    params = (DONE, FAILED, SUPERSEDED, before)
    with db.transaction() as tx:
        tx.execute(PRUNE[0], params)
        return int(tx.execute(PRUNE[1], params).rowcount)


# which kind wins when two pending jobs for one ref meet
_PRECEDENCE = {
    "sync_branch": 1,
    "sync_tag": 1,
    "create_branch": 2,
    "delete_branch": 3,
    "delete_tag": 3,
}


@dataclass(frozen=True)
class Job:
    id: int
    repo: str
    ref_type: str
    ref: str
    kind: str
    args: Mapping[str, Any]
    state: str
    attempts: int
    generation: int = 0
    event: str = ""
    error: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    worker: str = ""  # "<pid>:<thread>" of the holder while running

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repository": self.repo,
            "ref_type": self.ref_type,
            "ref": self.ref,
            "kind": self.kind,
            "args": dict(self.args),
            "state": self.state,
            "attempts": self.attempts,
            "generation": self.generation,
            "event": self.event,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
        }


def _alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # this process just started: nothing of ours is running yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        repo=row["repo"],
        ref_type=row["ref_type"],
        ref=row["ref"],
        kind=row["kind"],
        args=json.loads(row["args"]),
        state=row["state"],
        attempts=row["attempts"],
        generation=row["generation"],
        event=row["event"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
    )


def holder_name(thread: str) -> str:
    """A worker's name in the queue: ``<pid>:<thread>`` (the supervisor reads the pid)."""
    return f"{os.getpid()}:{thread}"


def supersedes(kind: str, pending: str) -> bool:
    """Whether a new job of ``kind`` replaces the kind of the ref's pending job."""
    return _PRECEDENCE.get(kind, 0) >= _PRECEDENCE.get(pending, 0) or (
        pending.startswith("delete") and not kind.startswith("delete")
    )


class Queue(Protocol):
    """What workers, the supervisor, the reconciler and the intake need of a job queue:
    ``JobQueue`` (SQLite, one server) or ``server.pgjobs.PgJobQueue`` (PostgreSQL, replicas).
    """

    lease_seconds: float

    def worker_name(self, thread: str) -> str: ...

    def enqueue(
        self,
        repo: str,
        ref_type: str,
        ref: str,
        kind: str,
        args: Mapping[str, Any] | None = None,
        event: str = "",
    ) -> tuple[int, bool]: ...

    def claim(self, worker: str) -> Job | None: ...

    def has_due(self) -> bool: ...

    def running(self) -> list[Job]: ...

    def renew(self, job_id: int, worker: str, generation: int | None = None) -> bool: ...

    def holds(self, job_id: int, generation: int) -> bool: ...

    def complete(self, job_id: int, worker: str, generation: int | None = None) -> bool: ...

    def fail(self, job_id: int, worker: str, error: str, generation: int | None = None) -> bool: ...

    def end_quarantined(
        self, job_id: int, worker: str, error: str, generation: int | None = None
    ) -> bool: ...

    def retry_later(
        self, job_id: int, worker: str, delay: float, error: str, generation: int | None = None
    ) -> bool: ...

    def release(self, job_id: int, worker: str, generation: int, error: str) -> bool: ...

    def recover(self) -> int: ...

    def active_refs(self, repo: str) -> set[tuple[str, str]]: ...

    def get(self, job_id: int) -> Job | None: ...

    def counts(self) -> dict[str, int]: ...

    def prune(self, before: float) -> int: ...

    def recent(self, repo: str | None = None, limit: int = 50) -> list[Job]: ...

    def sweep_lock(self) -> AbstractContextManager[bool]: ...


class JobQueue:
    """``Queue`` on the SQLite state database: the processes of one server."""

    def __init__(self, db: Database, lease_seconds: float = 120.0) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.worker_id = f"{os.getpid()}"

    def worker_name(self, thread: str) -> str:
        return holder_name(thread)

    @contextmanager
    def sweep_lock(self) -> Iterator[bool]:
        """One server has one reconciler process: it may always sweep."""
        yield True

    def enqueue(
        self,
        repo: str,
        ref_type: str,
        ref: str,
        kind: str,
        args: Mapping[str, Any] | None = None,
        event: str = "",
    ) -> tuple[int, bool]:
        """Record a job; returns (job id, coalesced into an existing pending job)."""
        now = time.time()
        with self.db.transaction() as db:
            pending = db.execute(
                "SELECT * FROM job WHERE repo=? AND ref_type=? AND ref=? AND state=? "
                "ORDER BY id LIMIT 1",
                (repo, ref_type, ref, PENDING),
            ).fetchone()
            if pending is not None:
                if supersedes(kind, pending["kind"]):
                    # an event makes a job waiting for a retry due at once; a reconcile sweep
                    # keeps its backoff (it would otherwise reset it every sweep)
                    db.execute(
                        "UPDATE job SET kind=?, args=?, event=?, "
                        "not_before=CASE WHEN ? THEN not_before ELSE 0 END WHERE id=?",
                        (
                            kind,
                            json.dumps(dict(args or {})),
                            event,
                            event == "reconcile",
                            pending["id"],
                        ),
                    )
                return int(pending["id"]), True
            cur = db.execute(
                "INSERT INTO job (repo, ref_type, ref, kind, args, state, created_at, event) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (repo, ref_type, ref, kind, json.dumps(dict(args or {})), PENDING, now, event),
            )
            return int(cur.lastrowid or 0), False

    def claim(self, worker: str) -> Job | None:
        """The oldest due job whose ref is not being worked on, leased to ``worker``.

        Two single-statement writes (``Database.write``: no interpreter between taking the
        write lock and committing), then a read of what was claimed: a worker name holds at
        most one running job (its thread runs one job at a time).
        """
        now = time.time()
        # leases that ran out: the worker died; the job is due again
        self.db.write(
            "UPDATE job SET state=?, worker='' WHERE state=? AND lease_until < ?",
            (PENDING, RUNNING, now),
        )
        cur = self.db.write(
            "UPDATE job SET state=?, worker=?, lease_until=?, attempts=attempts+1, "
            "generation=generation+1, started_at=? WHERE id = ("
            " SELECT id FROM job j WHERE state=? AND not_before <= ? AND NOT EXISTS ("
            "  SELECT 1 FROM job r WHERE r.state=? AND r.repo=j.repo AND r.ref_type=j.ref_type"
            "  AND r.ref=j.ref) ORDER BY id LIMIT 1)",
            (RUNNING, worker, now + self.lease_seconds, now, PENDING, now, RUNNING),
        )
        if cur.rowcount != 1:
            return None
        claimed = (
            self.db.connection()
            .execute(
                "SELECT * FROM job WHERE state=? AND worker=? ORDER BY started_at DESC LIMIT 1",
                (RUNNING, worker),
            )
            .fetchone()
        )
        return None if claimed is None else _job(claimed)  # None: its lease already ran out

    def has_due(self) -> bool:
        """Is there anything to claim? A read (no write lock), cheap enough to poll often."""
        now = time.time()
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 FROM job WHERE (state=? AND not_before <= ?) "
                "OR (state=? AND lease_until < ?) LIMIT 1",
                (PENDING, now, RUNNING, now),
            )
            .fetchone()
        )
        return row is not None

    def running(self) -> list[Job]:
        """Jobs being worked on now (``Job.worker`` says by whom: ``<pid>:<thread>``)."""
        rows = self.db.connection().execute("SELECT * FROM job WHERE state=?", (RUNNING,))
        return [_job(r) for r in rows]

    @staticmethod
    def _holder(worker: str, generation: int | None) -> tuple[str, tuple[Any, ...]]:
        """The WHERE clause that matches only the current holder of a running job."""
        if generation is None:
            return "worker=?", (worker,)
        return "worker=? AND generation=?", (worker, generation)

    def renew(self, job_id: int, worker: str, generation: int | None = None) -> bool:
        """Extend the lease; False when ``worker``/``generation`` no longer holds the job."""
        who, args = self._holder(worker, generation)
        cur = self.db.write(
            f"UPDATE job SET lease_until=? WHERE id=? AND state=? AND {who}",  # noqa: S608
            (time.time() + self.lease_seconds, job_id, RUNNING, *args),
        )
        return cur.rowcount == 1

    def holds(self, job_id: int, generation: int) -> bool:
        """Whether the claim of ``generation`` is still the job's current, running claim."""
        row = (
            self.db.connection()
            .execute("SELECT state, generation FROM job WHERE id=?", (job_id,))
            .fetchone()
        )
        return row is not None and row["state"] == RUNNING and row["generation"] == generation

    def _finish(
        self, job_id: int, worker: str, state: str, error: str = "", generation: int | None = None
    ) -> bool:
        who, args = self._holder(worker, generation)
        cur = self.db.write(
            "UPDATE job SET state=?, error=?, finished_at=?, worker='' "  # noqa: S608
            f"WHERE id=? AND state=? AND {who}",
            (state, error, time.time(), job_id, RUNNING, *args),
        )
        return cur.rowcount == 1

    def complete(self, job_id: int, worker: str, generation: int | None = None) -> bool:
        """Mark done; False when this worker no longer holds the job (its lease ran out)."""
        return self._finish(job_id, worker, DONE, generation=generation)

    def fail(self, job_id: int, worker: str, error: str, generation: int | None = None) -> bool:
        return self._finish(job_id, worker, FAILED, error, generation)

    def end_quarantined(
        self, job_id: int, worker: str, error: str, generation: int | None = None
    ) -> bool:
        """End a job whose head is quarantined (``server.quarantine``) without running it."""
        return self._finish(job_id, worker, QUARANTINED, error, generation)

    def retry_later(
        self,
        job_id: int,
        worker: str,
        delay: float,
        error: str,
        generation: int | None = None,
    ) -> bool:
        who, args = self._holder(worker, generation)
        cur = self.db.write(
            "UPDATE job SET state=?, error=?, not_before=?, worker='' "  # noqa: S608
            f"WHERE id=? AND state=? AND {who}",
            (PENDING, error, time.time() + delay, job_id, RUNNING, *args),
        )
        return cur.rowcount == 1

    def release(self, job_id: int, worker: str, generation: int, error: str) -> bool:
        """Give a job back at once (this worker must stop); False when it was not held."""
        return self.retry_later(job_id, worker, 0.0, error, generation)

    def recover(self) -> int:
        """At start-up: jobs left running by a dead process are pending again at once."""
        with self.db.transaction() as db:
            rows = db.execute("SELECT id, worker FROM job WHERE state=?", (RUNNING,)).fetchall()
            dead = [r["id"] for r in rows if not _alive(r["worker"].split(":")[0])]
            db.executemany(
                "UPDATE job SET state=?, worker='' WHERE id=?", [(PENDING, i) for i in dead]
            )
            return len(dead)

    def active_refs(self, repo: str) -> set[tuple[str, str]]:
        """(ref_type, ref) of ``repo`` with a pending or running job."""
        rows = self.db.connection().execute(
            "SELECT DISTINCT ref_type, ref FROM job WHERE repo=? AND state IN (?, ?)",
            (repo, PENDING, RUNNING),
        )
        return {(r["ref_type"], r["ref"]) for r in rows}

    def get(self, job_id: int) -> Job | None:
        row = self.db.connection().execute("SELECT * FROM job WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def prune(self, before: float) -> int:
        """Forget the jobs that ended (done, failed, superseded) before ``before``, and what
        their workers recorded; returns how many. Statuses, quarantines and pending work stay.
        Without it the table only grew: at a million jobs each ``/metrics`` counted them
        (80-140 ms) and ``GET /api/v1/repos/{repo}/jobs`` took 230 ms."""
        return prune_ended(self.db, before)

    def counts(self) -> dict[str, int]:
        rows = self.db.connection().execute("SELECT state, count(*) n FROM job GROUP BY state")
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: r["n"] for r in rows})
        return out

    def recent(self, repo: str | None = None, limit: int = 50) -> list[Job]:
        if repo is None:
            rows = self.db.connection().execute(
                "SELECT * FROM job ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = self.db.connection().execute(
                "SELECT * FROM job WHERE repo=? ORDER BY id DESC LIMIT ?", (repo, limit)
            )
        return [_job(r) for r in rows]


class Lease:
    """A worker's claim on one job, and that job's fence (``lakehook.fence.Fence``).

    ``check()`` is cheap (a monotonic clock read and one indexed SELECT) and raises
    ``LeaseLost`` when:

    * the lease ran out by this process's monotonic clock: no renewal was confirmed within
      ``lease_seconds - margin`` (the renewer died, the database was unreachable, the process
      was suspended). Nobody may have taken the job yet, but somebody may at any moment;
    * the database shows another generation (or the job no longer running): it was taken over;
    * ``lose()`` was called (the renewer failed).

    ``renew()`` (called by the renewer, every ``lease_seconds / 3``) extends the lease only
    for this generation; its time is counted from before the call, so a slow answer shortens
    the lease instead of stretching it.
    """

    def __init__(
        self,
        queue: Queue,
        job: Job,
        worker: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue, self.job, self.worker, self.clock = queue, job, worker, clock
        self.generation = job.generation
        self.margin = queue.lease_seconds / 6
        self._expires = clock() + queue.lease_seconds
        self._lost = ""
        self._lock = threading.Lock()

    @property
    def renew_interval(self) -> float:
        return max(self.queue.lease_seconds / 3, 0.05)

    @property
    def lost(self) -> str:
        """Why the lease was lost ('' while held as far as this process knows)."""
        return self._lost

    def lose(self, reason: str) -> None:
        with self._lock:
            self._lost = self._lost or reason

    def renew(self) -> bool:
        """Extend the lease; False (and the lease is lost) when the job was taken over."""
        started = self.clock()
        if self._lost:
            return False
        if not self.queue.renew(self.job.id, self.worker, self.generation):
            self.lose(f"job {self.job.id} was taken over (generation {self.generation} is stale)")
            return False
        with self._lock:
            self._expires = started + self.queue.lease_seconds
        return True

    def check(self) -> None:
        if not self._lost and self.clock() >= self._expires - self.margin:
            self.lose(
                f"lease of job {self.job.id} expired: no renewal confirmed for "
                f"{self.queue.lease_seconds - self.margin:.0f}s"
            )
        if not self._lost and not self.queue.holds(self.job.id, self.generation):
            self.lose(f"job {self.job.id} was taken over (generation {self.generation} is stale)")
        if self._lost:
            raise LeaseLost(self._lost)
