"""The Trino adapter's pure parts: SQL it writes, ``SHOW CREATE TABLE`` it reads, errors."""

from __future__ import annotations

from typing import Any

import pytest
import trino.exceptions

from lakehook.errors import ServiceUnavailable, TerminalError
from pipeline.adapters.trino_metastore import (
    TrinoMetastore,
    _translated,
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


class _Racing(TrinoMetastore):
    """Answers each statement from a script: what Trino says when another client got there first."""

    def __init__(self, answers: dict[str, BaseException | list[list[object]]]) -> None:
        super().__init__("127.0.0.1", 9)
        self.answers = answers
        self.sent: list[str] = []

    def query(self, sql: str) -> list[list[Any]]:
        self.sent.append(sql)
        for prefix, answer in self.answers.items():
            if sql.startswith(prefix):
                if isinstance(answer, BaseException):
                    with _translated(sql):
                        raise answer
                return [list(row) for row in answer]
        raise AssertionError(f"unexpected statement {sql}")


def _trino_error(name: str, message: str) -> trino.exceptions.TrinoUserError:
    return trino.exceptions.TrinoUserError(
        {"errorName": name, "errorType": "USER_ERROR", "message": message}, "q1"
    )


def test_a_schema_dropped_meanwhile_is_dropped() -> None:
    """CI 2026-12-01: DROP SCHEMA IF EXISTS answered NOT_FOUND (dropped between check and call)."""
    metastore = _Racing(
        {
            "SHOW TABLES": [],
            "DROP SCHEMA": _trino_error("NOT_FOUND", "Schema s not found"),
        }
    )
    metastore.drop_schema("s")
    assert metastore.sent[-1] == 'DROP SCHEMA IF EXISTS "hive"."s"'


def test_a_schema_created_meanwhile_is_created_and_other_errors_are_not_hidden() -> None:
    metastore = _Racing(
        {"CREATE SCHEMA": _trino_error("SCHEMA_ALREADY_EXISTS", "Schema 's' already exists")}
    )
    metastore.create_schema("s")
    refused = _Racing({"CREATE SCHEMA": _trino_error("PERMISSION_DENIED", "Access Denied")})
    with pytest.raises(TerminalError, match="PERMISSION_DENIED"):
        refused.create_schema("s")
