"""Where a process's shared state lives: the SQLite file (one server) or PostgreSQL (replicas).

``open_state`` is the one place that picks: ``LAKEHOOK_QUEUE_URL`` empty (the default) opens
``<state dir>/jobs.sqlite3``; a ``postgresql://`` URL opens the shared PostgreSQL schema
(``server.pgstore``, ``server.pgjobs``) with a connection pool sized for the process's role.
Jobs, statuses, schema names, merge records, job faults and quarantines all go to the one
backend picked, so every replica sees one truth (docs/architecture.md, "Several replicas").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakehook.settings import Settings
from pipeline.ports import StatusStore
from server.jobs import JobQueue, Queue
from server.store import Database, SqliteStatusStore

if TYPE_CHECKING:
    from server.pgstore import PgDatabase
    from server.quarantine import Quarantine

# connections of one process's pool, by role: the intake answers requests on many threads;
# a worker needs its job's thread and the lease renewer's; the reconciler holds the sweep
# lock on one connection and enqueues on another
POOL_SIZES = {"intake": 4, "worker": 2, "reconciler": 2, "cli": 1}


@dataclass(frozen=True)
class State:
    db: Database | PgDatabase
    store: StatusStore
    queue: Queue

    def quarantine(self, settings: Settings) -> Quarantine:
        from server.quarantine import Quarantine

        return Quarantine(self.db, settings, self.store)

    def close(self) -> None:
        from server.pgstore import PgDatabase

        if isinstance(self.db, PgDatabase):
            self.db.close()


def open_state(settings: Settings, role: str = "intake", *, checkpoints: bool = True) -> State:
    """The state database of this process (``role``: intake, worker, reconciler or cli).

    ``checkpoints=False``: this process's SQLite commits never checkpoint the WAL (the intake
    of ``lakehook serve``, whose supervisor does it off the request path; ``Database``)."""
    if settings.queue_url:
        from server.pgjobs import PgJobQueue
        from server.pgstore import PgDatabase, PgStatusStore

        pg = PgDatabase(
            settings.queue_url, max_connections=POOL_SIZES.get(role, 2), name=f"lakehook-{role}"
        )
        return State(pg, PgStatusStore(pg), PgJobQueue(pg, settings.job_lease_seconds))
    db = Database(settings.jobs_db, autocheckpoint=checkpoints)
    return State(db, SqliteStatusStore(db), JobQueue(db, settings.job_lease_seconds))
