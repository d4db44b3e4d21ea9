"""Check a ref's schema against its manifests, its Parquet files and the engine.

Three independent witnesses must agree for a table to count as synced:

1. the metastore definition (columns, types, location, fingerprint) vs the manifest;
2. the Parquet footers of the manifest's files (column names and types, row count) vs the
   manifest: catches outputs that do not match what the manifest says;
3. a probe query through the engine (``SELECT count(*)``) vs the manifest's row count.

The probe is the one costly witness (a Trino statement costs 0.3-0.5 CPU s on the reference
machine, whatever it reads), and its answer depends only on what it reads: the table's
definition and its files. So a table whose ``probe_identity`` (definition, rows, exact files)
was probed at this schema before without a problem is not probed again; its definition and
footers are still checked every time, and a repair forces every probe.

The result is a list of ``Problem`` values, never an exception for a mismatch; an outage of a
service raises ``ServiceUnavailable``. Callers repair with ``sync_ref`` or report.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lakehook.errors import LakehookError, NotFound, TransientError
from pipeline.metastore.sync import (
    DEFAULT_WORKERS,
    desired_tables_from_manifests,
    differences,
    parallel_map,
    read_tables,
)
from pipeline.model import TableManifest
from pipeline.ports import LakeFS, Metastore, TableDef

# What: a Problem's ``what``. METASTORE_PROBLEMS are the ones a re-sync repairs.
MISSING_TABLE = "table missing"
UNEXPECTED_TABLE = "unexpected table"
DEFINITION = "definition differs"
PARQUET_SCHEMA = "parquet schema differs"
PARQUET_ROWS = "parquet row count differs"
PARQUET_UNREADABLE = "parquet file unreadable"
PROBE_FAILED = "probe query failed"
PROBE_ROWS = "probe row count differs"
METASTORE_PROBLEMS = frozenset({MISSING_TABLE, UNEXPECTED_TABLE, DEFINITION})


@dataclass(frozen=True)
class Problem:
    """One disagreement: which table, what kind, what was expected and what was found."""

    table: str
    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.table}: {self.what}: expected {self.expected}, found {self.found}"

    def to_dict(self) -> dict[str, str]:
        return {
            "table": self.table,
            "message": f"{self.what}: expected {self.expected}, found {self.found}",
            "what": self.what,
            "expected": self.expected,
            "found": self.found,
        }


def trino_type(arrow_type: Any) -> str:
    """The Trino type name of a Parquet column as pyarrow reads it."""
    if pa.types.is_int32(arrow_type) or pa.types.is_int16(arrow_type):
        return "integer"
    if pa.types.is_int64(arrow_type):
        return "bigint"
    if pa.types.is_float64(arrow_type):
        return "double"
    if pa.types.is_float32(arrow_type):
        return "real"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "varchar"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[arrow_type.unit]
        return f"timestamp({digits})"
    return str(arrow_type)


def parquet_columns(data: bytes | pa.NativeFile) -> tuple[list[tuple[str, str]], int]:
    """(name, Trino type) of each column and the row count, from a Parquet file's footer."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    metadata = pq.ParquetFile(source).metadata
    schema = metadata.schema.to_arrow_schema()
    columns = []
    for index, f in enumerate(schema):
        # Trino's Hive writer stores timestamps as INT96 (pyarrow reads nanoseconds); the
        # table reads them at the Hive connector's precision, milliseconds
        int96 = metadata.schema.column(index).physical_type == "INT96"
        columns.append((f.name.lower(), "timestamp(3)" if int96 else trino_type(f.type)))
    return columns, metadata.num_rows


class _RangedObject(io.RawIOBase):
    """A read-only, seekable view of one lakeFS object that fetches only the ranges read.

    pyarrow reads a Parquet footer from the end of the file (its last 64 KiB, then the rest
    of the footer if larger), so verification transfers the footers, never whole files.
    """

    def __init__(self, lakefs: LakeFS, repo: str, ref: str, path: str, size: int) -> None:
        self.lakefs, self.repo, self.ref, self.path, self.size = lakefs, repo, ref, path, size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), max(self.size - self.position, 0))
        if length <= 0:
            return 0
        data = self.lakefs.read_range(self.repo, self.ref, self.path, self.position, length)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def footer_columns(
    lakefs: LakeFS, repo: str, ref: str, path: str
) -> tuple[list[tuple[str, str]], int]:
    """``parquet_columns`` of an object in lakeFS, read from its footer by ranged reads."""
    info = lakefs.stat_object(repo, ref, path)
    if info is None:
        raise NotFound(f"object {path!r} not found at {repo}/{ref}")
    ranged = _RangedObject(lakefs, repo, ref, path, info.size)
    return parquet_columns(pa.PythonFile(ranged, mode="r"))


def check_definitions(
    desired: Mapping[str, TableDef], actual: Mapping[str, TableDef | None]
) -> list[Problem]:
    """Metastore definitions vs the definitions the manifests imply."""
    problems = []
    for table in sorted(set(actual) - set(desired)):
        problems.append(Problem(table, UNEXPECTED_TABLE, "no table", "a table without manifest"))
    for table, want in sorted(desired.items()):
        have = actual.get(table)
        if have is None:
            problems.append(Problem(table, MISSING_TABLE, want.location, "nothing"))
            continue
        for diff in differences(want, have):
            problems.append(Problem(table, DEFINITION, "as in the manifest", diff))
    return problems


def check_files(lakefs: LakeFS, repo: str, ref: str, manifest: TableManifest) -> list[Problem]:
    """Parquet footers of the manifest's files vs its columns and rows."""
    expected = [(c.name.lower(), c.type.lower().replace(" ", "")) for c in manifest.columns]
    problems = []
    rows = 0
    for path in manifest.files:
        try:
            columns, count = footer_columns(lakefs, repo, ref, path)
        except TransientError:
            raise
        except (LakehookError, OSError, pa.ArrowException) as err:
            problems.append(Problem(manifest.table, PARQUET_UNREADABLE, path, str(err)))
            continue
        rows += count
        if columns != expected:
            problems.append(
                Problem(
                    manifest.table,
                    PARQUET_SCHEMA,
                    _columns_text(expected),
                    f"{path}: {_columns_text(columns)}",
                )
            )
    if not problems and rows != manifest.rows:
        problems.append(Problem(manifest.table, PARQUET_ROWS, str(manifest.rows), str(rows)))
    return problems


def check_probe(metastore: Metastore, schema: str, manifest: TableManifest) -> list[Problem]:
    """``SELECT count(*)`` through the engine vs the manifest's row count."""
    try:
        rows = metastore.probe(schema, manifest.table)
    except TransientError:
        raise
    except LakehookError as err:
        return [Problem(manifest.table, PROBE_FAILED, f"{manifest.rows} rows", err.message)]
    if rows != manifest.rows:
        return [Problem(manifest.table, PROBE_ROWS, str(manifest.rows), str(rows))]
    return []


def table_checks(
    metastore: Metastore,
    lakefs: LakeFS | None,
    repo: str,
    ref: str,
    schema: str,
    manifest: TableManifest,
    probe: bool = True,
) -> tuple[list[Problem], list[Problem]]:
    """One table's Parquet footers (skipped without ``lakefs``), then its probe when the files
    agree: the problems of each. ``verify_ref`` drops the probe's for a table whose metastore
    definition turns out broken, so the checks may start before the definitions are read."""
    files = check_files(lakefs, repo, ref, manifest) if lakefs is not None else []
    probed = check_probe(metastore, schema, manifest) if probe and not files else []
    return files, probed


PROBE_IDENTITY_VERSION = "1"  # raise when what a probe reads depends on something new


def probe_identity(definition: TableDef, manifest: TableManifest) -> str:
    """What a probe of the table reads: its whole definition (location, columns, properties)
    and the manifest's rows and exact files (names, sizes, lakeFS checksums)."""
    payload = [
        PROBE_IDENTITY_VERSION,
        asdict(definition),
        manifest.rows,
        sorted(manifest.files),
        sorted([path, list(check)] for path, check in manifest.file_fingerprints.items()),
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def probe_identities(
    repo: str, ref: str, schema: str, manifests: Mapping[str, TableManifest]
) -> dict[str, str]:
    """table -> ``probe_identity`` of each table a ref's schema must hold."""
    desired = desired_tables_from_manifests(repo, ref, schema, manifests)
    return {t: probe_identity(desired[t], manifests[t]) for t in sorted(manifests)}


def verify_ref(
    metastore: Metastore,
    lakefs: LakeFS | None,
    repo: str,
    ref: str,
    schema: str,
    manifests: Mapping[str, TableManifest],
    *,
    probe: bool = True,
    workers: int = DEFAULT_WORKERS,
    early: Mapping[str, Future[tuple[list[Problem], list[Problem]]]] | None = None,
) -> list[Problem]:
    """Every disagreement between a ref's schema, manifests, Parquet files and the engine.

    Args:
        metastore: the metastore adapter (also runs the probe query).
        lakefs: where the Parquet files are read; ``None`` skips the footer check.
        repo: the lakeFS repository.
        ref: the branch or tag (its head is what the manifests describe).
        schema: the ref's Hive schema.
        manifests: table -> manifest at the ref's head.
        probe: run ``SELECT count(*)`` per table (skipped for tables already broken).
        workers: parallel calls.
        early: table -> its ``table_checks`` started already (``sync_and_verify`` starts a
            table's as soon as its definition is written); the others are run here.

    Returns:
        The problems, sorted by table; empty means verified.

    Raises:
        ServiceUnavailable: a service did not answer (nothing could be concluded).
    """
    desired = desired_tables_from_manifests(repo, ref, schema, manifests)
    names = set(metastore.list_schemas())
    actual = read_tables(metastore, schema, workers) if schema.lower() in names else {}
    problems = check_definitions(desired, actual)
    broken = {p.table for p in problems}

    def check(manifest: TableManifest) -> list[Problem]:
        started = early.get(manifest.table) if early is not None else None
        if started is not None:
            files, probed = started.result()
        else:  # not started yet: no probe of a table whose definition is broken
            files, probed = table_checks(
                metastore,
                lakefs,
                repo,
                ref,
                schema,
                manifest,
                probe and manifest.table not in broken,
            )
        return files if manifest.table in broken else files + probed

    for found in parallel_map(check, [manifests[t] for t in sorted(manifests)], workers):
        problems += found
    return sorted(problems, key=lambda p: (p.table, p.what))


def repairable(problems: list[Problem]) -> bool:
    """Whether every problem is one a metastore re-sync fixes."""
    return bool(problems) and all(p.what in METASTORE_PROBLEMS for p in problems)


def _columns_text(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{n} {t}" for n, t in columns)
