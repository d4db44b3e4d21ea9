"""The Trino processing engine: the same step as ``table.process_table``, run by Trino.

For one dataset:

1. the header is read from lakeFS (only its first bytes) and the output columns are planned
   exactly as the pyarrow engine plans them (``convert.plan_columns``);
2. the CSV is copied (a lakeFS metadata copy, no bytes move) into its own prefix on the
   working branch, because a Hive CSV table reads a whole directory;
3. a scratch schema gets an all-``varchar`` CSV table over that prefix;
4. one aggregate query counts rows, structural problems, invalid values, missing key parts,
   key collisions and values the SQL cannot reproduce (``trino_sql``);
5. one ``CREATE TABLE ... AS SELECT`` writes typed, keyed Parquet at
   ``tables/<table>/`` on the working branch; the scratch schema and the CSV copy go.

The manifest describes the files Trino wrote; the write-back commits them where they are
(``TableRun.in_place``), so manifests, verification and lineage are those of the pyarrow
engine. Problems the pyarrow engine reports with file and line (a broken CSV, an invalid
value under ``invalid_values: fail``) are handed to it for the message: it is the reference.
A CSV that Trino reads differently from the reference parser is an error, never a table that
silently differs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trino.dbapi

from lakehook.errors import InputError, KeyCollision, NotFound
from lakehook.settings import Settings
from pipeline.adapters.trino_metastore import _translated
from pipeline.model import MANIFEST_PREFIX, PROCESSING_VERSION, TableManifest, TableRun
from pipeline.ports import LakeFS
from pipeline.processing import trino_sql
from pipeline.processing.contents import MAX_COLUMNS
from pipeline.processing.convert import convert_file, plan_columns, read_header
from pipeline.processing.plan import BranchPlan, TableTask
from pipeline.processing.table import begin_run, download, failed_run, table_prefix

log = logging.getLogger(__name__)

PYARROW = "pyarrow"
TRINO = "trino"
SCRATCH_PREFIX = "_lakehook/scratch/"
HEADER_READ = 1 << 16


@dataclass
class QueryRecord:
    """One statement the engine ran: its Trino query id and the client's final statistics."""

    query_id: str
    kind: str
    seconds: float
    stats: Mapping[str, Any]


class TrinoSession:
    """Statements through Trino's HTTP protocol, errors translated, statistics kept."""

    def __init__(self, settings: Settings, *, request_timeout: float = 600.0) -> None:
        host, port = settings.trino_host_port
        self.catalog = settings.trino_catalog
        self._connect = {
            "host": host,
            "port": port,
            "user": settings.trino_user,
            "catalog": settings.trino_catalog,
            "http_scheme": "https" if settings.trino_url.startswith("https") else "http",
            "request_timeout": request_timeout,
            "max_attempts": 3,
            "source": "lakehook-engine",
        }
        self.queries: list[QueryRecord] = []

    def run(self, sql: str, kind: str = "") -> list[list[Any]]:
        started = time.monotonic()
        with _translated(sql):
            connection = trino.dbapi.connect(**self._connect)  # type: ignore[no-untyped-call]
            try:
                cursor = connection.cursor()
                cursor.execute(sql)
                rows = [list(r) for r in cursor.fetchall()]
                self.queries.append(
                    QueryRecord(
                        str(cursor.query_id or ""),
                        kind,
                        time.monotonic() - started,
                        dict(cursor.stats or {}),
                    )
                )
                return rows
            finally:
                connection.close()


@dataclass
class TrinoEngine:
    """``process_table`` through Trino (see the module docstring)."""

    lakefs: LakeFS
    session: TrinoSession
    location_scheme: str = "s3a"
    _prepared: set[str] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings, lakefs: LakeFS) -> TrinoEngine:
        return cls(lakefs, TrinoSession(settings))

    # ---- the working branch -----------------------------------------------------------------
    def prepare(self, plan: BranchPlan) -> None:
        """A fresh working branch from the processed commit (a stale attempt is dropped)."""
        repo, work = plan.repository, plan.working_branch
        with contextlib.suppress(NotFound):
            self.lakefs.delete_branch(repo, work)
        self.lakefs.create_branch(repo, work, plan.head_commit)

    def _location(self, repo: str, branch: str, prefix: str) -> str:
        return f"{self.location_scheme}://{repo}/{branch}/{prefix}"

    # ---- one dataset ------------------------------------------------------------------------
    def process_table(
        self, plan: BranchPlan, task: TableTask, scratch: Path, max_columns: int = MAX_COLUMNS
    ) -> TableRun:
        base = begin_run(plan, task, in_place=True)
        try:
            manifest = self._process(plan, task, scratch, max_columns)
        except (InputError, KeyCollision) as err:
            return failed_run(base, task, err)
        return replace(base, manifest=manifest, finished_at=time.time())

    def _process(
        self, plan: BranchPlan, task: TableTask, scratch: Path, max_columns: int
    ) -> TableManifest:
        repo, work = plan.repository, plan.working_branch
        header = self._header(plan, task, scratch, max_columns)
        layout = plan_columns(header, task.contents, plan.config.keys)
        token = uuid.uuid4().hex[:12]
        schema = f"lakehook_scratch_{token}"
        csv_prefix = f"{SCRATCH_PREFIX}{task.table}-{token}/"
        self.lakefs.copy_object(
            repo, work, plan.head_commit, task.raw_path, csv_prefix + "data.csv"
        )
        source = trino_sql.SourceTable(self.session.catalog, schema, "raw", len(header))
        target = ".".join(trino_sql.identifier(p) for p in (self.session.catalog, schema, "out"))
        out_prefix = table_prefix(task.table)
        statements = trino_sql.dataset_sql(
            source, layout.columns, target, self._location(repo, work, out_prefix)
        )
        with self._scratch_schema(schema, source, self._location(repo, work, csv_prefix)):
            try:
                row = self.session.run(statements.checks, "checks")[0]
                counts = trino_sql.check_counts(statements.check_names, row)
                self._judge(plan, task, scratch, counts)
                old = [o.path for o in self.lakefs.list_objects(repo, work, out_prefix)]
                for path in old:  # CTAS writes into an empty location
                    self.lakefs.delete_object(repo, work, path)
                try:
                    self.session.run(statements.create, "create")
                except BaseException:
                    self._restore(plan, out_prefix, old)
                    raise
            finally:
                with contextlib.suppress(NotFound):
                    self.lakefs.delete_object(repo, work, csv_prefix + "data.csv")
        files = tuple(
            o.path
            for o in self.lakefs.list_objects(repo, work, out_prefix)
            if not Path(o.path).name.startswith((".", "_"))
        )
        columns = [c for c in layout.columns if c.key is None]
        return TableManifest(
            table=task.table,
            dataset=task.dataset,
            source_commit=plan.source_commit,
            raw_path=task.raw_path,
            raw_checksum=task.raw_checksum,
            contents_path=plan.contents_path,
            contents_fingerprint=task.contents.fingerprint if task.contents else "",
            keys_fingerprint=plan.config.keys_fingerprint,
            processing_version=PROCESSING_VERSION,
            fingerprint=task.fingerprint,
            files=files,
            columns=tuple(c.out for c in layout.columns),
            rows=counts["rows"],
            invalid_values={c.out.name: counts.get(f"invalid:{c.out.name}", 0) for c in columns},
            null_keys={
                c.key: counts[f"null_keys:{c.key}"] for c in layout.columns if c.key is not None
            },
            keys={c.key: c.out.key_sources for c in layout.columns if c.key is not None},
            warnings=tuple(layout.warnings),
            engine=TRINO,
        )

    @contextlib.contextmanager
    def _scratch_schema(
        self, schema: str, source: trino_sql.SourceTable, location: str
    ) -> Iterator[None]:
        qualified = f"{trino_sql.identifier(self.session.catalog)}.{trino_sql.identifier(schema)}"
        self.session.run(f"CREATE SCHEMA {qualified}", "scratch")
        try:
            for statement in source.create_sql(location):
                self.session.run(statement, "scratch")
            yield
        finally:  # every table in it is external: dropping them keeps the data
            self.session.run(f"DROP SCHEMA IF EXISTS {qualified} CASCADE", "drop")

    def _header(
        self, plan: BranchPlan, task: TableTask, scratch: Path, max_columns: int
    ) -> list[str]:
        """The header row from the object's first bytes (the reference's own validation)."""
        stream = self.lakefs.open_object(plan.repository, plan.head_commit, task.raw_path)
        head = b""
        try:
            while len(head) < (16 << 20):
                chunk = stream.read(HEADER_READ)
                if not chunk:
                    break
                head += chunk
                if _record_end(head) != -1:
                    break
        finally:
            stream.close()
        path = scratch / "header" / f"{task.table}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(head)
        try:
            header = read_header(path, task.raw_path, max_columns)
        finally:
            path.unlink(missing_ok=True)
        record = head[: _record_end(head)] if _record_end(head) != -1 else b""
        if b"\n" in record or b"\r" in record.rstrip(b"\r"):
            raise InputError(
                "the header row has a line break inside a quoted name, which the trino "
                "engine cannot read",
                file=task.raw_path,
                line=1,
                hint="remove the line break from the column name, or set engine: pyarrow "
                "in lakehook.yaml",
            )
        return header

    def _judge(
        self, plan: BranchPlan, task: TableTask, scratch: Path, counts: Mapping[str, int]
    ) -> None:
        """Raise what the reference would raise; never let a difference through."""
        if (
            counts["ragged"]
            or counts["odd_lines"]
            or counts["null_rows"] != counts["blank_lines"]
            or counts["rows"] != counts["lines"] - counts["blank_lines"]
        ):
            self._reference_error(
                plan,
                task,
                scratch,
                "the trino engine reads this CSV differently from the CSV parser (for "
                "example a line break inside a quoted field)",
            )
        odd = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("unsupported:")}
        if any(odd.values()):
            columns = ", ".join(f"{c} ({n})" for c, n in odd.items() if n)
            raise InputError(
                f"values the trino engine cannot convert exactly as the contract says "
                f"(exponents or underscores in decimals and numeric key parts, characters "
                f"whose upper case is several letters in key parts): {columns}",
                file=task.raw_path,
                hint="write these values as plain numbers, or set engine: pyarrow in lakehook.yaml",
            )
        invalid = {k: v for k, v in counts.items() if k.startswith("invalid:") and v}
        if invalid and plan.config.invalid_values == "fail":
            self._reference_error(
                plan, task, scratch, f"invalid values ({invalid}) under invalid_values: fail"
            )
        collisions = {k: v for k, v in counts.items() if k.startswith("collisions:") and v}
        if collisions:
            raise KeyCollision(f"{task.raw_path}: natural keys share surrogate keys ({collisions})")

    def _reference_error(self, plan: BranchPlan, task: TableTask, scratch: Path, what: str) -> None:
        """Let the pyarrow engine name file, line and column; it must raise too."""
        csv_path = scratch / "reference" / f"{task.table}.csv"
        out_dir = scratch / "reference" / task.table
        download(self.lakefs, plan.repository, plan.head_commit, task.raw_path, csv_path)
        try:
            convert_file(
                csv_path,
                task.contents,
                plan.config.keys,
                out_dir,
                display_path=task.raw_path,
                invalid_values=plan.config.invalid_values,
            )
        finally:
            csv_path.unlink(missing_ok=True)
            shutil.rmtree(out_dir, ignore_errors=True)
        raise InputError(
            f"{what}; the reference engine reads it without error",
            file=task.raw_path,
            hint="set engine: pyarrow in lakehook.yaml for this study",
        )

    def _restore(self, plan: BranchPlan, prefix: str, paths: list[str]) -> None:
        """Put back the previous version's files (a failed CTAS must not remove a table)."""
        repo, work = plan.repository, plan.working_branch
        for obj in self.lakefs.list_objects(repo, work, prefix):
            self.lakefs.delete_object(repo, work, obj.path)
        for path in paths:
            self.lakefs.copy_object(repo, work, plan.head_commit, path, path)


def _record_end(head: bytes) -> int:
    """Index of the newline ending the first record (outside quotes), or -1."""
    end = head.find(b"\n")
    while end != -1 and head.count(b'"', 0, end) % 2:
        end = head.find(b"\n", end + 1)
    return end


__all__ = ["MANIFEST_PREFIX", "PYARROW", "TRINO", "TrinoEngine", "TrinoSession"]
