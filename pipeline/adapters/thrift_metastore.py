"""The ``Metastore`` port straight to the Hive Metastore's Thrift API, probes through Trino.

Writes and reads of table definitions skip Trino's SQL planning: one Thrift call per
``create_table``/``get_table`` instead of one HTTP query each (see ``docs/metastore.md`` for
the measured difference). Tables are the same as those the Trino adapter writes: external
Parquet tables (``EXTERNAL=TRUE``, ``ParquetHiveSerDe``), lakehook's properties both as table
parameters and in the comment (``lakehook {json}``, what both adapters read back), so the two
adapters can be mixed. ``probe`` needs the query engine and is delegated to a
``TrinoMetastore``.

Thrift clients are not thread-safe: each thread keeps its own connection.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pymetastore.hive_metastore import ThriftHiveMetastore
from pymetastore.hive_metastore import ttypes as hive
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from lakehook.errors import NotFound, ServiceUnavailable, TerminalError
from lakehook.settings import Settings
from pipeline.adapters.trino_metastore import TrinoMetastore, decode_properties, encode_properties
from pipeline.ports import Column, TableDef

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

_TO_HIVE = {"varchar": "string", "integer": "int", "real": "float", "timestamp(3)": "timestamp"}
_TO_TRINO = {"string": "varchar", "int": "integer", "float": "real", "timestamp": "timestamp(3)"}
_SPACES = re.compile(r"\s+")


def hive_type(trino_type: str) -> str:
    """The Hive type name of a Trino type (``varchar`` -> ``string`` etc.)."""
    name = _SPACES.sub("", trino_type.lower())
    return _TO_HIVE.get(name, name)


def trino_type(hive_type_name: str) -> str:
    """The Trino type name of a Hive type (``string`` -> ``varchar`` etc.)."""
    name = _SPACES.sub("", hive_type_name.lower())
    return _TO_TRINO.get(name, name)


def to_thrift(table: TableDef, owner: str) -> Any:
    """The HMS ``Table`` of an external Parquet table."""
    parameters = {
        **{k: str(v) for k, v in table.properties.items()},
        "EXTERNAL": "TRUE",
        "comment": encode_properties(table.properties),
    }
    storage = hive.StorageDescriptor(
        cols=[
            hive.FieldSchema(c.name, hive_type(c.type), c.comment or None) for c in table.columns
        ],
        location=table.location,
        inputFormat=PARQUET_INPUT,
        outputFormat=PARQUET_OUTPUT,
        compressed=False,
        numBuckets=-1,
        serdeInfo=hive.SerDeInfo(name=table.name, serializationLib=PARQUET_SERDE, parameters={}),
        bucketCols=[],
        sortCols=[],
        parameters={},
        storedAsSubDirectories=False,
    )
    return hive.Table(
        tableName=table.name,
        dbName=table.schema,
        owner=owner,
        createTime=int(time.time()),
        lastAccessTime=0,
        retention=0,
        sd=storage,
        partitionKeys=[],
        parameters=parameters,
        tableType="EXTERNAL_TABLE",
    )


def from_thrift(table: Any) -> TableDef:
    """A ``TableDef`` from an HMS ``Table``."""
    storage = table.sd
    return TableDef(
        schema=table.dbName,
        name=table.tableName,
        location=storage.location or "",
        columns=tuple(
            Column(c.name, trino_type(c.type), c.comment or "") for c in storage.cols or []
        ),
        properties=decode_properties((table.parameters or {}).get("comment")),
    )


class ThriftMetastore:
    """``pipeline.ports.Metastore`` over HMS Thrift, with ``probe`` through Trino."""

    def __init__(
        self,
        host: str,
        port: int,
        engine: TrinoMetastore,
        *,
        owner: str = "lakehook",
        timeout_seconds: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.engine = engine
        self.owner = owner
        self.timeout_ms = timeout_seconds * 1000
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> ThriftMetastore:
        """The adapter for ``settings.hms_uri``, probing through ``settings.trino_url``."""
        host, port = settings.hms_host_port
        return cls(host, port, TrinoMetastore.from_settings(settings), owner=settings.trino_user)

    # -- plumbing ------------------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            socket = TSocket.TSocket(self.host, self.port)
            socket.setTimeout(self.timeout_ms)
            transport = TTransport.TBufferedTransport(socket)
            transport.open()
            client = ThriftHiveMetastore.Client(TBinaryProtocol(transport))
            self._local.client = client
            self._local.transport = transport
        return client

    def _reset(self) -> None:
        transport = getattr(self._local, "transport", None)
        if transport is not None:
            transport.close()
        self._local.client = None
        self._local.transport = None

    @contextmanager
    def _call(self, what: str) -> Iterator[Any]:
        try:
            yield self._client()
        except hive.NoSuchObjectException as err:
            raise NotFound(f"{what}: {err.message}") from err
        except (TTransport.TTransportException, OSError, EOFError) as err:
            self._reset()
            raise ServiceUnavailable(
                f"Hive Metastore at {self.host}:{self.port} did not answer ({what}): {err}"
            ) from err
        except hive.MetaException as err:
            raise TerminalError(f"{what}: {err.message}") from err

    # -- Metastore ----------------------------------------------------------------------------
    def list_schemas(self) -> list[str]:
        with self._call("list schemas") as client:
            return sorted(client.get_all_databases())

    def create_schema(
        self, schema: str, location: str | None = None, properties: Mapping[str, str] | None = None
    ) -> None:
        database = hive.Database(
            name=schema, description="", locationUri=location, parameters=dict(properties or {})
        )
        try:
            with self._call(f"create schema {schema}") as client:
                client.create_database(database)
        except hive.AlreadyExistsException:
            return

    def drop_schema(self, schema: str) -> None:
        try:
            tables = self.list_tables(schema)
        except NotFound:
            return
        for table in tables:
            self.drop_table(schema, table)
        try:
            with self._call(f"drop schema {schema}") as client:
                client.drop_database(schema, False, False)  # deleteData=False, cascade=False
        except NotFound:
            return

    def list_tables(self, schema: str) -> list[str]:
        with self._call(f"list tables of {schema}") as client:
            names = client.get_all_tables(schema)
            if not names:
                client.get_database(schema)  # NoSuchObjectException -> NotFound
            return sorted(names)

    def get_table(self, schema: str, table: str) -> TableDef | None:
        try:
            with self._call(f"get table {schema}.{table}") as client:
                return from_thrift(client.get_table(schema.lower(), table.lower()))
        except NotFound:
            return None

    def create_table(self, table: TableDef) -> None:
        self.drop_table(table.schema, table.name)
        with self._call(f"create table {table.schema}.{table.name}") as client:
            try:
                client.create_table(to_thrift(table, self.owner))
            except hive.InvalidObjectException as err:
                raise NotFound(f"create table {table.schema}.{table.name}: {err.message}") from err

    def drop_table(self, schema: str, table: str) -> None:
        try:
            with self._call(f"drop table {schema}.{table}") as client:
                client.drop_table(schema, table, False)  # deleteData=False: never data
        except NotFound:
            return

    def probe(self, schema: str, table: str) -> int:
        return self.engine.probe(schema, table)
