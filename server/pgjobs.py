"""The job queue on PostgreSQL: the SQLite queue's rules (``server.jobs``) for several replicas.

Same interface and semantics as ``server.jobs.JobQueue``; what differs is how they hold when
processes on several machines race:

* **claims** take the oldest due job with ``SELECT ... FOR UPDATE SKIP LOCKED``: claimers never
  wait for each other and never get the same row; a partial unique index admits one *running*
  job per ref, so two claims of two jobs of one ref cannot both win (the loser retries);
* **leases** are the database's clock (``lease_until`` and ``not_before`` are computed and
  compared in SQL, ``lakehook_now()``), never a replica's wall clock; the generation (+1 per claim)
  fences the previous holder, and every renewal and ending matches (job, worker, generation);
* **coalescing**: an ``enqueue`` locks its ref (a transaction advisory lock) and the ref's
  pending job (``FOR UPDATE``), so two replicas receiving the same event make one job, and an
  event never merges into a job that a claim is turning ``running`` at that moment;
* **exactly-once completion**: ``complete``/``fail``/... update the row only while its state
  is running and its generation is the caller's;
* the **reconciler** sweeps under a session advisory lock (``sweep_lock``): one replica at a
  time, the others skip that tick; a replica that dies releases it with its connection.

Worker names carry the host (``<pid>:<thread>@<host>``): ``recover`` and ``running`` concern
this host's processes only (a process on another machine is never judged by its pid here; its
jobs come back when their leases run out).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from server.jobs import (
    DONE,
    FAILED,
    PENDING,
    QUARANTINED,
    RUNNING,
    STATES,
    Job,
    _alive,
    _job,
    holder_name,
    prune_ended,
    supersedes,
)
from server.pgstore import PgDatabase, lock_key

CLAIM_RACES = 8  # a claim that loses the one-running-job-per-ref race this often gives up


class PgJobQueue:
    """``server.jobs.Queue`` on a shared PostgreSQL database (``PgDatabase``)."""

    def __init__(
        self, db: PgDatabase, lease_seconds: float = 120.0, host: str | None = None
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.host = host or socket.gethostname()

    def worker_name(self, thread: str) -> str:
        return f"{holder_name(thread)}@{self.host}"

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
        body = json.dumps(dict(args or {}))
        with self.db.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (self._ref_key(repo, ref_type, ref),))
            pending = db.execute(
                "SELECT id, kind FROM job WHERE repo=? AND ref_type=? AND ref=? AND state=? "
                "ORDER BY id LIMIT 1 FOR UPDATE",
                (repo, ref_type, ref, PENDING),
            ).fetchone()
            if pending is not None:
                if supersedes(kind, pending["kind"]):
                    db.execute(
                        "UPDATE job SET kind=?, args=?, event=?, "
                        "not_before=CASE WHEN ? THEN not_before ELSE 0 END WHERE id=?",
                        (kind, body, event, event == "reconcile", pending["id"]),
                    )
                return int(pending["id"]), True
            row = db.execute(
                "INSERT INTO job (repo, ref_type, ref, kind, args, state, created_at, event) "
                "VALUES (?, ?, ?, ?, ?, ?, lakehook_now(), ?) RETURNING id",
                (repo, ref_type, ref, kind, body, PENDING, event),
            ).fetchone()
            assert row is not None
            return int(row["id"]), False

    def _ref_key(self, repo: str, ref_type: str, ref: str) -> int:
        return lock_key("lakehook", "job", self.db.schema, repo, ref_type, ref)

    def claim(self, worker: str) -> Job | None:
        """The oldest due job whose ref is not being worked on, leased to ``worker``."""
        for _ in range(CLAIM_RACES):
            try:
                return self._claim(worker)
            except psycopg.errors.UniqueViolation:
                continue  # another claimer took another job of the same ref: look again
            except psycopg.errors.DeadlockDetected:
                continue
        return None

    def _claim(self, worker: str) -> Job | None:
        with self.db.transaction() as db:
            db.execute(  # leases that ran out (by the database's clock): due again
                "UPDATE job SET state=?, worker='' WHERE id IN (SELECT id FROM job "
                "WHERE state=? AND lease_until < lakehook_now() FOR UPDATE SKIP LOCKED)",
                (PENDING, RUNNING),
            )
            row = db.execute(
                "SELECT id FROM job j WHERE state=? AND not_before <= lakehook_now() AND NOT EXISTS ("
                " SELECT 1 FROM job r WHERE r.state=? AND r.repo=j.repo AND r.ref_type=j.ref_type"
                " AND r.ref=j.ref) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                (PENDING, RUNNING),
            ).fetchone()
            if row is None:
                return None
            claimed = db.execute(
                "UPDATE job SET state=?, worker=?, lease_until=lakehook_now() + ?, "
                "attempts=attempts+1, generation=generation+1, started_at=lakehook_now() "
                "WHERE id=? RETURNING *",
                (RUNNING, worker, self.lease_seconds, row["id"]),
            ).fetchone()
            return _job(claimed)

    def has_due(self) -> bool:
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 AS due FROM job WHERE (state=? AND not_before <= lakehook_now()) "
                "OR (state=? AND lease_until < lakehook_now()) LIMIT 1",
                (PENDING, RUNNING),
            )
            .fetchone()
        )
        return row is not None

    def running(self) -> list[Job]:
        """Jobs being worked on now by processes of this host."""
        rows = self.db.connection().execute(
            "SELECT * FROM job WHERE state=? AND split_part(worker, '@', 2)=?",
            (RUNNING, self.host),
        )
        return [_job(r) for r in rows]

    @staticmethod
    def _holder(worker: str, generation: int | None) -> tuple[str, tuple[Any, ...]]:
        if generation is None:
            return "worker=?", (worker,)
        return "worker=? AND generation=?", (worker, generation)

    def renew(self, job_id: int, worker: str, generation: int | None = None) -> bool:
        who, args = self._holder(worker, generation)
        rows = self.db.connection().execute(
            f"UPDATE job SET lease_until=lakehook_now() + ? WHERE id=? AND state=? AND {who}",  # noqa: S608
            (self.lease_seconds, job_id, RUNNING, *args),
        )
        return rows.rowcount == 1

    def holds(self, job_id: int, generation: int) -> bool:
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
        rows = self.db.connection().execute(
            "UPDATE job SET state=?, error=?, finished_at=lakehook_now(), worker='' "  # noqa: S608
            f"WHERE id=? AND state=? AND {who}",
            (state, error, job_id, RUNNING, *args),
        )
        return rows.rowcount == 1

    def complete(self, job_id: int, worker: str, generation: int | None = None) -> bool:
        return self._finish(job_id, worker, DONE, generation=generation)

    def fail(self, job_id: int, worker: str, error: str, generation: int | None = None) -> bool:
        return self._finish(job_id, worker, FAILED, error, generation)

    def end_quarantined(
        self, job_id: int, worker: str, error: str, generation: int | None = None
    ) -> bool:
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
        rows = self.db.connection().execute(
            "UPDATE job SET state=?, error=?, not_before=lakehook_now() + ?, worker='' "  # noqa: S608
            f"WHERE id=? AND state=? AND {who}",
            (PENDING, error, delay, job_id, RUNNING, *args),
        )
        return rows.rowcount == 1

    def release(self, job_id: int, worker: str, generation: int, error: str) -> bool:
        return self.retry_later(job_id, worker, 0.0, error, generation)

    def recover(self) -> int:
        """At start-up: this host's jobs whose process is gone are pending again at once
        (other hosts' jobs come back when their leases run out)."""
        dead = [j.id for j in self.running() if not _alive(j.worker.split(":")[0])]
        recovered = 0
        for job_id in dead:
            rows = self.db.connection().execute(
                "UPDATE job SET state=?, worker='' WHERE id=? AND state=? AND "
                "split_part(worker, '@', 2)=?",
                (PENDING, job_id, RUNNING, self.host),
            )
            recovered += rows.rowcount
        return recovered

    def active_refs(self, repo: str) -> set[tuple[str, str]]:
        rows = self.db.connection().execute(
            "SELECT DISTINCT ref_type, ref FROM job WHERE repo=? AND state IN (?, ?)",
            (repo, PENDING, RUNNING),
        )
        return {(r["ref_type"], r["ref"]) for r in rows}

    def get(self, job_id: int) -> Job | None:
        row = self.db.connection().execute("SELECT * FROM job WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def prune(self, before: float) -> int:
        """``JobQueue.prune``: the jobs that ended before ``before`` and their fault records."""
        return prune_ended(self.db, before)

    def counts(self) -> dict[str, int]:
        rows = self.db.connection().execute(
            "SELECT state, count(*) AS n FROM job GROUP BY state", ()
        )
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: int(r["n"]) for r in rows})
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

    @contextmanager
    def sweep_lock(self) -> Iterator[bool]:
        """Whether this process may sweep now: one reconciler of all replicas at a time."""
        with self.db.try_lock(lock_key("lakehook", "reconciler", self.db.schema)) as held:
            yield held
