"""An in-memory Hive catalog: schemas of external Parquet table definitions.

Behaves like the real adapter where lakehook depends on it (``tests/contract`` checks that):
creating a table in a missing schema raises ``NotFound``; ``create_table`` replaces; dropping a
missing table or schema is no error; names are lower-cased; dropping never touches data.
``probe`` answers the row count registered for the table's location with ``set_rows``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from lakehook.errors import NotFound, ServiceUnavailable
from pipeline.model import OutputColumn, TableManifest
from pipeline.naming import normalize_location
from pipeline.ports import Column, TableDef


class FakeMetastore:
    """In-memory implementation of ``pipeline.ports.Metastore``."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, TableDef]] = {}
        self.rows: dict[str, int] = {}  # normalized location -> row count for probe
        self.calls: list[tuple[str, ...]] = []
        self.down = False  # True: every call raises ServiceUnavailable
        self._lock = threading.RLock()

    # -- test helpers ----------------------------------------------------------------------
    def set_rows(self, location: str, rows: int) -> None:
        """Make ``probe`` of any table at ``location`` answer ``rows``."""
        self.rows[normalize_location(location)] = rows

    def _call(self, *args: str) -> None:
        if self.down:
            raise ServiceUnavailable("fake metastore is down")
        self.calls.append(args)

    def _schema(self, schema: str) -> dict[str, TableDef]:
        try:
            return self.schemas[schema.lower()]
        except KeyError:
            raise NotFound(f"schema {schema!r} does not exist") from None

    # -- Metastore ----------------------------------------------------------------------------
    def list_schemas(self) -> list[str]:
        with self._lock:
            self._call("list_schemas")
            return sorted(self.schemas)

    def create_schema(
        self, schema: str, location: str | None = None, properties: Mapping[str, str] | None = None
    ) -> None:
        with self._lock:
            self._call("create_schema", schema)
            self.schemas.setdefault(schema.lower(), {})

    def drop_schema(self, schema: str) -> None:
        with self._lock:
            self._call("drop_schema", schema)
            self.schemas.pop(schema.lower(), None)

    def list_tables(self, schema: str) -> list[str]:
        with self._lock:
            self._call("list_tables", schema)
            return sorted(self._schema(schema))

    def get_table(self, schema: str, table: str) -> TableDef | None:
        with self._lock:
            self._call("get_table", schema, table)
            return self.schemas.get(schema.lower(), {}).get(table.lower())

    def create_table(self, table: TableDef) -> None:
        from pipeline.metastore.ddl import UnsafeDefinition, checked

        try:
            checked(table)
        except UnsafeDefinition as err:  # callers must check before a real adapter is reached
            raise AssertionError(f"an unchecked definition reached the metastore: {err}") from err
        with self._lock:
            self._call("create_table", table.schema, table.name)
            tables = self._schema(table.schema)
            tables[table.name.lower()] = replace(
                table,
                schema=table.schema.lower(),
                name=table.name.lower(),
                columns=tuple(
                    Column(c.name.lower(), c.type.lower(), c.comment) for c in table.columns
                ),
                properties=dict(table.properties),
            )

    def drop_table(self, schema: str, table: str) -> None:
        with self._lock:
            self._call("drop_table", schema, table)
            self.schemas.get(schema.lower(), {}).pop(table.lower(), None)

    def probe(self, schema: str, table: str) -> int:
        with self._lock:
            self._call("probe", schema, table)
            found = self._schema(schema).get(table.lower())
            if found is None:
                raise NotFound(f"table {schema}.{table} does not exist")
            return self.rows.get(normalize_location(found.location), 0)

    # -- behind lakehook's back (tests of verify and repair) ---------------------------------
    def alter_column_type(self, schema: str, table: str, column: str, new_type: str) -> None:
        with self._lock:
            current = self._schema(schema)[table]
            columns = tuple(
                Column(c.name, new_type if c.name == column else c.type, c.comment)
                for c in current.columns
            )
            self._schema(schema)[table] = replace(current, columns=columns)


def make_manifest(
    table: str,
    columns: list[tuple[str, str]] | list[OutputColumn],
    *,
    rows: int = 3,
    fingerprint: str = "f" * 64,
    source_commit: str = "c" * 64,
    files: tuple[str, ...] | None = None,
    invalid_values: Mapping[str, int] | None = None,
    null_keys: Mapping[str, int] | None = None,
    keys: Mapping[str, tuple[str, ...]] | None = None,
) -> TableManifest:
    """A ``TableManifest`` for tests: only what sync, verify, drift and the gate look at."""
    cols = tuple(c if isinstance(c, OutputColumn) else OutputColumn(c[0], c[1]) for c in columns)
    return TableManifest(
        table=table,
        dataset=table.upper(),
        source_commit=source_commit,
        raw_path=f"raw/{table.upper()}.csv",
        raw_checksum="r",
        contents_path="raw/contents.csv",
        contents_fingerprint="cf",
        keys_fingerprint="kf",
        processing_version="1",
        fingerprint=fingerprint,
        files=files if files is not None else (f"tables/{table}/part-0.parquet",),
        columns=cols,
        rows=rows,
        invalid_values=dict(invalid_values or {}),
        null_keys=dict(null_keys or {}),
        keys=dict(keys or {}),
    )
