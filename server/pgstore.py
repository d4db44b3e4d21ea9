"""Shared state in PostgreSQL, for several ``lakehook serve`` replicas (``LAKEHOOK_QUEUE_URL``).

The same tables as the SQLite state database (``server.store``) in one PostgreSQL schema:
jobs, statuses, schema names, merge records, job faults and quarantines. Every replica and
every worker process of a replica reads and writes them, so whatever decides correctness
(who holds a job, what the gate lets through, which schema a ref has, which head is
quarantined) is one truth for all replicas. What stays per replica is in
``docs/architecture.md`` ("Several replicas").

``PgDatabase`` offers what ``server.store.Database`` offers (``connection().execute(sql,
params)`` and ``transaction()``, SQL written with ``?`` placeholders), on a small
``psycopg_pool`` pool per process: connections are made when needed and closed when idle
(the stack's PostgreSQL allows 40 connections, Marquez uses half). Times stay epoch seconds
(``double precision``) as in SQLite, but are read from the database's clock
(``lakehook_now()``) wherever they decide something between replicas (leases, due times).
PostgreSQL's connection errors become ``ServiceUnavailable`` (a service failure: retried).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from lakehook.errors import ServiceUnavailable
from pipeline import naming
from pipeline.model import RefStatus

SCHEMA = """
-- the database's clock in epoch seconds (clock_timestamp: the moment of the call, not the
-- transaction's start): every lease and due time between replicas is read from it
CREATE OR REPLACE FUNCTION lakehook_now() RETURNS double precision
    LANGUAGE sql VOLATILE AS 'SELECT extract(epoch FROM clock_timestamp())::double precision';
CREATE TABLE IF NOT EXISTS status (
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL,
    body TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, ref_type, ref));
CREATE TABLE IF NOT EXISTS schema_name (
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL, schema TEXT NOT NULL UNIQUE,
    PRIMARY KEY (repo, ref_type, ref));
CREATE TABLE IF NOT EXISTS job (
    id BIGSERIAL PRIMARY KEY,
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL,
    kind TEXT NOT NULL, args TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    generation BIGINT NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL DEFAULT lakehook_now(),
    started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    event TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS job_state ON job (state, not_before);
CREATE INDEX IF NOT EXISTS job_key ON job (repo, ref_type, ref, state);
-- one running job per ref, whatever races: a second claim of a ref fails and is retried
CREATE UNIQUE INDEX IF NOT EXISTS job_one_running ON job (repo, ref_type, ref)
    WHERE state = 'running';
CREATE TABLE IF NOT EXISTS merge_record (
    repo TEXT NOT NULL, destination TEXT NOT NULL, source_commit TEXT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, destination, source_commit));
CREATE TABLE IF NOT EXISTS job_fault (
    job_id BIGINT PRIMARY KEY,
    head TEXT NOT NULL DEFAULT '', source_commit TEXT NOT NULL DEFAULT '',
    dataset TEXT NOT NULL DEFAULT '',
    deaths INTEGER NOT NULL DEFAULT 0, death_head TEXT NOT NULL DEFAULT '',
    last_reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS quarantine (
    repo TEXT NOT NULL, ref_type TEXT NOT NULL, ref TEXT NOT NULL, head TEXT NOT NULL,
    job_id BIGINT NOT NULL, reason TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, ref_type, ref, head));
"""

MERGE_RECORD_DAYS = 30
_PLACEHOLDER = re.compile(r"\?")


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (stable across processes and hosts)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _sql(statement: str) -> str:
    """``?`` placeholders (as ``server.store`` writes them) in psycopg's ``%s`` form."""
    return _PLACEHOLDER.sub("%s", statement.replace("%", "%%"))


class Rows:
    """A statement's result, fetched whole (the connection is back in the pool already)."""

    def __init__(self, rows: list[dict[str, Any]], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> dict[str, Any] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows)


class Session:
    """Runs statements on one connection (inside a transaction) or on a pooled one each."""

    def __init__(self, database: PgDatabase, conn: psycopg.Connection[Any] | None) -> None:
        self.database, self.conn = database, conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Rows:
        if self.conn is not None:
            return _run(self.conn, statement, params)
        with self.database.pooled() as conn:
            return _run(conn, statement, params)

    def executemany(self, statement: str, params: Sequence[Sequence[Any]]) -> None:
        for one in params:
            self.execute(statement, one)


def _run(conn: psycopg.Connection[Any], statement: str, params: Sequence[Any]) -> Rows:
    cur = conn.execute(_sql(statement) if params else statement, tuple(params) or None)
    rows = cur.fetchall() if cur.description is not None else []
    return Rows(rows, cur.rowcount)


class PgDatabase:
    """The shared state database: a per-process pool, ``connection()`` and ``transaction()``.

    ``url`` is a libpq URI (``postgresql://user:password@host:port/db``); a
    ``?options=-csearch_path%3Dname`` in it puts the tables in schema ``name`` (made when
    missing), e.g. one per test. ``max_connections`` bounds this process's share.
    """

    def __init__(self, url: str, *, max_connections: int = 4, name: str = "lakehook") -> None:
        self.url = url
        self._local = threading.local()
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = (
            psycopg_pool.ConnectionPool(
                url,
                kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 10},
                min_size=0,
                max_size=max_connections,
                max_idle=60.0,
                timeout=30.0,
                name=name,
                open=True,
            )
        )
        try:  # the tables, on a connection of its own: an unreachable server says why at once
            with psycopg.connect(
                url, autocommit=True, row_factory=dict_row, connect_timeout=10
            ) as conn:
                self._create_tables(Session(self, conn), conn)
        except psycopg.OperationalError as err:
            self.pool.close()
            raise ServiceUnavailable(f"PostgreSQL (LAKEHOOK_QUEUE_URL) failed: {err}") from err

    def _create_tables(self, db: Session, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (lock_key("lakehook", "ddl"),))
            wanted = self._wanted_schema(db)
            if wanted:
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{wanted}"')
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT current_schema() AS s").fetchone()
            # the schema the tables are in: part of every advisory lock key of this database
            self.schema = str(row["s"] if row else "public")

    @staticmethod
    def _wanted_schema(db: Session) -> str:
        """The first schema of the search path when it names one to create (not ``$user``)."""
        row = db.execute("SELECT current_setting('search_path') AS p").fetchone()
        first = str(row["p"] if row else "").split(",")[0].strip().strip('"')
        if not first or first == "$user" or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", first):
            return ""
        return first

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool; PostgreSQL unreachable is ``ServiceUnavailable``."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as err:
            raise ServiceUnavailable(f"PostgreSQL (LAKEHOOK_QUEUE_URL) failed: {err}") from err

    def connection(self) -> Session:
        """Statements for this thread: inside its open transaction, if any."""
        conn = getattr(self._local, "conn", None)
        return Session(self, conn)

    def write(self, statement: str, params: Sequence[Any] = ()) -> Rows:
        """One statement as its own transaction (``Database.write`` of SQLite)."""
        return self.connection().execute(statement, params)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction on one connection (READ COMMITTED; row locks and advisory locks
        do the serialising that SQLite's ``BEGIN IMMEDIATE`` does)."""
        outer = getattr(self._local, "conn", None)
        if outer is not None:  # nested: part of the outer transaction
            yield Session(self, outer)
            return
        with self.pooled() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield Session(self, conn)
            finally:
                self._local.conn = None

    @contextmanager
    def try_lock(self, key: int) -> Iterator[bool]:
        """A session advisory lock held for the block; False (not waited for) when another
        connection holds it. A process that dies releases it with its connection."""
        with self.pooled() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
            held = bool(row and row["ok"])
            try:
                yield held
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


class PgStatusStore:
    """``pipeline.ports.StatusStore`` on the shared PostgreSQL database."""

    def __init__(self, db: PgDatabase) -> None:
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

    def put_status(self, status: RefStatus) -> None:
        self.db.connection().execute(
            "INSERT INTO status VALUES (?, ?, ?, ?, ?) ON CONFLICT (repo, ref_type, ref) "
            "DO UPDATE SET body=excluded.body, updated_at=excluded.updated_at",
            (
                status.repository,
                status.ref_type,
                status.ref,
                json.dumps(status.to_dict()),
                status.updated_at,
            ),
        )

    def delete_status(self, repo: str, ref: str, ref_type: str = "branch") -> None:
        self.db.connection().execute(
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
        """Insert-or-fail under one advisory lock for every replica, so two refs never get
        one name (contract §7 v1.1); on a conflict the name follows the collision rule."""
        with self.db.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (lock_key("lakehook", "schema"),))
            stored = db.execute(
                "SELECT schema FROM schema_name WHERE repo=? AND ref_type=? AND ref=?",
                (repo, ref_type, ref),
            ).fetchone()
            if stored is not None:
                return str(stored["schema"])
            taken = db.execute("SELECT 1 FROM schema_name WHERE schema=?", (schema,)).fetchone()
            if taken is not None:
                mapping = {
                    (r["repo"], r["ref_type"], r["ref"]): r["schema"]
                    for r in db.execute("SELECT * FROM schema_name").fetchall()
                }
                schema = naming.schema_name(repo, ref, mapping, ref_type)
            db.execute("INSERT INTO schema_name VALUES (?, ?, ?, ?)", (repo, ref_type, ref, schema))
            return schema

    def record_merge(self, repo: str, destination: str, source_commit: str) -> None:
        """Durably record a merge lakehook is about to ask for (committed on return), so the
        gate of any replica lets it through; records older than ``MERGE_RECORD_DAYS`` go."""
        now = time.time()
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO merge_record VALUES (?, ?, ?, ?) "
                "ON CONFLICT (repo, destination, source_commit) "
                "DO UPDATE SET recorded_at=excluded.recorded_at",
                (repo, destination, source_commit, now),
            )
            db.execute(
                "DELETE FROM merge_record WHERE recorded_at < ?",
                (now - MERGE_RECORD_DAYS * 86400,),
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
