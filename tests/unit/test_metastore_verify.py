"""Verification: metastore vs manifests vs Parquet footers vs the probe, as a problem list."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.metastore.sync import desired_tables_from_manifests, sync_ref
from pipeline.metastore.verify import (
    DEFINITION,
    MISSING_TABLE,
    PARQUET_ROWS,
    PARQUET_SCHEMA,
    PARQUET_UNREADABLE,
    PROBE_FAILED,
    PROBE_ROWS,
    UNEXPECTED_TABLE,
    parquet_columns,
    repairable,
    verify_ref,
)
from pipeline.model import TableManifest
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore, make_manifest

SCHEMA = "study_main"


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


DM_DATA = pa.table(
    {"usubjid": pa.array(["a", "b", "c"]), "age": pa.array([1, 2, None], pa.int32())}
)
DM = make_manifest("dm", [("usubjid", "varchar"), ("age", "integer")], rows=3)


@pytest.fixture
def lakefs() -> FakeLakeFS:
    fake = FakeLakeFS()
    fake.create_repository("study", "local://study")
    fake.upload_object("study", "main", "tables/dm/part-0.parquet", parquet(DM_DATA))
    fake.commit("study", "main", "outputs", {})
    return fake


@pytest.fixture
def metastore() -> FakeMetastore:
    fake = FakeMetastore()
    tables = desired_tables_from_manifests("study", "main", SCHEMA, {"dm": DM})
    sync_ref(fake, SCHEMA, tables)
    fake.set_rows("s3a://study/main/tables/dm/", 3)
    return fake


def verify(
    metastore: FakeMetastore, lakefs: FakeLakeFS, manifests: dict[str, TableManifest]
) -> list[tuple[str, str]]:
    problems = verify_ref(metastore, lakefs, "study", "main", SCHEMA, manifests)
    return [(p.table, p.what) for p in problems]


def test_consistent_ref_has_no_problems(metastore: FakeMetastore, lakefs: FakeLakeFS) -> None:
    assert verify(metastore, lakefs, {"dm": DM}) == []


def test_missing_and_unexpected_tables(metastore: FakeMetastore, lakefs: FakeLakeFS) -> None:
    sv = make_manifest("sv", [("usubjid", "varchar")], files=(), rows=0)
    metastore.drop_table(SCHEMA, "dm")
    assert verify(metastore, lakefs, {"sv": sv}) == [("sv", MISSING_TABLE)]
    sync_ref(metastore, SCHEMA, desired_tables_from_manifests("study", "main", SCHEMA, {"dm": DM}))
    problems = verify(metastore, lakefs, {})
    assert problems == [("dm", UNEXPECTED_TABLE)]


def test_altered_column_is_a_repairable_definition_problem(
    metastore: FakeMetastore, lakefs: FakeLakeFS
) -> None:
    metastore.alter_column_type(SCHEMA, "dm", "age", "varchar")
    problems = verify_ref(metastore, lakefs, "study", "main", SCHEMA, {"dm": DM})
    assert [(p.table, p.what) for p in problems] == [("dm", DEFINITION)]
    assert "column age: type varchar instead of integer" in problems[0].found
    assert repairable(problems)


def test_parquet_schema_that_differs_from_the_manifest(
    metastore: FakeMetastore, lakefs: FakeLakeFS
) -> None:
    claims_double = make_manifest("dm", [("usubjid", "varchar"), ("age", "double")], rows=3)
    sync_ref(
        metastore,
        SCHEMA,
        desired_tables_from_manifests("study", "main", SCHEMA, {"dm": claims_double}),
    )
    problems = verify_ref(metastore, lakefs, "study", "main", SCHEMA, {"dm": claims_double})
    assert [(p.what, p.expected) for p in problems] == [
        (PARQUET_SCHEMA, "usubjid varchar, age double")
    ]
    assert "age integer" in problems[0].found
    assert not repairable(problems)


def test_parquet_rows_that_differ_from_the_manifest(
    metastore: FakeMetastore, lakefs: FakeLakeFS
) -> None:
    five = make_manifest("dm", [("usubjid", "varchar"), ("age", "integer")], rows=5)
    assert verify(metastore, lakefs, {"dm": five}) == [("dm", PARQUET_ROWS)]


def test_missing_parquet_file(metastore: FakeMetastore, lakefs: FakeLakeFS) -> None:
    gone = make_manifest(
        "dm", [("usubjid", "varchar"), ("age", "integer")], files=("tables/dm/gone.parquet",)
    )
    assert verify(metastore, lakefs, {"dm": gone}) == [("dm", PARQUET_UNREADABLE)]


def test_probe_row_count_and_failure(metastore: FakeMetastore, lakefs: FakeLakeFS) -> None:
    metastore.set_rows("s3a://study/main/tables/dm/", 2)
    assert verify(metastore, lakefs, {"dm": DM}) == [("dm", PROBE_ROWS)]
    metastore.drop_schema(SCHEMA)
    metastore.create_schema(SCHEMA)
    problems = verify_ref(metastore, None, "study", "main", SCHEMA, {"dm": DM})
    assert [p.what for p in problems] == [MISSING_TABLE]


def test_probe_failure_is_reported(lakefs: FakeLakeFS) -> None:
    class FailingProbe(FakeMetastore):
        def probe(self, schema: str, table: str) -> int:
            from lakehook.errors import TerminalError

            raise TerminalError("NOT_SUPPORTED: Unsupported Trino column type")

    metastore = FailingProbe()
    sync_ref(metastore, SCHEMA, desired_tables_from_manifests("study", "main", SCHEMA, {"dm": DM}))
    problems = verify_ref(metastore, lakefs, "study", "main", SCHEMA, {"dm": DM})
    assert [(p.what, p.found) for p in problems] == [
        (PROBE_FAILED, "NOT_SUPPORTED: Unsupported Trino column type")
    ]


def test_parquet_types_map_to_trino_names() -> None:
    table = pa.table(
        {
            "i": pa.array([1], pa.int32()),
            "b": pa.array([1], pa.int64()),
            "d": pa.array([1.5]),
            "s": pa.array(["x"]),
            "f": pa.array([True]),
            "day": pa.array([dt.date(2014, 7, 2)]),
            "ts": pa.array([dt.datetime(2014, 7, 2, 10, 30)], pa.timestamp("ms")),
            "n": pa.array([Decimal("1.25")], pa.decimal128(10, 2)),
        }
    )
    columns, rows = parquet_columns(parquet(table))
    assert rows == 1
    assert columns == [
        ("i", "integer"),
        ("b", "bigint"),
        ("d", "double"),
        ("s", "varchar"),
        ("f", "boolean"),
        ("day", "date"),
        ("ts", "timestamp(3)"),
        ("n", "decimal(10,2)"),
    ]
