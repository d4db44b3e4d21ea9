"""Branch creation: from a new lakeFS branch to all of its tables queryable through Trino.

Goal (issue #6): 30 tables queryable within 2 s (p50) after the post-create-branch event.
One run compares, interleaved round by round on the same repository:

* ``serial trino``: the baseline, one Trino DDL statement after another (read the source
  definition, create the table) and one probe after another;
* ``parallel trino``: ``copy_schema`` with 8 workers over Trino DDL, probes in parallel;
* ``serial thrift`` / ``parallel thrift``: ``copy_schema`` over the Hive Metastore's Thrift
  API (``pipeline.adapters.hive_metastore``, lakehook's default), probes through Trino.

Each round creates a lakeFS branch, starts the clock, copies the schema and probes every
table until its ``count(*)`` equals the source's. Needs the local stack
(``lakehook stack up``). Run: ``.venv/bin/python -m bench branch_create`` or
``.venv/bin/python -m bench.bench_branch_create --tables 30 --rounds 7``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
import urllib.request
import uuid
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.config import Config

from lakehook.settings import Settings
from pipeline.adapters.hive_metastore import HiveMetastore
from pipeline.adapters.trino_metastore import TrinoMetastore
from pipeline.metastore.sync import copy_schema, desired_tables_from_manifests, parallel_map
from pipeline.model import OutputColumn, TableManifest
from pipeline.naming import base_schema_name
from pipeline.ports import Metastore

GOAL_SECONDS = 2.0


def _api(settings: Settings, method: str, path: str, body: object = None) -> Any:
    token = base64.b64encode(
        f"{settings.lakefs_access_key_id}:{settings.lakefs_secret_access_key}".encode()
    ).decode()
    request = urllib.request.Request(
        f"{settings.lakefs_url}/api/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        raw = response.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:  # creating a branch answers the commit id as plain text
        return raw.decode()


def _parquet(rows: int) -> bytes:
    table = pa.table(
        {
            "usubjid": pa.array([f"01-701-{i}" for i in range(rows)]),
            "age": pa.array(list(range(rows)), pa.int32()),
            "weight": pa.array([70.5] * rows),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _manifest(table: str, rows: int) -> TableManifest:
    return TableManifest(
        table=table,
        dataset=table.upper(),
        source_commit="bench",
        raw_path=f"raw/{table}.csv",
        raw_checksum="",
        contents_path="raw/contents.csv",
        contents_fingerprint="",
        keys_fingerprint="",
        processing_version="1",
        fingerprint=f"{table}-fingerprint",
        files=(f"tables/{table}/part-0.parquet",),
        columns=(
            OutputColumn("usubjid", "varchar"),
            OutputColumn("age", "integer"),
            OutputColumn("weight", "double"),
        ),
        rows=rows,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _round(
    metastore: Metastore,
    probe_engine: TrinoMetastore,
    workers: int,
    source_schema: str,
    target_schema: str,
    repo: str,
    branch: str,
    expected: dict[str, int],
) -> float:
    started = time.perf_counter()
    copy_schema(metastore, source_schema, target_schema, repo, branch, workers=workers)

    def queryable(table: str) -> None:
        rows = probe_engine.probe(target_schema, table)
        if rows != expected[table]:
            raise AssertionError(f"{target_schema}.{table}: {rows} rows, {expected[table]} wanted")

    parallel_map(queryable, sorted(expected), workers)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown table (ratios against the serial baseline)."""
    parser = argparse.ArgumentParser(prog="bench_branch_create", description=__doc__)
    parser.add_argument("--tables", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    settings = Settings.load()
    repo = f"bench-branch-{uuid.uuid4().hex[:6]}"
    trino = TrinoMetastore.from_settings(settings)
    thrift = HiveMetastore.from_settings(settings)
    strategies: dict[str, tuple[Metastore, int]] = {
        "serial trino (baseline)": (trino, 1),
        "parallel trino": (trino, 8),
        "serial thrift": (thrift, 1),
        "parallel thrift (lakehook)": (thrift, 8),
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.lakefs_url,
        aws_access_key_id=settings.lakefs_access_key_id,
        aws_secret_access_key=settings.lakefs_secret_access_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    _api(settings, "POST", "/repositories", {"name": repo, "storage_namespace": f"local://{repo}"})
    schemas = [base_schema_name(repo, "main")]
    try:
        expected = {f"t{i:02d}": 10 + i for i in range(args.tables)}
        for table, rows in expected.items():
            s3.put_object(
                Bucket=repo, Key=f"main/tables/{table}/part-0.parquet", Body=_parquet(rows)
            )
        _api(settings, "POST", f"/repositories/{repo}/branches/main/commits", {"message": "bench"})
        manifests = {t: _manifest(t, rows) for t, rows in expected.items()}
        main_schema = schemas[0]
        trino.create_schema(main_schema)
        definitions = desired_tables_from_manifests(repo, "main", main_schema, manifests)
        for definition in definitions.values():
            trino.create_table(definition)

        timings: dict[str, list[float]] = {name: [] for name in strategies}
        for number in range(args.rounds):
            for name, (metastore, workers) in strategies.items():
                branch = f"b{number}-{len(schemas)}"
                _api(
                    settings,
                    "POST",
                    f"/repositories/{repo}/branches",
                    {"name": branch, "source": "main"},
                )
                target = base_schema_name(repo, branch)
                schemas.append(target)
                timings[name].append(
                    _round(metastore, trino, workers, main_schema, target, repo, branch, expected)
                )
        _report(timings, args.tables, args.rounds)
    finally:
        for schema in schemas:
            trino.drop_schema(schema)
        _api(settings, "DELETE", f"/repositories/{repo}")


def _report(timings: dict[str, list[float]], tables: int, rounds: int) -> None:
    baseline = statistics.median(next(iter(timings.values())))
    print(f"\nBranch creation: {tables} tables queryable, {rounds} rounds each, interleaved\n")
    print("| strategy | p50 s | p95 s | max s | p50 vs baseline | p50 within 2 s |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(
            f"| {name} | {p50:.2f} | {_percentile(values, 0.95):.2f} | {max(values):.2f} | "
            f"{baseline / p50:.1f}x faster | {'yes' if p50 <= GOAL_SECONDS else 'no'} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
