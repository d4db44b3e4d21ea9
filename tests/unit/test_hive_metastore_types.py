"""The pure half of the Thrift adapter: type spellings and the Table it writes."""

from __future__ import annotations

import pytest

from pipeline.adapters.hive_metastore import (
    PARQUET_SERDE,
    hive_type,
    table_from_thrift,
    table_to_thrift,
    trino_type,
)
from pipeline.adapters.trino_metastore import decode_properties
from pipeline.ports import Column, TableDef


@pytest.mark.parametrize(
    ("trino", "hive"),
    [
        ("varchar", "string"),
        ("integer", "int"),
        ("bigint", "bigint"),
        ("double", "double"),
        ("boolean", "boolean"),
        ("date", "date"),
        ("timestamp(3)", "timestamp"),
        ("decimal(8,2)", "decimal(8,2)"),
    ],
)
def test_every_lakehook_type_round_trips(trino: str, hive: str) -> None:
    assert hive_type(trino) == hive
    assert trino_type(hive) == trino


def test_spacing_and_case_do_not_matter() -> None:
    assert hive_type("DECIMAL(8, 2)") == "decimal(8,2)"
    assert trino_type("decimal(8, 2)") == "decimal(8,2)"


def test_table_is_external_parquet_with_properties_twice_and_reads_back() -> None:
    table = TableDef(
        schema="s",
        name="dm",
        location="s3a://repo/main/tables/dm",
        columns=(Column("usubjid", "varchar", "Subject"), Column("age", "integer")),
        properties={"lakehook.fingerprint": "f", "lakehook.source_commit": "c"},
    )
    thrift = table_to_thrift(table, "lakehook")
    assert thrift.tableType == "EXTERNAL_TABLE"
    assert thrift.parameters["EXTERNAL"] == "TRUE"
    assert thrift.parameters["lakehook.fingerprint"] == "f"
    assert decode_properties(thrift.parameters["comment"]) == dict(table.properties)
    assert thrift.sd.serdeInfo.serializationLib == PARQUET_SERDE
    assert [(c.name, c.type, c.comment) for c in thrift.sd.cols] == [
        ("usubjid", "string", "Subject"),
        ("age", "int", None),
    ]
    assert table_from_thrift(thrift) == table
