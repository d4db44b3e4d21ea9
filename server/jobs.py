"""The durable job queue: one job per (repository, ref) at a time, coalesced, leased.

* ``enqueue`` records a job before the webhook is answered. A *pending* job for the same ref
  absorbs the new one (a newer head supersedes an older pending one: the job works from the
  head anyway); a running job for the same ref gets one pending successor.
* ``claim`` hands a worker the oldest due job whose ref has no running job, with a lease.
  Workers renew the lease while they work; a job whose lease ran out (its worker died, the
  server was killed) is claimable again. A job is marked done once, by the worker that holds
  it, so each job completes exactly once.
* ``retry_later`` puts a job back with a delay after a transient failure; ``fail`` ends it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.store import Database

PENDING, RUNNING, DONE, FAILED, SUPERSEDED = "pending", "running", "done", "failed", "superseded"
STATES = (PENDING, RUNNING, DONE, FAILED, SUPERSEDED)
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
    event: str = ""
    error: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

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
            "event": self.event,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
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
        event=row["event"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class JobQueue:
    def __init__(self, db: Database, lease_seconds: float = 120.0) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self.worker_id = f"{os.getpid()}"

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
                if _PRECEDENCE.get(kind, 0) >= _PRECEDENCE.get(pending["kind"], 0) or (
                    pending["kind"].startswith("delete") and not kind.startswith("delete")
                ):
                    db.execute(
                        "UPDATE job SET kind=?, args=?, event=?, not_before=0 WHERE id=?",
                        (kind, json.dumps(dict(args or {})), event, pending["id"]),
                    )
                return int(pending["id"]), True
            cur = db.execute(
                "INSERT INTO job (repo, ref_type, ref, kind, args, state, created_at, event) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (repo, ref_type, ref, kind, json.dumps(dict(args or {})), PENDING, now, event),
            )
            return int(cur.lastrowid or 0), False

    def claim(self, worker: str) -> Job | None:
        """The oldest due job whose ref is not being worked on, leased to ``worker``."""
        now = time.time()
        with self.db.transaction() as db:
            db.execute(  # leases that ran out: the worker died; the job is due again
                "UPDATE job SET state=?, worker='' WHERE state=? AND lease_until < ?",
                (PENDING, RUNNING, now),
            )
            row = db.execute(
                "SELECT * FROM job j WHERE state=? AND not_before <= ? AND NOT EXISTS ("
                " SELECT 1 FROM job r WHERE r.state=? AND r.repo=j.repo AND r.ref_type=j.ref_type"
                " AND r.ref=j.ref) ORDER BY id LIMIT 1",
                (PENDING, now, RUNNING),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE job SET state=?, worker=?, lease_until=?, attempts=attempts+1, "
                "started_at=? WHERE id=?",
                (RUNNING, worker, now + self.lease_seconds, now, row["id"]),
            )
            claimed = db.execute("SELECT * FROM job WHERE id=?", (row["id"],)).fetchone()
            return _job(claimed)

    def renew(self, job_id: int, worker: str) -> bool:
        with self.db.transaction() as db:
            cur = db.execute(
                "UPDATE job SET lease_until=? WHERE id=? AND state=? AND worker=?",
                (time.time() + self.lease_seconds, job_id, RUNNING, worker),
            )
            return cur.rowcount == 1

    def _finish(self, job_id: int, worker: str, state: str, error: str = "") -> bool:
        with self.db.transaction() as db:
            cur = db.execute(
                "UPDATE job SET state=?, error=?, finished_at=?, worker='' "
                "WHERE id=? AND state=? AND worker=?",
                (state, error, time.time(), job_id, RUNNING, worker),
            )
            return cur.rowcount == 1

    def complete(self, job_id: int, worker: str) -> bool:
        """Mark done; False when this worker no longer holds the job (its lease ran out)."""
        return self._finish(job_id, worker, DONE)

    def fail(self, job_id: int, worker: str, error: str) -> bool:
        return self._finish(job_id, worker, FAILED, error)

    def retry_later(self, job_id: int, worker: str, delay: float, error: str) -> bool:
        with self.db.transaction() as db:
            cur = db.execute(
                "UPDATE job SET state=?, error=?, not_before=?, worker='' "
                "WHERE id=? AND state=? AND worker=?",
                (PENDING, error, time.time() + delay, job_id, RUNNING, worker),
            )
            return cur.rowcount == 1

    def recover(self) -> int:
        """At start-up: jobs left running by a dead process are pending again at once."""
        with self.db.transaction() as db:
            rows = db.execute("SELECT id, worker FROM job WHERE state=?", (RUNNING,)).fetchall()
            dead = [r["id"] for r in rows if not _alive(r["worker"].split(":")[0])]
            db.executemany(
                "UPDATE job SET state=?, worker='' WHERE id=?", [(PENDING, i) for i in dead]
            )
            return len(dead)

    def get(self, job_id: int) -> Job | None:
        row = self.db.connection().execute("SELECT * FROM job WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

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
