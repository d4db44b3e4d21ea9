"""Contract §5 value rules and §6 surrogate keys as Trino SQL: pure text, no I/O.

The Trino engine (``trino_engine``) reads a dataset's CSV as an all-``varchar`` table and turns
each field into its table type with the expressions built here; the pyarrow engine
(``types``/``keys``) is the reference these expressions reproduce. Where SQL cannot reproduce a
rule exactly, the expression does not guess: ``unsupported`` flags the value, and the engine
reports an error naming it instead of writing a table that differs.

Every identifier passes ``identifier`` (allow-list ``^[a-z0-9_]+$``, then double-quoted) and
every literal passes ``literal`` (``U&'...'`` escapes for anything outside printable ASCII), so
no CSV header, table name or path ever reaches SQL unquoted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.metastore import ddl
from pipeline.processing.convert import PlannedColumn
from pipeline.processing.keys import VERSION
from pipeline.processing.types import (
    BIGINT,
    BOOLEAN,
    DATE,
    DECIMAL,
    DOUBLE,
    INTEGER,
    NUMERIC_KINDS,
    PARTIALDATE,
    TEXT,
    TIMESTAMP,
    ColumnType,
)


@functools.cache
def multi_upper() -> str:
    """Characters whose Python upper-case is several (ß -> SS); Trino maps one to one."""
    return "".join(
        chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and len(chr(c).upper()) > 1
    )


# str.isspace() and Arrow's utf8_trim_whitespace agree on this set (checked by a unit test)
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_ASCII_WS = "\t\n\x0c\r "  # RE2's \s, as in the reference's regular expressions
TRUE_WORDS = ("y", "yes", "true", "1", "t")
FALSE_WORDS = ("n", "no", "false", "0", "f")
KEY_INT_DIGITS = 32  # integer digits a key part computes exactly in decimal(38, 0) millionths


def identifier(name: str) -> str:
    """``name`` checked against the allow-list ``[a-z0-9_]+`` and double-quoted.

    Raises:
        UnsafeDefinition: anything else (``pipeline.metastore.ddl``, the one rule).
    """
    return ddl.quoted(name, "SQL name")


def sql_type(ctype: ColumnType) -> str:
    """The Trino type of ``ctype``, re-rendered from the closed set of table types."""
    return ddl.parse_type(ctype.trino).render()


def literal(text: str) -> str:
    """``text`` as a SQL string literal; any character can be expressed, nothing breaks out."""
    if all(" " <= ch <= "~" and ch != "\\" for ch in text):
        return "'" + text.replace("'", "''") + "'"
    out = []
    for ch in text:
        if " " <= ch <= "~" and ch != "\\":
            out.append("''" if ch == "'" else ch)
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\{ord(ch):04X}")
        else:
            out.append(f"\\+{ord(ch):06X}")
    return "U&'" + "".join(out) + "'"


def _class(chars: str) -> str:
    """A regex character class of ``chars`` (none of them special inside a class)."""
    assert not set(chars) & set("\\]^-["), chars
    return "[" + chars + "]"


_WS = _class(WHITESPACE)
_AWS = _class(_ASCII_WS)


def _match(expr: str, pattern: str) -> str:
    return f"regexp_like({expr}, {literal(pattern)})"


def _extract(expr: str, pattern: str, group: int) -> str:
    return f"regexp_extract({expr}, {literal(pattern)}, {group})"


def strip(expr: str) -> str:
    """``str.strip()`` (the same as Arrow's ``utf8_trim_whitespace``)."""
    return f"regexp_replace({expr}, {literal(f'^{_WS}+|{_WS}+$')}, '')"


def _strip_ascii(expr: str) -> str:
    return f"regexp_replace({expr}, {literal(f'^{_AWS}+|{_AWS}+$')}, '')"


# ---- named intermediate values --------------------------------------------------------------
LEVELS = 7  # fields, parsed pieces, typed values, digits, key parts, canonical, keys


class Lets:
    """Named intermediate columns, one SELECT level each: every expression is written once.

    Inlining a parsed piece everywhere it is used makes the statement grow with each use (300
    kB for a dozen columns, minutes of planning); naming it in a level of its own keeps every
    expression small. ``let`` returns the quoted name of the column holding ``expr``.
    """

    def __init__(self) -> None:
        self.levels: list[dict[str, str]] = [{} for _ in range(LEVELS)]
        self._names: dict[tuple[int, str], str] = {}

    def let(self, level: int, expr: str, hint: str = "v") -> str:
        key = (level, expr)
        if key not in self._names:
            name = f"{hint}_{len(self._names)}"
            self.levels[level][name] = expr
            self._names[key] = identifier(name)
        return self._names[key]

    def query(self, source: str) -> str:
        """``WITH l0 AS (...), ... l6 AS (...)`` over ``source`` (the CTEs only)."""
        parts = []
        previous = source
        for number, level in enumerate(self.levels):
            columns = ", ".join(f"{expr} AS {identifier(name)}" for name, expr in level.items())
            # names checked by identifier(), literals escaped by literal(): nothing unquoted
            select = f"SELECT *{', ' + columns if columns else ''} FROM {previous}"  # noqa: S608
            parts.append(f"l{number} AS ({select})")
            previous = f"l{number}"
        return "WITH " + ",\n".join(parts)


# ---- numbers as written -------------------------------------------------------------------
# A plain decimal number: sign, integer digits, fraction digits. The reference's grammar also
# allows an exponent (1.5e2); decimals and numeric key parts written so are "unsupported".
_PLAIN = f"^{_AWS}*([+-]?)([0-9]*)(?:\\.([0-9]*))?{_AWS}*$"
_EXPONENT = f"^{_AWS}*[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)[eE][+-]?[0-9]+{_AWS}*$"


def _plain_parts(lets: Lets, field: str) -> tuple[str, str, str, str]:
    """(is plain, sign, integer digits without leading zeros, fraction without trailing zeros)."""
    is_plain = lets.let(1, f"({_match(field, _PLAIN)} AND {_match(field, '[0-9]')})", "plain")
    sign = lets.let(1, _extract(field, _PLAIN, 1), "sign")
    whole = lets.let(1, f"regexp_replace({_extract(field, _PLAIN, 2)}, '^0+', '')", "whole")
    fraction = lets.let(
        1, f"regexp_replace(coalesce({_extract(field, _PLAIN, 3)}, ''), '0+$', '')", "frac"
    )
    return is_plain, sign, whole, fraction


def numeric_unsupported(lets: Lets, field: str, *, key_part: bool) -> str:
    """A number the reference reads that the SQL below does not: report, never guess."""
    is_plain, _, whole, _ = _plain_parts(lets, field)
    odd = _match(field, _EXPONENT)
    if key_part:
        odd += f" OR ({is_plain} AND length({whole}) > {KEY_INT_DIGITS})"
    return odd


def numeric_key_part(lets: Lets, field: str) -> str:
    """§6 numeric part: quantize to 1e-6 half-even, normalise, format 'f', zero is "0"."""
    is_plain, sign, whole, fraction = _plain_parts(lets, field)
    kept = f"rpad(substr({fraction}, 1, 6), 6, '0')"
    rest = f"substr({fraction}, 7)"
    last_odd = f"(CAST(substr({kept}, -1) AS integer) % 2 = 1)"
    up = (
        f"({rest} <> '' AND (substr({rest}, 1, 1) > '5' OR (substr({rest}, 1, 1) = '5' AND "
        f"(length({rest}) > 1 OR {last_odd}))))"
    )
    micro = lets.let(  # the value in millionths, rounded half-even
        2,
        f"IF({is_plain} AND length({whole}) <= {KEY_INT_DIGITS}, "
        f"CAST(('0' || {whole} || {kept}) AS decimal(38, 0)) + IF({up}, 1, 0))",
        "micro",
    )
    # at least 7 digits (Trino's lpad also truncates: never pad a longer string)
    digits = lets.let(3, f"lpad('', 7, '0') || CAST({micro} AS varchar)", "digits")
    int_part = f"regexp_replace(substr({digits}, 1, length({digits}) - 6), '^0+(?=.)', '')"
    frac_part = f"regexp_replace(substr({digits}, -6), '0+$', '')"
    return (
        f"IF({micro} = 0, '0', IF({sign} = '-', '-', '') || {int_part} || "
        f"IF({frac_part} = '', '', '.' || {frac_part}))"
    )


def decimal_value(lets: Lets, field: str, ctype: ColumnType) -> str:
    """``decimal(p,s)``: at most ``p - s`` integer and ``s`` fraction digits; never rounded."""
    is_plain, sign, whole, fraction = _plain_parts(lets, field)
    fits = (
        f"{is_plain} AND length({whole}) <= {ctype.precision - ctype.scale} AND "
        f"length({fraction}) <= {ctype.scale}"
    )
    text = f"{sign} || '0' || {whole} || '.' || {fraction} || '0'"
    return f"IF({fits}, CAST({text} AS {sql_type(ctype)}))"


# ---- dates and times ----------------------------------------------------------------------
_ISO_DATE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_SAS_DATE = "^[0-9]{2}[A-Za-z]{3}[0-9]{4}$"
_SAS_DATETIME = "^[0-9]{2}[A-Za-z]{3}[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2}$"
_ISO_TS = (
    f"^{_AWS}*([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})(?:[T ]([0-9]{{2}})(?::([0-9]{{2}})"
    f"(?::([0-9]{{2}})(?:\\.([0-9]{{1,9}}))?)?)?(Z|([+-])([0-9]{{2}}):?([0-9]{{2}}))?)?{_AWS}*$"
)


def _stripped(lets: Lets, field: str) -> str:
    return lets.let(1, strip(field), "strip")


def _sas_date(lets: Lets, field: str, trimmed: str) -> str:
    parsed = lets.let(1, f"try(date_parse({strip(field)}, '%d%b%Y'))", "sasd")
    same = f"upper(date_format({parsed}, '%d%b%Y')) = upper({trimmed})"
    return f"IF({_match(trimmed, _SAS_DATE)} AND {same}, CAST({parsed} AS date))"


def _sas_datetime(lets: Lets, field: str, trimmed: str) -> str:
    fmt = "'%d%b%Y:%H:%i:%s'"
    parsed = lets.let(1, f"try(date_parse({strip(field)}, {fmt}))", "sasdt")
    same = f"upper(date_format({parsed}, {fmt})) = upper({trimmed})"
    return f"IF({_match(trimmed, _SAS_DATETIME)} AND {same}, CAST({parsed} AS timestamp(3)))"


def date_value(lets: Lets, field: str, ctype: ColumnType) -> str:
    trimmed = _stripped(lets, field)
    iso = f"IF({_match(trimmed, _ISO_DATE)}, try(CAST({trimmed} AS date)))"
    return f"coalesce({iso}, {_sas_date(lets, field, trimmed)})" if ctype.sas else iso


def timestamp_value(lets: Lets, field: str, ctype: ColumnType) -> str:
    matched = lets.let(1, _match(field, _ISO_TS), "tsok")

    def group(n: int, default: str = "0") -> str:
        return lets.let(
            1, f"try_cast(coalesce({_extract(field, _ISO_TS, n)}, '{default}') AS integer)", "tsg"
        )

    day = lets.let(1, f"try(CAST({_extract(field, _ISO_TS, 1)} AS date))", "tsday")
    hour, minute, second = group(2), group(3), group(4)
    millis = lets.let(
        1,
        f"CAST(rpad(substr(coalesce({_extract(field, _ISO_TS, 5)}, ''), 1, 3), 3, '0') AS integer)",
        "tsms",
    )
    negative = lets.let(1, f"coalesce({_extract(field, _ISO_TS, 7)} = '-', false)", "tsneg")
    zone_h, zone_m = group(8), group(9)
    zone = f"IF({negative}, -1, 1) * ({zone_h} * 60 + {zone_m})"
    total = (
        f"(CAST((({hour} * 60 + {minute}) * 60 + {second}) AS bigint) * 1000 + {millis} "
        f"- CAST({zone} AS bigint) * 60000)"
    )
    valid = (
        f"{matched} AND {day} IS NOT NULL AND {hour} <= 23 AND {minute} <= 59 "
        f"AND {second} <= 59 AND {zone_h} <= 23 AND {zone_m} <= 59"
    )
    iso = f"IF({valid}, date_add('millisecond', {total}, CAST({day} AS timestamp(3))))"
    if not ctype.sas:
        return iso
    trimmed = _stripped(lets, field)
    sas_day = f"CAST({_sas_date(lets, field, trimmed)} AS timestamp(3))"
    return f"coalesce({iso}, {_sas_datetime(lets, field, trimmed)}, {sas_day})"


_DTC = (
    f"^{_AWS}*([0-9]{{4}}|-)(?:-([0-9]{{2}}|-)(?:-([0-9]{{2}}|-)"
    f"(?:T([0-9]{{2}}|-)(?::([0-9]{{2}}|-)(?::([0-9]{{2}})(?:\\.[0-9]+)?)?)?"
    f"(?:[+-][0-9]{{2}}:?[0-9]{{2}}|Z)?)?)?)?{_AWS}*$"
)


def partialdate_value(lets: Lets, field: str) -> str:
    """``partialdate``: SDTM --DTC shapes whose present parts are real; kept as written."""

    def part(n: int) -> str:
        return lets.let(1, f"try_cast(nullif({_extract(field, _DTC, n)}, '-') AS integer)", "dtc")

    matched = lets.let(1, _match(field, _DTC), "dtcok")
    year, month, day, hour, minute, second = (part(n) for n in range(1, 7))
    # days in the month (February of an unknown year may have 29, an unknown month 31)
    leap = f"({year} IS NULL OR ({year} % 4 = 0 AND ({year} % 100 <> 0 OR {year} % 400 = 0)))"
    month_days = (
        f"CASE WHEN {month} IS NULL THEN 31 WHEN {month} = 2 THEN IF({leap}, 29, 28) "
        f"WHEN {month} IN (4, 6, 9, 11) THEN 30 ELSE 31 END"
    )
    valid = (
        f"{matched} AND coalesce({month} BETWEEN 1 AND 12, true) AND "
        f"coalesce({day} BETWEEN 1 AND {month_days}, true) AND "
        f"coalesce({hour} <= 23, true) AND coalesce({minute} <= 59, true) AND "
        f"coalesce({second} <= 59, true)"
    )
    return f"IF({valid}, {field})"


# ---- one column -----------------------------------------------------------------------------
def _typed_expr(lets: Lets, field: str, ctype: ColumnType) -> str:
    kind = ctype.kind
    if kind == TEXT:
        return field
    if kind == PARTIALDATE:
        return partialdate_value(lets, field)
    if kind in (INTEGER, BIGINT):
        pattern = f"^{_AWS}*[+-]?[0-9]+(\\.0*)?{_AWS}*$"
        whole = f"regexp_replace({_strip_ascii(field)}, '\\.0*$', '')"
        wide = f"IF({_match(field, pattern)}, try_cast({whole} AS bigint))"
        if kind == BIGINT:
            return wide
        return f"try_cast({wide} AS integer)"
    if kind == DOUBLE:
        pattern = f"^{_AWS}*[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?{_AWS}*$"
        number = lets.let(
            1, f"IF({_match(field, pattern)}, try_cast({_strip_ascii(field)} AS double))", "dbl"
        )
        return f"IF(is_finite({number}), {number})"
    if kind == DECIMAL:
        return decimal_value(lets, field, ctype)
    if kind == BOOLEAN:
        word = lets.let(1, f"lower({strip(field)})", "word")
        yes = ", ".join(literal(w) for w in TRUE_WORDS)
        no = ", ".join(literal(w) for w in FALSE_WORDS)
        return f"CASE WHEN {word} IN ({yes}) THEN true WHEN {word} IN ({no}) THEN false END"
    if kind == DATE:
        return date_value(lets, field, ctype)
    if kind == TIMESTAMP:
        return timestamp_value(lets, field, ctype)
    raise AssertionError(f"unhandled kind {kind}")  # pragma: no cover


def typed_value(lets: Lets, field: str, ctype: ColumnType) -> str:
    """The column holding the table value of CSV text ``field`` (NULL: empty or invalid)."""
    if ctype.kind == TEXT:
        return field
    return lets.let(2, _typed_expr(lets, field, ctype), "typed")


def unsupported(lets: Lets, field: str, ctype: ColumnType | None, *, key_part: bool) -> str | None:
    """A condition true for values this SQL cannot reproduce exactly (None: none exist)."""
    conditions = []
    if ctype is not None and ctype.kind == DECIMAL:
        conditions.append(numeric_unsupported(lets, field, key_part=key_part))
    elif ctype is not None and key_part and ctype.kind in NUMERIC_KINDS:
        typed = typed_value(lets, field, ctype)
        odd = numeric_unsupported(lets, field, key_part=True)
        conditions.append(f"({typed} IS NOT NULL AND ({odd}))")
    if key_part and (ctype is None or ctype.kind in (TEXT, PARTIALDATE)):  # ß -> SS
        conditions.append(f"regexp_like({field}, {literal(_class(multi_upper()))})")
    if not conditions:
        return None
    return "(" + " OR ".join(f"coalesce({c}, false)" for c in conditions) + ")"


def key_part(lets: Lets, field: str, ctype: ColumnType | None) -> str:
    """The column holding the §6 canonical part of one natural key field (NULL: missing)."""
    text = f"nullif(upper({strip(f'normalize({field}, NFC)')}), '')"
    if ctype is None or ctype.kind == TEXT:
        return lets.let(4, text, "part")
    typed = typed_value(lets, field, ctype)  # one parser: a value the table rejects is missing
    if ctype.kind == PARTIALDATE:
        return lets.let(4, f"IF({typed} IS NOT NULL, {text})", "part")
    if ctype.kind in NUMERIC_KINDS:
        expr = f"IF({typed} IS NOT NULL, {numeric_key_part(lets, field)})"
    elif ctype.kind == DATE:
        expr = f"CAST({typed} AS varchar)"
    elif ctype.kind == TIMESTAMP:
        whole = f"format_datetime({typed}, 'yyyy-MM-dd''T''HH:mm:ss')"
        millis = f"millisecond({typed})"
        expr = f"{whole} || IF({millis} = 0, '', '.' || lpad(CAST({millis} AS varchar), 3, '0'))"
    elif ctype.kind == BOOLEAN:
        expr = f"IF({typed}, 'true', 'false')"
    else:  # pragma: no cover
        raise AssertionError(f"unhandled kind {ctype.kind}")
    return lets.let(4, expr, "part")


def canonical(key: str, parts: Sequence[str]) -> str:
    """``"|".join(f"{len(p)}:{p}" ...)`` over ``["v1", key, *parts]`` in SQL."""
    pieces = [literal(f"{len(VERSION)}:{VERSION}|{len(key)}:{key}")]
    for part in parts:
        pieces.append(f"'|' || CAST(length({part}) AS varchar) || ':' || {part}")
    return " || ".join(pieces)


ESCAPE = "\x01"  # csv_escape: Trino's CSV reader always has one; lines holding it are flagged
# a line whose fields are all well formed: quoted ("" inside) or free of quotes
_WELL_FORMED = '^(?:"(?:[^"]|"")*"|[^",]*)(?:,(?:"(?:[^"]|"")*"|[^",]*))*$'


@dataclass(frozen=True)
class SourceTable:
    """The CSV exposed twice: as all-varchar fields ``c_0001``... plus ``c_extra`` (format CSV)
    and as whole lines (format TEXTFILE), which the checks use to find what the CSV reader
    would read differently from the reference parser."""

    catalog: str
    schema: str
    name: str
    width: int  # columns in the CSV header
    lines_name: str = "lines"

    @property
    def qualified(self) -> str:
        return ".".join(identifier(p) for p in (self.catalog, self.schema, self.name))

    @property
    def lines(self) -> str:
        return ".".join(identifier(p) for p in (self.catalog, self.schema, self.lines_name))

    def column(self, index: int) -> str:
        return f"c_{index + 1:04d}"

    @property
    def extra(self) -> str:
        return "c_extra"

    def create_sql(self, location: str) -> list[str]:
        columns = ", ".join(f"{identifier(self.column(i))} varchar" for i in range(self.width))
        return [
            f"CREATE TABLE {self.qualified} ({columns}, {identifier(self.extra)} varchar) "
            f"WITH (format = 'CSV', skip_header_line_count = 1, csv_separator = ',', "
            f"csv_quote = '\"', csv_escape = {literal(ESCAPE)}, "
            f"external_location = {literal(location)})",
            f"CREATE TABLE {self.lines} (line varchar, rest varchar) WITH (format = 'TEXTFILE', "
            f"skip_header_line_count = 1, external_location = {literal(location)})",
        ]

    def field(self, index: int) -> str:
        """The field as pyarrow reads it: an empty field is NULL."""
        return f"nullif({identifier(self.column(index))}, '')"

    def present(self) -> str:
        """A record (Trino reads a blank line, and a line it cannot parse, as all NULL)."""
        return f"({identifier(self.column(0))} IS NOT NULL)"

    def ragged(self) -> str:
        """A record with fewer or more fields than the header."""
        last = identifier(self.column(self.width - 1))
        return f"({self.present()} AND ({last} IS NULL OR {identifier(self.extra)} IS NOT NULL))"

    def line_checks(self) -> list[tuple[str, str]]:
        """Aggregates over the lines: counts the reference parser must agree with."""
        odd_line = (
            "(rest IS NOT NULL OR from_utf8(to_utf8(line)) <> line OR "
            f"(strpos(line, '\"') > 0 AND NOT regexp_like(line, {literal(_WELL_FORMED)})))"
        )
        return [
            ("lines", "count(*)"),
            ("blank_lines", "count_if(line = '')"),
            ("odd_lines", f"count_if({odd_line})"),
        ]


@dataclass(frozen=True)
class DatasetSql:
    """The two statements of one dataset: the checks (one aggregate row) and the CTAS."""

    checks: str
    check_names: tuple[str, ...]
    create: str


def dataset_sql(
    source: SourceTable,
    columns: Sequence[PlannedColumn],
    target: str,
    location: str,
) -> DatasetSql:
    """The aggregate over the CSV table and the ``CREATE TABLE AS`` writing the Parquet."""
    lets = Lets()
    present = lets.let(0, source.present(), "present")
    fields = [lets.let(0, source.field(i), "f") for i in range(source.width)]
    outputs: dict[int, str] = {}  # output position -> column
    checks: list[tuple[str, str]] = [
        ("rows", f"count_if({present})"),
        ("null_rows", f"count_if(NOT {present})"),
        ("ragged", f"count_if({source.ragged()})"),
    ]
    for position, col in enumerate(columns):
        if col.key is not None:
            continue
        if col.source_index is None:
            outputs[position] = f"CAST(NULL AS {sql_type(col.ctype)})"
            continue
        field = fields[col.source_index]
        typed = typed_value(lets, field, col.ctype)
        outputs[position] = typed
        if col.ctype.kind != TEXT:
            checks.append(
                (f"invalid:{col.out.name}", f"count_if({field} IS NOT NULL AND {typed} IS NULL)")
            )
        odd = unsupported(lets, field, col.ctype, key_part=False)
        if odd is not None:
            checks.append((f"unsupported:{col.out.name}", f"count_if({odd})"))
    for position, col in enumerate(columns):
        if col.key is None:
            continue
        parts = []
        for index, ctype in zip(col.key_indexes, col.key_types, strict=True):
            parts.append(key_part(lets, fields[index], ctype))
            odd = unsupported(lets, fields[index], ctype, key_part=True)
            if odd is not None:
                checks.append((f"unsupported:{col.out.name}", f"count_if({odd})"))
        complete = lets.let(5, " AND ".join(f"{p} IS NOT NULL" for p in parts), "complete")
        text = lets.let(5, canonical(col.key, parts), "canonical")
        digest = lets.let(6, f"IF({complete}, sha256(to_utf8({text})))", "digest")
        key = f"from_big_endian_64(substr({digest}, 1, 8))"  # contract §6
        outputs[position] = key
        checks.append((f"null_keys:{col.key}", f"count_if({present} AND NOT {complete})"))
        # as the pyarrow engine checks: two natural keys with one surrogate key differ in the
        # digest's next 8 bytes (short of a 2^-64 accident), so a collision makes one more
        # distinct check than distinct keys. Two sets of bigints, not one of canonical texts:
        # the texts of a 5 GB lab CSV's 5 M visits outgrew a 1 GB node (measured)
        check = f"from_big_endian_64(substr({digest}, 9, 8))"
        checks.append(
            (
                f"collisions:{col.key}",
                f"greatest(count(DISTINCT {check}) - count(DISTINCT {key}), 0)",
            )
        )
    ctes = lets.query(source.qualified)
    select = ",\n  ".join(
        f"{outputs[i]} AS {identifier(col.out.name)}" for i, col in enumerate(columns)
    )
    create = (
        f"CREATE TABLE {target} WITH (format = 'PARQUET', external_location = "
        f"{literal(location)}) AS\n{ctes}\nSELECT\n  {select}\nFROM l6\nWHERE {present}"
    )
    merged = _merge_checks(checks)
    lines = source.line_checks()
    check_sql = (
        f"{ctes}\nSELECT *\nFROM (SELECT\n  "  # noqa: S608 (checked names, escaped literals)
        + ",\n  ".join(f"{expr} AS {identifier(f'k{i}')}" for i, (_, expr) in enumerate(merged))
        + "\n  FROM l6) CROSS JOIN (SELECT "
        + ", ".join(f"{expr} AS {identifier(f'l{i}')}" for i, (_, expr) in enumerate(lines))
        + f" FROM {source.lines})"
    )
    names_out = tuple(name for name, _ in merged) + tuple(name for name, _ in lines)
    return DatasetSql(check_sql, names_out, create)


def _merge_checks(checks: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One column per check name (unsupported checks of several parts are summed)."""
    merged: dict[str, list[str]] = {}
    for name, expr in checks:
        merged.setdefault(name, []).append(expr)
    return [(name, " + ".join(exprs)) for name, exprs in merged.items()]


def check_counts(names: Sequence[str], row: Sequence[Any]) -> Mapping[str, int]:
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}
