"""The ``Metastore`` port over the Hive Metastore's Thrift API (HMS 4.x), queries through Trino.

Why Thrift beside Trino DDL: every Trino ``CREATE TABLE`` is a planned, dispatched query that
checks the location through the S3 gateway — about 0.3 s each here — while a Thrift
``create_table`` is one metastore call (tens of milliseconds). Copying 30 tables for a new
branch drops from seconds to well under one (``bench/bench_branch_create.py``). Trino reads
the metastore without a cache (``hive.metastore-cache-ttl=0s``), so a table created here is
queryable through Trino at once; ``probe`` runs its query through Trino.

HMS 4 removed the old ``get_table`` call (``Invalid method name: 'get_table'``); this adapter
only uses calls HMS 4 answers: ``get_table_req``, ``get_all_tables``, ``get_database``,
``create_database``, ``create_table``, ``drop_table``, ``drop_database``. The generated
bindings come from ``pymetastore``; its higher-level client is not used because it calls
``get_table``.

Tables are written exactly as Trino's Hive connector writes an external Parquet table
(``EXTERNAL_TABLE``, ``EXTERNAL=TRUE``, Parquet serde and formats), with lakehook's properties
in the table comment (``lakehook {json}``, the same encoding as ``trino_metastore``), so either
adapter reads what the other wrote.

Vendor errors become ``lakehook.errors`` here: ``NoSuchObjectException`` is ``NotFound``, a
dropped connection or timeout is ``ServiceUnavailable``, anything else ``TerminalError``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from pymetastore.hive_metastore import ThriftHiveMetastore
from pymetastore.hive_metastore import ttypes as hms
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TException
from thrift.transport import TSocket, TTransport

from lakehook.errors import NotFound, ServiceUnavailable, TerminalError
from lakehook.settings import Settings
from pipeline.adapters.trino_metastore import TrinoMetastore, decode_properties, encode_properties
from pipeline.metastore import ddl
from pipeline.ports import Column, TableDef

T = TypeVar("T")

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

# Trino type name <-> Hive type name, for the types lakehook writes (contract §5).
_TO_HIVE = {
    "varchar": "string",
    "integer": "int",
    "timestamp(3)": "timestamp",
    "real": "float",
}
_FROM_HIVE = {hive: trino for trino, hive in _TO_HIVE.items()}


def hive_type(trino_type: str) -> str:
    """The Hive spelling of a Trino type (``varchar`` -> ``string``, ``integer`` -> ``int``)."""
    spelled = re.sub(r"\s+", "", trino_type.lower())
    return _TO_HIVE.get(spelled, spelled)


def trino_type(hive: str) -> str:
    """The Trino spelling of a Hive type, as Trino's ``SHOW CREATE TABLE`` would print it."""
    spelled = re.sub(r"\s+", "", hive.lower())
    return _FROM_HIVE.get(spelled, spelled)


def table_to_thrift(table: TableDef, owner: str) -> Any:
    """The Thrift ``Table`` of an external Parquet table, as Trino's Hive connector writes it.

    Names, types and location go through ``pipeline.metastore.ddl`` first: the metastore
    stores type strings as given, and Trino would parse whatever it found there.

    Raises:
        UnsafeDefinition: a name, type or location outside those rules.
    """
    table = ddl.checked(table)
    columns = [
        hms.FieldSchema(c.name, ddl.parse_type(c.type).hive(), c.comment or None)
        for c in table.columns
    ]
    storage = hms.StorageDescriptor(
        cols=columns,
        location=table.location,
        inputFormat=PARQUET_INPUT,
        outputFormat=PARQUET_OUTPUT,
        compressed=False,
        numBuckets=0,
        serdeInfo=hms.SerDeInfo(name=table.name, serializationLib=PARQUET_SERDE, parameters={}),
        bucketCols=[],
        sortCols=[],
        parameters={},
    )
    return hms.Table(
        tableName=table.name,
        dbName=table.schema,
        owner=owner,
        sd=storage,
        partitionKeys=[],
        parameters={
            **table.properties,  # also as TBLPROPERTIES, for other HMS clients
            "EXTERNAL": "TRUE",
            "comment": encode_properties(table.properties),
        },
        tableType="EXTERNAL_TABLE",
    )


def table_from_thrift(table: Any) -> TableDef:
    """A ``TableDef`` from a Thrift ``Table`` (columns in Trino spelling)."""
    storage = table.sd
    return TableDef(
        schema=str(table.dbName).lower(),
        name=str(table.tableName).lower(),
        location=str(storage.location or ""),
        columns=tuple(
            Column(str(c.name), trino_type(str(c.type)), str(c.comment or ""))
            for c in storage.cols or ()
        ),
        properties=decode_properties((table.parameters or {}).get("comment")),
    )


class HiveMetastore:
    """``pipeline.ports.Metastore`` over HMS Thrift; thread-safe (one connection per thread)."""

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
        self.timeout_ms = int(timeout_seconds * 1000)
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> HiveMetastore:
        """The adapter for ``settings.hms_uri``, probing through ``settings.trino_url``."""
        host, port = settings.hms_host_port
        engine = TrinoMetastore.from_settings(settings)
        return cls(host, port, engine, owner=settings.trino_user)

    # -- plumbing ------------------------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            socket = TSocket.TSocket(self.host, self.port)
            socket.setTimeout(self.timeout_ms)
            transport = TTransport.TBufferedTransport(socket)
            transport.open()
            client = ThriftHiveMetastore.Client(TBinaryProtocol.TBinaryProtocol(transport))
            self._local.client = client
            self._local.transport = transport
        return client

    def _reset(self) -> None:
        transport = getattr(self._local, "transport", None)
        self._local.client = None
        self._local.transport = None
        if transport is not None:
            with contextlib.suppress(TException, OSError):  # closing a broken socket
                transport.close()

    def call(self, what: str, func: Callable[[Any], T]) -> T:
        """Run ``func(client)``; vendor errors translated, a broken connection reset."""
        with self._translated(what):
            return func(self._client())

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except hms.NoSuchObjectException as err:
            raise NotFound(f"Hive Metastore {what}: {err.message}") from err
        except (TTransport.TTransportException, OSError, EOFError) as err:
            self._reset()
            raise ServiceUnavailable(
                f"Hive Metastore at {self.host}:{self.port} did not answer {what}: {err}"
            ) from err
        except hms.AlreadyExistsException as err:
            raise TerminalError(f"Hive Metastore {what}: {err.message}") from err
        except (hms.MetaException, hms.InvalidObjectException) as err:
            message = str(getattr(err, "message", err))
            if "does not exist" in message or "not found" in message.lower():
                raise NotFound(f"Hive Metastore {what}: {message}") from err
            if isinstance(err, hms.MetaException):  # the metastore's own failure (its database,
                # its filesystem): a service failure, retried with backoff
                raise ServiceUnavailable(f"Hive Metastore {what}: {message}") from err
            raise TerminalError(f"Hive Metastore {what}: {message}") from err
        except TException as err:
            self._reset()  # a protocol error leaves the connection in an unknown state
            raise ServiceUnavailable(f"Hive Metastore {what}: {type(err).__name__}: {err}") from err

    # -- Metastore ----------------------------------------------------------------------------
    def list_schemas(self) -> list[str]:
        names = self.call("get_all_databases", lambda c: c.get_all_databases())
        return sorted(str(n) for n in names if n != "information_schema")

    def create_schema(
        self, schema: str, location: str | None = None, properties: Mapping[str, str] | None = None
    ) -> None:
        ddl.identifier(schema, "schema")
        database = hms.Database(
            name=schema,
            description=None,
            locationUri=location,
            parameters=dict(properties or {}),
            ownerName=self.owner,
            ownerType=hms.PrincipalType.USER,
        )
        try:
            self.call(f"create_database {schema}", lambda c: c.create_database(database))
        except TerminalError as err:
            if not isinstance(err.__cause__, hms.AlreadyExistsException):
                raise

    def drop_schema(self, schema: str) -> None:
        ddl.identifier(schema, "schema")
        try:  # external tables: deleteData never touches the files
            self.call(
                f"drop_database {schema}",
                lambda c: c.drop_database(schema, deleteData=False, cascade=True),
            )
        except NotFound:
            return

    def list_tables(self, schema: str) -> list[str]:
        names = self.call(f"get_all_tables {schema}", lambda c: c.get_all_tables(schema))
        if not names:  # HMS answers [] for a missing database: tell the two apart
            self.call(f"get_database {schema}", lambda c: c.get_database(schema))
        return sorted(str(n).lower() for n in names)

    def get_table(self, schema: str, table: str) -> TableDef | None:
        request = hms.GetTableRequest(dbName=schema, tblName=table)
        try:
            found = self.call(f"get_table_req {schema}.{table}", lambda c: c.get_table_req(request))
        except NotFound:
            return None
        return table_from_thrift(found.table)

    def create_table(self, table: TableDef) -> None:
        thrift_table = table_to_thrift(table, self.owner)  # checked before anything is dropped
        self.drop_table(table.schema, table.name)
        try:
            self.call(
                f"create_table {table.schema}.{table.name}",
                lambda c: c.create_table(thrift_table),
            )
        except TerminalError as err:
            if isinstance(err.__cause__, hms.InvalidObjectException):
                # HMS says "... database ... does not exist" as InvalidObjectException
                raise NotFound(str(err)) from err
            raise

    def drop_table(self, schema: str, table: str) -> None:
        ddl.identifier(schema, "schema")
        ddl.identifier(table, "table")
        try:
            self.call(
                f"drop_table {schema}.{table}",
                lambda c: c.drop_table(schema, table, deleteData=False),
            )
        except NotFound:
            return

    def probe(self, schema: str, table: str) -> int:
        return self.engine.probe(schema, table)
