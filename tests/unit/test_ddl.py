"""SQL and metastore definitions only from checked names and closed types (issue 11, item 3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lakehook.errors import TerminalError
from pipeline.adapters.hive_metastore import table_to_thrift
from pipeline.adapters.trino_metastore import create_table_sql
from pipeline.metastore import ddl
from pipeline.metastore.sync import execute, plan_sync
from pipeline.ports import Column, TableDef
from tests.fakes.metastore import FakeMetastore

INJECTED_TYPE = (
    "varchar) COMMENT 'x' WITH (external_location = 's3a://other-study/main/tables/dm/', "
    "format = 'PARQUET') /*"
)

GOOD = TableDef(
    schema="study_main",
    name="dm",
    location="s3a://study/main/tables/dm/",
    columns=(
        Column("patient_sk", "bigint"),
        Column("usubjid", "VARCHAR", "Subject's id\nsecond line"),
        Column("amount", "decimal(10, 2)"),
        Column("seen", "timestamp(3)"),
    ),
)


@pytest.mark.parametrize(
    ("text", "rendered", "hive"),
    [
        ("varchar", "varchar", "string"),
        ("string", "varchar", "string"),
        ("INTEGER", "integer", "int"),
        ("int", "integer", "int"),
        ("bigint", "bigint", "bigint"),
        ("double", "double", "double"),
        ("decimal( 38 , 0 )", "decimal(38,0)", "decimal(38,0)"),
        ("decimal(1,1)", "decimal(1,1)", "decimal(1,1)"),
        ("boolean", "boolean", "boolean"),
        ("date", "date", "date"),
        ("timestamp(3)", "timestamp(3)", "timestamp"),
        ("timestamp", "timestamp(3)", "timestamp"),
    ],
)
def test_the_closed_set_of_types(text: str, rendered: str, hive: str) -> None:
    ctype = ddl.parse_type(text)
    assert (ctype.render(), ctype.hive()) == (rendered, hive)


@pytest.mark.parametrize(
    "text",
    [
        INJECTED_TYPE,
        "varchar(10)",  # lakehook writes plain varchar
        "decimal(39,0)",
        "decimal(0,0)",
        "decimal(5,6)",
        "decimal(10,-1)",
        "real",
        "array(varchar)",
        "map(varchar,varchar)",
        "row(a varchar)",
        "timestamp(6)",
        "varchar --",
        "bigint/**/",
        "",
        "x" * 10_000,
    ],
)
def test_anything_else_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ddl.UnsafeDefinition, match="not a table type") as err:
        ddl.parse_type(text, "dm.age")
    assert isinstance(err.value, TerminalError)
    assert "dm.age" in str(err.value)
    assert len(str(err.value)) < 400  # a 10,000-character type is not echoed whole


@pytest.mark.parametrize(
    "name",
    ['a"b', "DM", "dm; drop", "", "a b", "dm\n", "é", "x" * 129, 'dm"."other'],
)
def test_unsafe_identifiers(name: str) -> None:
    with pytest.raises(ddl.UnsafeDefinition, match="not a safe name"):
        ddl.quoted(name, "table")


@pytest.mark.parametrize(
    ("location", "table", "ok"),
    [
        ("s3a://study/main/tables/dm/", "dm", True),
        ("s3a://study/main/tables/dm", "dm", True),
        ("s3a://study/v1.0-rc/tables/dm/", "dm", True),
        ("s3a://other-study/main/tables/ae/", "dm", False),  # another table's directory
        ("s3a://study/main/tables/dm/../../x/", "dm", False),
        ("s3a://study/release/1.0/tables/dm/", "dm", False),  # a ref is one path element
        ("s3a://study/../tables/dm/", "dm", False),
        ("s3://study/main/tables/dm/", "dm", False),
        ("file:///etc/passwd", "dm", False),
        ("s3a://Study/main/tables/dm/", "dm", False),
        ("s3a://study/ma in/tables/dm/", "dm", False),
        ("s3a://study/main/raw/dm/", "dm", False),
    ],
)
def test_locations_are_the_tables_own_directory(location: str, table: str, ok: bool) -> None:
    if ok:
        assert ddl.location(location, table) == location
    else:
        with pytest.raises(ddl.UnsafeDefinition, match="location"):
            ddl.location(location, table)


def test_literals_escape_quotes_and_refuse_control_characters() -> None:
    assert ddl.literal("it's") == "'it''s'"
    assert ddl.comment_literal("a\nb'") == "'a b'''"
    with pytest.raises(ddl.UnsafeDefinition):
        ddl.literal("s3a://x/\n")


def test_sql_is_rendered_from_checked_values() -> None:
    sql = create_table_sql("hive", GOOD)
    assert '"amount" decimal(10,2)' in sql
    assert "\"usubjid\" varchar COMMENT 'Subject''s id second line'" in sql
    assert '"seen" timestamp(3)' in sql
    thrift = table_to_thrift(GOOD, "lakehook")
    assert [c.type for c in thrift.sd.cols] == ["bigint", "string", "decimal(10,2)", "timestamp"]


@pytest.mark.parametrize(
    "bad",
    [
        replace(GOOD, columns=(Column("age", INJECTED_TYPE),)),
        replace(GOOD, columns=(Column('age" varchar, "x', "varchar"),)),
        replace(GOOD, columns=(Column("age", "varchar"), Column("age", "bigint"))),
        replace(GOOD, name='dm" (x varchar) --'),
        replace(GOOD, schema="other.schema"),
        replace(GOOD, location="s3a://other-study/main/tables/dm/' , format = 'ORC"),
    ],
)
def test_both_adapters_refuse_an_unsafe_definition(bad: TableDef) -> None:
    with pytest.raises(ddl.UnsafeDefinition):
        create_table_sql("hive", bad)
    with pytest.raises(ddl.UnsafeDefinition):
        table_to_thrift(bad, "lakehook")


def test_sync_fails_only_the_unsafe_table_and_never_calls_the_adapter_with_it() -> None:
    metastore = FakeMetastore()  # raises AssertionError if an unchecked definition reaches it
    metastore.create_schema("study_main")
    bad = replace(GOOD, name="ae", location="s3a://study/main/tables/ae/")
    bad = replace(bad, columns=(Column("aeterm", INJECTED_TYPE),))
    result = execute(metastore, "study_main", plan_sync({"dm": GOOD, "ae": bad}, {}))
    assert [t for t, _ in result.failed] == ["ae"]
    assert "not a table type" in result.failed[0][1]
    assert metastore.list_tables("study_main") == ["dm"]
