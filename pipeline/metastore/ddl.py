"""The only parts SQL and metastore definitions are made of: checked names, closed types.

Names, types and locations reach the metastore from files anyone with write access can
commit (contents files, manifests) and from the metastore itself. Nothing of them is ever
pasted into SQL as written:

* identifiers (catalog, schema, table, column) must match ``^[a-z0-9_]+$`` (what lakehook's
  sanitising makes) and are always rendered double-quoted;
* column types are parsed into ``TableType``, a closed set (varchar, integer, bigint, double,
  decimal(p,s) with 1 <= p <= 38 and 0 <= s <= p, boolean, date, timestamp(3)), and rendered
  from that value, never from the text;
* a table location must be ``s3a://<repo>/<ref>/tables/<table>/`` for that very table, and
  string literals are single-quoted with quotes doubled.

Anything else is an ``UnsafeDefinition`` (a ``TerminalError``) raised before an adapter is
called, so the table fails with a clear message and the others proceed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lakehook.errors import TerminalError
from pipeline.ports import Column, TableDef

IDENTIFIER = re.compile(r"[a-z0-9_]+")
MAX_IDENTIFIER = 128
_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_REF = re.compile(r"[^/\s\x00-\x1f\x7f]{1,256}")  # one path element (lakeFS refuses '/')
_DECIMAL = re.compile(r"decimal\((\d{1,2}),(\d{1,2})\)")

VARCHAR = "varchar"
INTEGER = "integer"
BIGINT = "bigint"
DOUBLE = "double"
DECIMAL = "decimal"
BOOLEAN = "boolean"
DATE = "date"
TIMESTAMP = "timestamp(3)"
SIMPLE_KINDS = (VARCHAR, INTEGER, BIGINT, DOUBLE, BOOLEAN, DATE, TIMESTAMP)
ALLOWED = "varchar, integer, bigint, double, decimal(p,s), boolean, date, timestamp(3)"

# the Hive spellings the metastore answers with, read back as the same closed values
_HIVE_ALIASES = {"string": VARCHAR, "int": INTEGER, "timestamp": TIMESTAMP}


class UnsafeDefinition(TerminalError):
    """A name, type or location that must not reach SQL or the metastore."""


@dataclass(frozen=True)
class TableType:
    """One column type of a lakehook table; only ``parse_type`` makes them."""

    kind: str
    precision: int = 0
    scale: int = 0

    def render(self) -> str:
        """The Trino spelling (``decimal(10,2)``, ``timestamp(3)``)."""
        if self.kind == DECIMAL:
            return f"decimal({self.precision},{self.scale})"
        return self.kind

    def hive(self) -> str:
        """The Hive spelling (``string``, ``int``, ``timestamp``; the rest as Trino)."""
        return {VARCHAR: "string", INTEGER: "int", TIMESTAMP: "timestamp"}.get(
            self.kind, self.render()
        )


def parse_type(text: str, where: str = "column type") -> TableType:
    """The ``TableType`` of ``text`` (Trino or Hive spelling, any case and spacing).

    Raises:
        UnsafeDefinition: ``text`` is not one of the eight types, naming what it was.
    """
    spelled = re.sub(r"\s+", "", text).lower() if len(text) <= 64 else text
    spelled = _HIVE_ALIASES.get(spelled, spelled)
    if spelled in SIMPLE_KINDS:
        return TableType(spelled)
    match = _DECIMAL.fullmatch(spelled)
    if match:
        precision, scale = int(match[1]), int(match[2])
        if 1 <= precision <= 38 and 0 <= scale <= precision:
            return TableType(DECIMAL, precision, scale)
    raise UnsafeDefinition(
        f"{where}: {_shown(text)} is not a table type lakehook writes ({ALLOWED})"
    )


def identifier(name: str, what: str = "identifier") -> str:
    """``name`` unchanged when it is a safe identifier.

    Raises:
        UnsafeDefinition: ``name`` has characters outside ``[a-z0-9_]`` or is too long.
    """
    if len(name) > MAX_IDENTIFIER or not IDENTIFIER.fullmatch(name):
        raise UnsafeDefinition(
            f"{what} {_shown(name)} is not a safe name: only a-z, 0-9 and _ "
            f"(at most {MAX_IDENTIFIER} characters) reach the metastore"
        )
    return name


def quoted(name: str, what: str = "identifier") -> str:
    """``name`` checked and double-quoted for SQL."""
    return f'"{identifier(name, what)}"'


def qualified(*names: str) -> str:
    """``"catalog"."schema"."table"``, every part checked."""
    return ".".join(quoted(n) for n in names)


def literal(value: str) -> str:
    """``value`` as a single-quoted SQL string literal.

    Raises:
        UnsafeDefinition: ``value`` holds control characters (newlines included).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UnsafeDefinition(f"{_shown(value)} holds control characters")
    return "'" + value.replace("'", "''") + "'"


def comment_literal(value: str) -> str:
    """A free-text comment (a column label) as a literal: control characters become spaces."""
    return literal("".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in value))


def location(value: str, table: str) -> str:
    """``value`` when it is ``s3a://<repo>/<ref>/tables/<table>/`` for this ``table``.

    The trailing slash may be missing (Hive and Trino print locations without it).

    Raises:
        UnsafeDefinition: any other shape, or a table directory that is not ``table``'s.
    """
    rest = value.removeprefix("s3a://")
    parts = (rest.rstrip("/") + "/").split("/")
    if (
        rest == value
        or len(parts) != 5
        or not _REPOSITORY.fullmatch(parts[0])
        or not _REF.fullmatch(parts[1])
        or parts[1] in (".", "..")
        or parts[2] != "tables"
        or parts[3] != table
        or parts[4] != ""
    ):
        raise UnsafeDefinition(
            f"location {_shown(value)} of table {table} is not s3a://<repository>/<ref>/tables/"
            f"{table}/"
        )
    return value


def checked(table: TableDef) -> TableDef:
    """``table`` with every name checked and every type re-rendered from its closed value.

    Raises:
        UnsafeDefinition: the first thing that must not reach the metastore, naming it.
    """
    identifier(table.schema, "schema")
    identifier(table.name, "table")
    where = f"{table.schema}.{table.name}"
    columns = []
    for column in table.columns:
        identifier(column.name, f"column of {where}")
        ctype = parse_type(column.type, f"{where}.{column.name}")
        columns.append(Column(column.name, ctype.render(), column.comment))
    if len({c.name for c in columns}) != len(columns):
        raise UnsafeDefinition(f"table {where} names a column twice")
    location(table.location, table.name)
    return replace(table, columns=tuple(columns))


def _shown(text: str) -> str:
    """``text`` for an error message: repr'd and cut to 80 characters."""
    return repr(text if len(text) <= 80 else text[:77] + "...")
