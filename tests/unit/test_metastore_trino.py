"""The Trino adapter's pure parts: SQL it writes, ``SHOW CREATE TABLE`` it reads, errors."""

from __future__ import annotations

import pytest

from lakehook.errors import ServiceUnavailable
from pipeline.adapters.trino_metastore import (
    TrinoMetastore,
    create_table_sql,
    decode_properties,
    encode_properties,
    parse_show_create_table,
    quote_identifier,
    quote_literal,
)
from pipeline.metastore.ddl import UnsafeDefinition
from pipeline.ports import Column, TableDef

TABLE = TableDef(
    schema="study_main",
    name="dm",
    location="s3a://study/main/tables/dm/",
    columns=(
        Column("patient_sk", "bigint"),
        Column("usubjid", "varchar", "Unique Subject's ID"),
        Column("amount", "decimal(10,2)"),
    ),
    properties={"lakehook.fingerprint": "f" * 64, "lakehook.source_commit": "c" * 64},
)

SHOW_CREATE = """CREATE TABLE hive.study_main.dm (
   patient_sk bigint,
   usubjid varchar COMMENT 'Unique Subject''s ID',
   amount decimal(10,2),
   "select" varchar
)
COMMENT 'lakehook {"lakehook.fingerprint":"ff","lakehook.source_commit":"cc"}'
WITH (
   external_location = 's3a://study/main/tables/dm',
   format = 'PARQUET'
)"""


def test_quoting() -> None:
    assert quote_identifier("a_b") == '"a_b"'
    with pytest.raises(UnsafeDefinition, match="not a safe name"):
        quote_identifier('a"b')
    assert quote_literal("it's\nfine") == "'it''s fine'"


def test_create_table_sql() -> None:
    sql = create_table_sql("hive", TABLE)
    assert sql.startswith('CREATE TABLE "hive"."study_main"."dm" (')
    assert "\"usubjid\" varchar COMMENT 'Unique Subject''s ID'" in sql
    assert "external_location = 's3a://study/main/tables/dm/', format = 'PARQUET'" in sql
    assert '"lakehook.fingerprint":"' + "f" * 64 in sql


def test_parse_show_create_table() -> None:
    table = parse_show_create_table("study_main", "dm", SHOW_CREATE)
    assert table.location == "s3a://study/main/tables/dm"
    assert table.columns == (
        Column("patient_sk", "bigint"),
        Column("usubjid", "varchar", "Unique Subject's ID"),
        Column("amount", "decimal(10,2)"),
        Column("select", "varchar"),
    )
    assert table.properties == {"lakehook.fingerprint": "ff", "lakehook.source_commit": "cc"}


def test_properties_round_trip_and_foreign_comments() -> None:
    assert decode_properties(encode_properties({"a": "1"})) == {"a": "1"}
    assert decode_properties("a comment written by someone else") == {}
    assert decode_properties("lakehook {not json") == {}
    assert decode_properties(None) == {}


def test_unreachable_trino_is_service_unavailable() -> None:
    metastore = TrinoMetastore("127.0.0.1", 9, request_timeout=2)  # discard port: refused
    with pytest.raises(ServiceUnavailable, match="Trino did not answer"):
        metastore.list_schemas()
