"""Durable state in SQLite (WAL): statuses, schema names and the job queue.

One file under the state directory, shared by the intake process and every worker process
(``server.supervisor``). Every write is a short ``BEGIN IMMEDIATE`` transaction, so a ``kill -9``
at any moment leaves a consistent database, and writers in different processes take turns
through SQLite's own file lock (the busy timeout makes one wait for the other instead of
failing); WAL lets readers in any process read while one writes. The ``threading.RLock`` only
orders the threads of one process. ``SqliteStatusStore`` is the ``StatusStore`` port;
``JobQueue`` is in ``server.jobs``; ``job_fault``/``quarantine`` are kept by
``server.quarantine``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from pipeline import naming
from pipeline.model import RefStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS status (
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL,
    body TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (repo, ref_type, ref));
CREATE TABLE IF NOT EXISTS schema_name (
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL, schema TEXT NOT NULL UNIQUE,
    PRIMARY KEY (repo, ref_type, ref));
CREATE TABLE IF NOT EXISTS job (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL,
    kind TEXT NOT NULL, args TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,            -- pending | running | done | failed | superseded
    attempts INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,  -- +1 per claim: the fence of the lease
    not_before REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    event TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS merge_record (
    repo TEXT NOT NULL, destination TEXT NOT NULL, source_commit TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (repo, destination, source_commit));
CREATE INDEX IF NOT EXISTS job_state ON job (state, not_before);
CREATE INDEX IF NOT EXISTS job_key ON job (repo, ref_type, ref, state);
CREATE TABLE IF NOT EXISTS job_fault (  -- what a job's worker was doing, and how often it died
    job_id INTEGER PRIMARY KEY,
    head TEXT NOT NULL DEFAULT '', source_commit TEXT NOT NULL DEFAULT '',
    dataset TEXT NOT NULL DEFAULT '',
    deaths INTEGER NOT NULL DEFAULT 0, death_head TEXT NOT NULL DEFAULT '',
    last_reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS quarantine (  -- heads whose jobs killed or exhausted two workers
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL, head TEXT NOT NULL,
    job_id INTEGER NOT NULL, reason TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (repo, ref_type, ref, head));
"""

# columns added since the first release: (table, column, definition), applied when missing
MIGRATIONS = (("job", "generation", "INTEGER NOT NULL DEFAULT 0"),)

BUSY_TIMEOUT_SECONDS = 30.0


def _locked(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


def _write_ahead_log(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode (kept in the file: once one connection has done it, the
    others find it done).

    SQLite answers the switch with "database is locked" at once, without its busy handler,
    while another connection writes to a file not yet in WAL mode: two services opening a new
    state directory together. The switch is retried for the busy timeout instead.
    """
    for attempt in Retrying(
        retry=retry_if_exception(_locked),
        stop=stop_after_delay(BUSY_TIMEOUT_SECONDS),
        wait=wait_fixed(0.01),
        reraise=True,
    ):
        with attempt:
            conn.execute("PRAGMA journal_mode=WAL")


class Database:
    """A SQLite file shared by threads and processes: one connection per thread, WAL, busy
    timeout (a writer waits for another process's transaction instead of failing).

    ``autocheckpoint=False`` (the intake of ``lakehook serve``): no commit of this process
    copies the WAL back into the database file. SQLite otherwise does it inside the ``COMMIT``
    that pushes the WAL past 1000 pages, with an ``fsync`` of the database file, so one webhook
    in a few hundred paid for a checkpoint, tens to hundreds of milliseconds while a worker
    writes a large table to disk. The intake's supervisor thread calls ``checkpoint`` instead,
    and the worker processes keep SQLite's automatic checkpoints.
    """

    def __init__(self, path: Path, *, autocheckpoint: bool = True) -> None:
        self.path = path
        self.autocheckpoint = autocheckpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.write_lock = threading.RLock()
        with self.write_lock:
            conn = self.connection()
            conn.executescript(SCHEMA)  # idempotent DDL, one script
            for table, column, ddl in MIGRATIONS:
                have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    try:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
                    except sqlite3.OperationalError as err:  # another process added it first
                        if "duplicate column" not in str(err):
                            raise

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            _write_ahead_log(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self.autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._local.conn = conn
        return conn

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file without waiting for readers or writers."""
        self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement as its own transaction, for the writes a worker makes while its job
        runs beside it (claim, renew, end).

        SQLite takes the write lock, writes and commits inside this one call, which releases
        the interpreter lock; in ``BEGIN IMMEDIATE`` ... ``COMMIT`` the thread needs the
        interpreter again between the statements, with the lock held. In a worker process
        that is busy with a job, that took 0.5-0.7 s while the job's thread ran, and the
        intake's webhooks waited for it (measured with bench_isolation, docs/benchmarks.md).
        """
        with self.write_lock:
            return self.connection().execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: one writer at a time, atomic."""
        conn = self.connection()
        with self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


MERGE_RECORD_DAYS = 30


class SqliteStatusStore:
    """``pipeline.ports.StatusStore`` on the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get_status(self, repo: str, ref: str, ref_type: str = "branch") -> RefStatus | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT body FROM status WHERE repo=? AND ref_type=? AND ref=?",
                (repo, ref_type, ref),
            )
            .fetchone()
        )
        return RefStatus.from_dict(json.loads(row["body"])) if row else None

    # Status writes are single statements (``Database.write``): the job thread makes them,
    # and at a low priority it must not hold the write lock the intake waits for.
    def put_status(self, status: RefStatus) -> None:
        row = (
            status.repository,
            status.ref_type,
            status.ref,
            json.dumps(status.to_dict()),
            status.updated_at,
        )
        self.db.write("INSERT OR REPLACE INTO status VALUES (?, ?, ?, ?, ?)", row)

    def delete_status(self, repo: str, ref: str, ref_type: str = "branch") -> None:
        self.db.write(
            "DELETE FROM status WHERE repo=? AND ref_type=? AND ref=?", (repo, ref_type, ref)
        )

    def list_statuses(self, repo: str) -> list[RefStatus]:
        rows = (
            self.db.connection()
            .execute("SELECT body FROM status WHERE repo=? ORDER BY ref_type, ref", (repo,))
            .fetchall()
        )
        return [RefStatus.from_dict(json.loads(r["body"])) for r in rows]

    def schema_mapping(self) -> dict[tuple[str, str, str], str]:
        rows = self.db.connection().execute("SELECT * FROM schema_name").fetchall()
        return {(r["repo"], r["ref_type"], r["ref"]): r["schema"] for r in rows}

    def save_schema_name(self, repo: str, ref_type: str, ref: str, schema: str) -> str:
        """Insert-or-fail in one ``BEGIN IMMEDIATE`` transaction (processes serialise on the
        database file); on a conflict the name is recomputed with the collision rule."""
        with self.db.transaction() as db:
            stored = db.execute(
                "SELECT schema FROM schema_name WHERE repo=? AND ref_type=? AND ref=?",
                (repo, ref_type, ref),
            ).fetchone()
            if stored is not None:
                return str(stored["schema"])
            taken = db.execute("SELECT 1 FROM schema_name WHERE schema=?", (schema,)).fetchone()
            if taken is not None:
                rows = db.execute("SELECT * FROM schema_name").fetchall()
                mapping = {(r["repo"], r["ref_type"], r["ref"]): r["schema"] for r in rows}
                schema = naming.schema_name(repo, ref, mapping, ref_type)
            db.execute("INSERT INTO schema_name VALUES (?, ?, ?, ?)", (repo, ref_type, ref, schema))
            return schema

    def record_merge(self, repo: str, destination: str, source_commit: str) -> None:
        """Durably record that lakehook is about to merge ``source_commit`` into
        ``destination`` (committed before this returns). Records older than
        ``MERGE_RECORD_DAYS`` are pruned; every attempt records afresh."""
        now = time.time()
        self.db.write(
            "INSERT OR REPLACE INTO merge_record VALUES (?, ?, ?, ?)",
            (repo, destination, source_commit, now),
        )
        self.db.write(
            "DELETE FROM merge_record WHERE recorded_at < ?", (now - MERGE_RECORD_DAYS * 86400,)
        )

    def merge_recorded(self, repo: str, destination: str, source_commit: str) -> bool:
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 FROM merge_record WHERE repo=? AND destination=? AND source_commit=?",
                (repo, destination, source_commit),
            )
            .fetchone()
        )
        return row is not None
