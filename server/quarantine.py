"""Jobs that kill or exhaust their worker: retried once, then quarantined (issue 16).

A worker process works on one job at a time and is replaced when it dies: it ran out of its
memory ceiling (``MemoryError`` under ``RLIMIT_AS``), ran past the job's wall-clock limit (the
supervisor killed it), or was killed by someone else (a signal: the kernel's OOM killer, a
person). The supervisor then calls ``Quarantine.after_death`` for the job the worker held:

* the first death on a head puts the job back at once, for another worker;
* the second death on the same head makes it **quarantined**: an input failure for that source
  commit, never claimed again for that head (``check`` refuses it before any dataset is
  processed), with the ref's status ``failed`` saying which limit, which file and what to do.

The worker records the dataset it is about to process (``record_progress``) before processing
it, so the file is known even when the process dies without a word. ``decide`` and ``explain``
are pure; the rest is one short transaction each on the shared database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lakehook.errors import TerminalError
from lakehook.failures import INPUT
from lakehook.settings import Settings
from pipeline.model import RefStatus
from pipeline.ports import StatusStore
from server.jobs import PENDING, QUARANTINED, RUNNING, Job
from server.store import Database, SqliteStatusStore

if TYPE_CHECKING:
    from server.pgstore import PgDatabase

MEMORY, TIME, KILLED, CRASHED = "memory", "time", "killed", "crashed"
MAX_DEATHS = 2  # the job is retried once; the second death on one head quarantines it
STAGE = "quarantine"


class Quarantined(TerminalError):
    """This head of the ref was quarantined: its job must not run again."""


@dataclass(frozen=True)
class Death:
    """How a worker process ended while it held a job."""

    reason: str  # MEMORY | TIME | KILLED | CRASHED
    detail: str = ""  # e.g. "SIGKILL", "exit code 1"


@dataclass(frozen=True)
class Progress:
    """What the job's worker was doing when it died, and how often the job killed one."""

    head: str = ""
    source_commit: str = ""
    dataset: str = ""
    deaths: int = 0
    death_head: str = ""


def decide(progress: Progress, max_deaths: int = MAX_DEATHS) -> tuple[int, bool]:
    """Deaths of this job on its current head (this one included), and whether to quarantine.

    Deaths on an older head do not count: the branch moved, the inputs may be fixed.
    """
    deaths = progress.deaths + 1 if progress.death_head == progress.head else 1
    return deaths, deaths >= max_deaths


def explain(death: Death, dataset: str, settings: Settings, deaths: int) -> tuple[str, str]:
    """(message, hint) for the ref's status: which limit, which file, what to do."""
    where = f" while processing {dataset}" if dataset else ""
    times = "twice" if deaths >= MAX_DEATHS else "once"
    if death.reason == MEMORY:
        what = (
            f"the job exhausted its worker's memory ceiling "
            f"({settings.worker_memory_limit_mb} MB, LAKEHOOK_WORKER_MEMORY_LIMIT_MB) {times}"
        )
        hint = (
            "fix or split the file (e.g. one CSV per delivery), or raise "
            "LAKEHOOK_WORKER_MEMORY_LIMIT_MB; the next commit is processed again"
        )
    elif death.reason == TIME:
        what = (
            f"the job ran past its wall-clock limit ({settings.job_time_limit_seconds:.0f} s, "
            f"LAKEHOOK_JOB_TIME_LIMIT_SECONDS) {times}"
        )
        hint = (
            "fix or split the file, or raise LAKEHOOK_JOB_TIME_LIMIT_SECONDS; "
            "the next commit is processed again"
        )
    elif death.reason == KILLED:
        what = f"the job's worker was killed ({death.detail or 'a signal'}) {times}"
        hint = (
            "if the kernel's OOM killer did it, lower LAKEHOOK_WORKERS or "
            "LAKEHOOK_WORKER_MEMORY_LIMIT_MB, or fix or split the file; "
            "the next commit is processed again"
        )
    else:
        what = f"the job's worker crashed ({death.detail or 'no exit code'}) {times}"
        hint = "see the server log for the crash; the next commit is processed again"
    return f"{what}{where}", hint


class Quarantine:
    """The quarantine rule on the shared database (``job_fault`` and ``quarantine`` tables)."""

    def __init__(
        self,
        db: Database | PgDatabase,
        settings: Settings,
        store: StatusStore | None = None,
    ) -> None:
        """``db``: the state database (SQLite, or PostgreSQL shared by replicas);
        ``store``: its status store (default: the SQLite one on ``db``)."""
        self.db, self.settings = db, settings
        if store is None:
            assert isinstance(db, Database), "a PostgreSQL state database needs its store"
            store = SqliteStatusStore(db)
        self.store = store

    def record_progress(self, job_id: int, head: str, source_commit: str, dataset: str) -> None:
        """The worker of ``job_id`` is about to process ``dataset`` of ``head``."""
        self.db.write(  # one statement: the job thread writes it (see ``Database.write``)
            "INSERT INTO job_fault (job_id, head, source_commit, dataset) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET head=excluded.head, "
            "source_commit=excluded.source_commit, dataset=excluded.dataset",
            (job_id, head, source_commit, dataset),
        )

    def check(self, repo: str, ref_type: str, ref: str, head: str) -> None:
        """Raise ``Quarantined`` when ``head`` of the ref is quarantined."""
        row = (
            self.db.connection()
            .execute(
                "SELECT reason FROM quarantine WHERE repo=? AND ref_type=? AND ref=? AND head=?",
                (repo, ref_type, ref, head),
            )
            .fetchone()
        )
        if row is not None:
            error = json.loads(row["reason"])
            # the job that was just started marked the ref "processing": show the quarantine
            current = self.store.get_status(repo, ref, ref_type)
            if current is not None:
                self.store.put_status(
                    replace(
                        current,
                        state="failed",
                        reason=f"job {error.get('job')} quarantined: {error['message']}",
                        errors=(error,),
                        updated_at=time.time(),
                    )
                )
            raise Quarantined(f"{ref} at {head[:12]} is quarantined: {error['message']}")

    def progress(self, job_id: int) -> Progress:
        row = (
            self.db.connection()
            .execute("SELECT * FROM job_fault WHERE job_id=?", (job_id,))
            .fetchone()
        )
        if row is None:
            return Progress()
        return Progress(
            row["head"], row["source_commit"], row["dataset"], row["deaths"], row["death_head"]
        )

    def after_death(self, job: Job, death: Death) -> str:
        """Account the death of ``job``'s worker; returns ``PENDING`` or ``QUARANTINED``."""
        now = time.time()
        with self.db.transaction() as db:
            progress = self.progress(job.id)
            deaths, quarantine = decide(progress)
            message, hint = explain(death, progress.dataset, self.settings, deaths)
            db.execute(
                "INSERT INTO job_fault (job_id, deaths, death_head, last_reason) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET deaths=excluded.deaths, "
                "death_head=excluded.death_head, last_reason=excluded.last_reason",
                (job.id, deaths, progress.head, death.reason),
            )
            state = QUARANTINED if quarantine else PENDING
            db.execute(
                "UPDATE job SET state=?, worker='', error=?, not_before=0, finished_at=? "
                "WHERE id=? AND state=? AND worker=?",
                (state, message, now if quarantine else None, job.id, RUNNING, job.worker),
            )
            error = self._error(job, progress, death, message, hint)
            if quarantine and progress.head:
                db.execute(
                    "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (repo, ref_type, ref, head) DO UPDATE SET "
                    "job_id=excluded.job_id, reason=excluded.reason, "
                    "created_at=excluded.created_at",
                    (
                        job.repo,
                        job.ref_type,
                        job.ref,
                        progress.head,
                        job.id,
                        json.dumps(error),
                        now,
                    ),
                )
        if not job.kind.startswith("delete"):
            self._show(job, progress, message, error, quarantine)
        return state

    @staticmethod
    def _error(
        job: Job, progress: Progress, death: Death, message: str, hint: str
    ) -> dict[str, Any]:
        return {
            "stage": STAGE,
            "kind": INPUT,  # final for this head (lakehook.failures)
            "limit": death.reason,
            "file": progress.dataset or None,
            "message": f"quarantined: {message}",
            "hint": hint,
            "job": job.id,
            "commit": progress.head,
        }

    def _show(
        self,
        job: Job,
        progress: Progress,
        message: str,
        error: dict[str, Any],
        quarantine: bool,
    ) -> None:
        current = self.store.get_status(job.repo, job.ref, job.ref_type) or RefStatus(
            job.repo, job.ref, job.ref_type, "", "", None, "pending"
        )
        if not quarantine:
            status = replace(
                current,
                state="pending",
                reason=f"job {job.id} is retried on another worker: {message}",
                updated_at=time.time(),
            )
        else:
            status = replace(
                current,
                state="failed",
                head_commit=progress.head or current.head_commit,
                source_commit=progress.source_commit or current.source_commit,
                reason=f"job {job.id} quarantined: {message}",
                errors=(error,),
                updated_at=time.time(),
            )
        self.store.put_status(status)
