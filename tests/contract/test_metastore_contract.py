"""One behaviour suite for every ``Metastore``: the in-memory fake, Trino DDL and HMS Thrift.

The real runs (marked ``stack``) needs the local stack and fails when it is down. Each test
works in its own schema and repository and drops the schema afterwards.
"""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from lakehook.errors import NotFound
from lakehook.settings import Settings
from pipeline.adapters.hive_metastore import HiveMetastore
from pipeline.adapters.trino_metastore import TrinoMetastore
from pipeline.naming import normalize_location, table_location
from pipeline.ports import Column, Metastore, TableDef
from tests.fakes.metastore import FakeMetastore
from tests.integration.conftest import stack_settings  # noqa: F401 (fixture)
from tests.repositories import created


@dataclass
class Subject:
    metastore: Metastore
    schema: str
    repo: str


def lakefs_api(settings: Settings, method: str, path: str, body: object = None) -> None:
    """One call of the lakeFS REST API (repositories for the table locations)."""
    token = base64.b64encode(
        f"{settings.lakefs_access_key_id}:{settings.lakefs_secret_access_key}".encode()
    ).decode()
    request = urllib.request.Request(
        f"{settings.lakefs_url}/api/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310
        pass


@pytest.fixture(
    params=[
        "fake",
        pytest.param("trino", marks=pytest.mark.stack),
        pytest.param("thrift", marks=pytest.mark.stack),
    ]
)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    suffix = uuid.uuid4().hex[:8]
    repo = created(f"contract-{suffix}")
    schema = f"contract_{suffix}"
    if request.param == "fake":
        yield Subject(FakeMetastore(), schema, repo)
        return
    settings: Settings = request.getfixturevalue("stack_settings")
    lakefs_api(
        settings,
        "POST",
        "/repositories",
        {"name": repo, "storage_namespace": f"local://{repo}", "default_branch": "main"},
    )
    metastore: Metastore = (
        TrinoMetastore.from_settings(settings)
        if request.param == "trino"
        else HiveMetastore.from_settings(settings)
    )
    try:
        yield Subject(metastore, schema, repo)
    finally:
        metastore.drop_schema(schema)
        lakefs_api(settings, "DELETE", f"/repositories/{repo}")


def table(subject: Subject, name: str = "dm", **changes: object) -> TableDef:
    base = TableDef(
        schema=subject.schema,
        name=name,
        location=table_location(subject.repo, "main", name),
        columns=(
            Column("patient_sk", "bigint"),
            Column("usubjid", "varchar", "Unique Subject Identifier"),
            Column("age", "integer"),
            Column("weight", "decimal(8,2)"),
            Column("brthdt", "date"),
            Column("rfstdtc", "timestamp(3)"),
            Column("visitnum", "double"),
            Column("flag", "boolean"),
        ),
        properties={"lakehook.fingerprint": "f" * 64, "lakehook.source_commit": "c" * 64},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_create_schema_is_idempotent_and_listed(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    subject.metastore.create_schema(subject.schema)
    assert subject.schema in subject.metastore.list_schemas()
    assert subject.metastore.list_tables(subject.schema) == []


def test_list_tables_of_missing_schema_is_not_found(subject: Subject) -> None:
    with pytest.raises(NotFound):
        subject.metastore.list_tables(subject.schema)


def test_create_table_in_missing_schema_is_not_found(subject: Subject) -> None:
    with pytest.raises(NotFound):
        subject.metastore.create_table(table(subject))


def test_table_round_trip(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    wanted = table(subject)
    subject.metastore.create_table(wanted)
    found = subject.metastore.get_table(subject.schema, "dm")
    assert found is not None
    assert (found.schema, found.name) == (subject.schema, "dm")
    assert [(c.name, c.type) for c in found.columns] == [(c.name, c.type) for c in wanted.columns]
    assert found.columns[1].comment == "Unique Subject Identifier"
    assert normalize_location(found.location) == wanted.location
    assert dict(found.properties) == dict(wanted.properties)
    assert subject.metastore.list_tables(subject.schema) == ["dm"]


def test_create_table_replaces(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    subject.metastore.create_table(table(subject))
    subject.metastore.create_table(
        table(subject, columns=(Column("usubjid", "varchar"),), properties={"k": "v"})
    )
    found = subject.metastore.get_table(subject.schema, "dm")
    assert found is not None
    assert found.columns == (Column("usubjid", "varchar"),)
    assert dict(found.properties) == {"k": "v"}


def test_missing_table_reads_as_none_and_drops_quietly(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    assert subject.metastore.get_table(subject.schema, "nope") is None
    subject.metastore.drop_table(subject.schema, "nope")
    assert subject.metastore.get_table(subject.schema + "_x", "nope") is None


def test_probe_counts_rows_and_missing_table_is_not_found(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    subject.metastore.create_table(table(subject))
    assert subject.metastore.probe(subject.schema, "dm") == 0  # no files at the location yet
    with pytest.raises(NotFound):
        subject.metastore.probe(subject.schema, "nope")


def test_drop_table_and_schema(subject: Subject) -> None:
    subject.metastore.create_schema(subject.schema)
    subject.metastore.create_table(table(subject))
    subject.metastore.create_table(table(subject, "sv"))
    assert subject.metastore.list_tables(subject.schema) == ["dm", "sv"]
    subject.metastore.drop_table(subject.schema, "dm")
    assert subject.metastore.list_tables(subject.schema) == ["sv"]
    subject.metastore.drop_schema(subject.schema)  # not empty: tables go first
    assert subject.schema not in subject.metastore.list_schemas()
    subject.metastore.drop_schema(subject.schema)  # absent: no error


@pytest.mark.stack
def test_thrift_and_trino_read_each_others_tables(stack_settings: Settings) -> None:  # noqa: F811
    """Either adapter reads what the other wrote: same columns, comments, location, properties."""
    thrift = HiveMetastore.from_settings(stack_settings)
    engine = TrinoMetastore.from_settings(stack_settings)
    suffix = uuid.uuid4().hex[:8]
    subject = Subject(thrift, f"cross_{suffix}", created(f"cross-{suffix}"))
    lakefs_api(
        stack_settings,
        "POST",
        "/repositories",
        {"name": subject.repo, "storage_namespace": f"local://{subject.repo}"}
        | {"default_branch": "main"},
    )
    try:
        thrift.create_schema(subject.schema)
        by_thrift = table(subject, "by_thrift")
        by_trino = table(subject, "by_trino")
        thrift.create_table(by_thrift)
        engine.create_table(by_trino)
        for wanted, reader in ((by_thrift, engine), (by_trino, thrift)):
            found = reader.get_table(subject.schema, wanted.name)
            assert found is not None
            assert found.columns == wanted.columns
            assert normalize_location(found.location) == wanted.location
            assert dict(found.properties) == dict(wanted.properties)
        assert engine.probe(subject.schema, "by_thrift") == 0  # Trino plans a query over it
        assert engine.list_tables(subject.schema) == thrift.list_tables(subject.schema)
    finally:
        thrift.drop_schema(subject.schema)
        lakefs_api(stack_settings, "DELETE", f"/repositories/{subject.repo}")
