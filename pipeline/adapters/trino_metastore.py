"""The ``Metastore`` port through Trino's Hive connector (DDL over HTTP, HMS behind it).

Every table is an external Parquet table (``external_location``), so dropping it or its schema
never deletes data. lakehook's table properties (source commit, manifest fingerprint) travel in
the table comment as ``lakehook {json}``: Trino's Hive connector shows the comment in
``SHOW CREATE TABLE``, so one query reads a whole definition (columns, location, properties).

Every statement is built from ``pipeline.metastore.ddl`` parts only: identifiers checked
against ``^[a-z0-9_]+$`` and double-quoted, types re-rendered from their closed value, literals
escaped, the location checked to be the table's own directory. An unsafe definition is an
``UnsafeDefinition`` before any SQL is sent.

Vendor errors become ``lakehook.errors`` here and nowhere else: connection failures, HTTP 5xx,
``HIVE_METASTORE_ERROR`` and ``SERVER_STARTING_UP`` are ``ServiceUnavailable``; a missing
schema or table is ``NotFound``; anything else is ``TerminalError`` naming the Trino error.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import trino.dbapi
import trino.exceptions

from lakehook.errors import NotFound, ServiceUnavailable, TerminalError
from lakehook.settings import Settings
from pipeline.metastore import ddl
from pipeline.ports import Column, TableDef

COMMENT_PREFIX = "lakehook "
_UNAVAILABLE_NAMES = frozenset(
    {
        "HIVE_METASTORE_ERROR",
        "SERVER_STARTING_UP",
        "SERVER_SHUTTING_DOWN",
        "NO_NODES_AVAILABLE",
        "ABANDONED_QUERY",
        "PAGE_TRANSPORT_TIMEOUT",
    }
)
_NOT_FOUND_NAMES = frozenset(
    {"SCHEMA_NOT_FOUND", "TABLE_NOT_FOUND", "CATALOG_NOT_FOUND", "NOT_FOUND"}
)
_ALREADY_EXISTS_NAMES = frozenset({"SCHEMA_ALREADY_EXISTS", "ALREADY_EXISTS"})
_SYSTEM_SCHEMAS = frozenset({"information_schema"})

_COLUMN_LINE = re.compile(
    r"""^\s+("(?:[^"]|"")+"|\S+)\s+(.+?)(?:\s+COMMENT\s+'((?:[^']|'')*)')?,?$"""
)
_TABLE_COMMENT = re.compile(r"""^COMMENT\s+'((?:[^']|'')*)'$""", re.MULTILINE)
_LOCATION = re.compile(r"""external_location\s*=\s*'((?:[^']|'')*)'""")


def quote_identifier(name: str) -> str:
    """``name`` checked (``[a-z0-9_]+``) and double-quoted; ``UnsafeDefinition`` otherwise."""
    return ddl.quoted(name)


def quote_literal(value: str) -> str:
    """``value`` as a single-quoted SQL string literal (control characters become spaces)."""
    return ddl.comment_literal(value)


def encode_properties(properties: Mapping[str, str]) -> str:
    """The table comment carrying ``properties``."""
    return COMMENT_PREFIX + json.dumps(dict(sorted(properties.items())), separators=(",", ":"))


def decode_properties(comment: str | None) -> dict[str, str]:
    """Properties from a table comment written by ``encode_properties`` (else empty)."""
    if not comment or not comment.startswith(COMMENT_PREFIX):
        return {}
    try:
        data = json.loads(comment[len(COMMENT_PREFIX) :])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def create_table_sql(catalog: str, table: TableDef) -> str:
    """``CREATE TABLE`` of an external Parquet table with its properties in the comment.

    Raises:
        UnsafeDefinition: a name, type or location outside ``pipeline.metastore.ddl``'s rules.
    """
    table = ddl.checked(table)  # types below are rendered from their closed values
    columns = ",\n".join(
        f"   {ddl.quoted(c.name)} {ddl.parse_type(c.type).render()}"
        + (f" COMMENT {ddl.comment_literal(c.comment)}" if c.comment else "")
        for c in table.columns
    )
    return (
        f"CREATE TABLE {ddl.qualified(catalog, table.schema, table.name)} (\n{columns}\n)\n"
        f"COMMENT {ddl.literal(encode_properties(table.properties))}\n"
        f"WITH (external_location = {ddl.literal(table.location)}, format = 'PARQUET')"
    )


def parse_show_create_table(schema: str, name: str, text: str) -> TableDef:
    """A ``TableDef`` from the text of ``SHOW CREATE TABLE``."""
    lines = text.splitlines()
    columns = []
    for line in lines[1:]:
        if line.startswith(")"):
            break
        match = _COLUMN_LINE.match(line)
        if match:
            column, column_type, comment = match.groups()
            if column.startswith('"'):
                column = column[1:-1].replace('""', '"')
            # Trino prints decimal(8, 2); lakehook writes decimal(8,2): one spelling
            column_type = re.sub(r"\s*,\s*", ",", column_type.strip())
            columns.append(Column(column, column_type, (comment or "").replace("''", "'")))
    comment = _TABLE_COMMENT.search(text)
    location = _LOCATION.search(text)
    return TableDef(
        schema=schema,
        name=name,
        location=location[1].replace("''", "'") if location else "",
        columns=tuple(columns),
        properties=decode_properties(comment[1].replace("''", "'") if comment else None),
    )


def _qualified(catalog: str, schema: str, table: str | None = None) -> str:
    """``"catalog"."schema"["table"]``, each part checked (``UnsafeDefinition`` otherwise)."""
    parts = [catalog, schema] + ([table] if table is not None else [])
    return ddl.qualified(*parts)


class TrinoMetastore:
    """``pipeline.ports.Metastore`` through Trino DDL; thread-safe (one connection per thread)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        user: str = "lakehook",
        catalog: str = "hive",
        *,
        http_scheme: str = "http",
        request_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.catalog = catalog
        self.http_scheme = http_scheme
        self.request_timeout = request_timeout
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> TrinoMetastore:
        """The adapter for ``settings.trino_url`` / ``trino_user`` / ``trino_catalog``."""
        host, port = settings.trino_host_port
        scheme = "https" if settings.trino_url.startswith("https") else "http"
        return cls(host, port, settings.trino_user, settings.trino_catalog, http_scheme=scheme)

    # -- plumbing ------------------------------------------------------------------------------
    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = trino.dbapi.connect(  # type: ignore[no-untyped-call]
                host=self.host,
                port=self.port,
                user=self.user,
                catalog=self.catalog,
                http_scheme=self.http_scheme,
                request_timeout=self.request_timeout,
                max_attempts=3,
                source="lakehook",
            )
            self._local.connection = connection
        return connection

    def query(self, sql: str) -> list[list[Any]]:
        """Run one statement and return its rows (errors translated)."""
        with _translated(sql):
            cursor = self._connection().cursor()
            try:
                cursor.execute(sql)
                return [list(row) for row in cursor.fetchall()]
            finally:
                cursor.close()

    # -- Metastore ----------------------------------------------------------------------------
    def list_schemas(self) -> list[str]:
        rows = self.query(f"SHOW SCHEMAS FROM {quote_identifier(self.catalog)}")
        return sorted(str(r[0]) for r in rows if r[0] not in _SYSTEM_SCHEMAS)

    def create_schema(
        self,
        schema: str,
        location: str | None = None,
        properties: Mapping[str, str] | None = None,  # noqa: ARG002 (Trino cannot set them)
    ) -> None:
        sql = f"CREATE SCHEMA IF NOT EXISTS {_qualified(self.catalog, schema)}"
        if location:
            sql += f" WITH (location = {ddl.literal(location)})"
        try:
            self.query(sql)
        except TerminalError as err:  # created meanwhile by another statement: the goal holds
            if _error_name(err) not in _ALREADY_EXISTS_NAMES:
                raise

    def drop_schema(self, schema: str) -> None:
        try:
            tables = self.list_tables(schema)
        except NotFound:
            return
        for table in tables:  # DROP SCHEMA refuses a non-empty schema; external: no data lost
            self.drop_table(schema, table)
        # IF EXISTS is checked before the metastore call: a schema dropped in between (another
        # replica, or the client's own retry of a statement whose answer it lost) is NOT_FOUND
        with suppress(NotFound):
            self.query(f"DROP SCHEMA IF EXISTS {_qualified(self.catalog, schema)}")

    def list_tables(self, schema: str) -> list[str]:
        rows = self.query(f"SHOW TABLES FROM {_qualified(self.catalog, schema)}")
        return sorted(str(r[0]) for r in rows)

    def get_table(self, schema: str, table: str) -> TableDef | None:
        try:
            rows = self.query(f"SHOW CREATE TABLE {_qualified(self.catalog, schema, table)}")
        except NotFound:
            return None
        return parse_show_create_table(schema.lower(), table.lower(), str(rows[0][0]))

    def create_table(self, table: TableDef) -> None:
        sql = create_table_sql(self.catalog, table)  # checked before anything is dropped
        self.drop_table(table.schema, table.name)
        self.query(sql)

    def drop_table(self, schema: str, table: str) -> None:
        try:
            self.query(f"DROP TABLE IF EXISTS {_qualified(self.catalog, schema, table)}")
        except NotFound:
            return

    def probe(self, schema: str, table: str) -> int:
        # only checked, double-quoted identifiers (ddl.qualified) are interpolated
        sql = f"SELECT count(*) FROM {_qualified(self.catalog, schema, table)}"  # noqa: S608
        rows = self.query(sql)
        return int(rows[0][0])


def _error_name(err: BaseException) -> str:
    cause = err.__cause__
    return (cause.error_name or "") if isinstance(cause, trino.exceptions.TrinoQueryError) else ""


@contextmanager
def _translated(sql: str) -> Iterator[None]:
    statement = " ".join(sql.split())[:160]
    try:
        yield
    except trino.exceptions.TrinoQueryError as err:
        name = err.error_name or ""
        text = f"{name}: {err.message} (query {err.query_id}: {statement})"
        if name in _NOT_FOUND_NAMES:
            raise NotFound(text) from err
        if name in _UNAVAILABLE_NAMES or err.error_type != "USER_ERROR":
            raise ServiceUnavailable(text) from err  # Trino's or a connector's failure
        raise TerminalError(text) from err
    except (trino.exceptions.HttpError, trino.exceptions.TrinoConnectionError, OSError) as err:
        raise ServiceUnavailable(f"Trino did not answer: {err} ({statement})") from err
    except Exception as err:
        if type(err).__module__.startswith(("requests", "urllib3")):
            raise ServiceUnavailable(f"Trino did not answer: {err} ({statement})") from err
        raise
