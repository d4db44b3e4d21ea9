"""The Thrift adapter's pure parts: type names and the HMS table it writes."""

from __future__ import annotations

import pytest

from lakehook.errors import ServiceUnavailable
from pipeline.adapters.thrift_metastore import (
    PARQUET_SERDE,
    ThriftMetastore,
    from_thrift,
    hive_type,
    to_thrift,
    trino_type,
)
from pipeline.adapters.trino_metastore import TrinoMetastore
from pipeline.ports import Column, TableDef

TABLE = TableDef(
    schema="study_main",
    name="dm",
    location="s3a://study/main/tables/dm/",
    columns=(
        Column("patient_sk", "bigint"),
        Column("usubjid", "varchar", "Unique Subject Identifier"),
        Column("age", "integer"),
        Column("amount", "decimal(10, 2)"),
        Column("rfstdtc", "timestamp(3)"),
    ),
    properties={"lakehook.fingerprint": "f" * 64},
)


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
        ("decimal(10,2)", "decimal(10,2)"),
    ],
)
def test_type_names_round_trip(trino: str, hive: str) -> None:
    assert hive_type(trino) == hive
    assert trino_type(hive) == trino


def test_external_parquet_table_round_trip() -> None:
    thrift = to_thrift(TABLE, "lakehook")
    assert thrift.tableType == "EXTERNAL_TABLE"
    assert thrift.parameters["EXTERNAL"] == "TRUE"
    assert thrift.parameters["lakehook.fingerprint"] == "f" * 64
    assert thrift.sd.serdeInfo.serializationLib == PARQUET_SERDE
    assert [c.type for c in thrift.sd.cols] == [
        "bigint",
        "string",
        "int",
        "decimal(10,2)",
        "timestamp",
    ]
    back = from_thrift(thrift)
    assert back.location == TABLE.location
    assert back.properties == TABLE.properties
    assert back.columns[1] == Column("usubjid", "varchar", "Unique Subject Identifier")
    assert back.columns[3].type == "decimal(10,2)"


def test_unreachable_metastore_is_service_unavailable() -> None:
    metastore = ThriftMetastore("127.0.0.1", 9, TrinoMetastore("127.0.0.1", 9), timeout_seconds=2)
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        metastore.list_schemas()
