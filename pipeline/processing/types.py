"""Declared column types (contract §5) and vectorised conversion of CSV text to table types.

A ``ColumnType`` is parsed from the contents file's declaration. ``convert`` is the one parser
per type (contract §5 v1.1): it turns one Arrow string array (the CSV field as written; empty
field = null) into the declared Arrow type and returns how many non-null values did not fit
(they become null). Table values and surrogate key parts (``keys.py``) both go through it, so
they agree on what is valid whatever else is in the batch. Fast paths use Arrow's own casts
(which accept a subset of each type's grammar and are checked for what they let through:
non-finite doubles); a batch that holds anything else takes the slower, value-checking path.
Nothing here raises for a value: numbers of any size or exponent are invalid values.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal

import pyarrow as pa
import pyarrow.compute as pc

TEXT = "text"
PARTIALDATE = "partialdate"
INTEGER = "integer"
BIGINT = "bigint"
DOUBLE = "double"
DECIMAL = "decimal"
BOOLEAN = "boolean"
DATE = "date"
TIMESTAMP = "timestamp"

NUMERIC_KINDS = frozenset({INTEGER, BIGINT, DOUBLE, DECIMAL})

_ALIASES = {
    "string": TEXT,
    "text": TEXT,
    "char": TEXT,
    "varchar": TEXT,
    "integer": INTEGER,
    "int": INTEGER,
    "bigint": BIGINT,
    "long": BIGINT,
    "float": DOUBLE,
    "double": DOUBLE,
    "num": DOUBLE,
    "numeric": DOUBLE,
    "number": DOUBLE,
    "boolean": BOOLEAN,
    "bool": BOOLEAN,
    "date": DATE,
    "datetime": TIMESTAMP,
    "timestamp": TIMESTAMP,
    "partialdate": PARTIALDATE,
    "iso8601": PARTIALDATE,
}
_VARCHAR_N = re.compile(r"^varchar\s*\(\s*\d+\s*\)$")
_DECIMAL = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")

_INT_TEXT = r"^\s*[+-]?\d+(\.0*)?\s*$"
_NUM_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_NUM_RE = re.compile(_NUM_TEXT)
# SDTM --DTC: right-truncated or with missing middle parts ("-"); every part a real value
_MONTH, _DAY = r"(0[1-9]|1[0-2])", r"(0[1-9]|[12]\d|3[01])"
_HOUR, _MINUTE = r"([01]\d|2[0-3])", r"[0-5]\d"
_DTC = (
    rf"^\s*(\d{{4}}|-)(-({_MONTH}|-)(-({_DAY}|-)"
    rf"(T({_HOUR}|-)(:({_MINUTE}|-)(:{_MINUTE}(\.\d+)?)?)?([+-]\d{{2}}:?\d{{2}}|Z)?)?)?)?\s*$"
)
_DTC_NO_SUCH_DAY = r"^\s*(\d{4}|-)-(02-3[01]|(04|06|09|11)-31)"  # never a real day
_DTC_FULL_DATE = r"^\s*\d{4}-\d{2}-\d{2}"  # year, month and day given: the date must exist
_ISO_TS = (
    r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?)?\s*$"
)
_TRUE = ["y", "yes", "true", "1", "t"]
_FALSE = ["n", "no", "false", "0", "f"]
_SAS_DATE = "%d%b%Y"
_SAS_DATETIME = "%d%b%Y:%H:%M:%S"


@dataclass(frozen=True)
class ColumnType:
    """A declared type: its kind, the Trino table type and the Arrow type written."""

    kind: str
    trino: str
    precision: int = 0
    scale: int = 0
    sas: bool = False  # values may appear as SAS prints them (02JUL2014)

    @property
    def arrow(self) -> pa.DataType:
        if self.kind == DECIMAL:
            return pa.decimal128(self.precision, self.scale)
        return _FIXED_ARROW[self.kind]

    @property
    def family(self) -> str:
        """The key-relevant family: text, numeric, temporal or boolean."""
        if self.kind in NUMERIC_KINDS:
            return "numeric"
        if self.kind in (DATE, TIMESTAMP):
            return self.kind
        return "boolean" if self.kind == BOOLEAN else "text"


VARCHAR = ColumnType(TEXT, "varchar")

_FIXED_ARROW: dict[str, pa.DataType] = {
    TEXT: pa.string(),
    PARTIALDATE: pa.string(),
    INTEGER: pa.int32(),
    BIGINT: pa.int64(),
    DOUBLE: pa.float64(),
    BOOLEAN: pa.bool_(),
    DATE: pa.date32(),
    TIMESTAMP: pa.timestamp("ms"),
}


class UnknownType(ValueError):
    """A declared type this contract does not know."""


def parse_declared(declared: str, *, sas: bool = False) -> ColumnType:
    """The ``ColumnType`` of a declaration such as ``integer`` or ``decimal(10,2)``.

    Raises:
        UnknownType: the declaration is not in contract §5's type table.
    """
    text = declared.strip().lower()
    if text in _ALIASES:
        kind = _ALIASES[text]
        trino = {
            TEXT: "varchar",
            PARTIALDATE: "varchar",
            TIMESTAMP: "timestamp(3)",
        }.get(kind, kind)
        return ColumnType(kind, trino, sas=sas)
    if _VARCHAR_N.match(text):
        return VARCHAR
    match = _DECIMAL.match(text)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise UnknownType(f"decimal({precision},{scale}) needs 1 <= p <= 38 and s <= p")
        return ColumnType(DECIMAL, f"decimal({precision},{scale})", precision, scale)
    raise UnknownType(
        f"unknown type {declared!r}; use one of string, integer, bigint, double, "
        "decimal(p,s), boolean, date, timestamp, partialdate"
    )


def _invalid_count(source: pa.Array, result: pa.Array) -> int:
    return int(result.null_count) - int(source.null_count)


def _masked(source: pa.Array, pattern: str) -> pa.Array:
    """``source`` with every value not matching ``pattern`` replaced by null."""
    ok = pc.match_substring_regex(source, pattern)
    return pc.if_else(ok, source, pa.scalar(None, pa.string()))


def convert(source: pa.Array, ctype: ColumnType) -> tuple[pa.Array, int]:
    """Convert CSV text to ``ctype``. Returns the array and the count of invalid values."""
    if isinstance(source, pa.ChunkedArray):
        source = source.combine_chunks()
    kind = ctype.kind
    if kind == TEXT:
        return source, 0
    if kind == PARTIALDATE:
        result = _partial_dates(source)
        return result, _invalid_count(source, result)
    target = ctype.arrow
    if source.type == target and kind in (INTEGER, BIGINT, DOUBLE):
        result = source  # typed by the CSV reader (``convert.reader_typed``)
    else:
        result = _parsed(source, ctype)
    if kind == DOUBLE:  # NaN, Inf and numbers beyond the double range never fit
        result = pc.if_else(pc.is_finite(result), result, pa.scalar(None, pa.float64()))
    return result, _invalid_count(source, result)


def _parsed(source: pa.Array, ctype: ColumnType) -> pa.Array:
    """CSV text as ``ctype``: Arrow's cast for clean data, the checked path otherwise."""
    kind, target = ctype.kind, ctype.arrow
    try:  # fast path: clean data parses with Arrow's own cast
        if kind == BOOLEAN:
            raise pa.ArrowInvalid("booleans take the mapped path")
        if ctype.sas and kind in (DATE, TIMESTAMP):
            raise pa.ArrowInvalid("SAS dates take the checked path")
        if kind == DECIMAL and _unsafe_for_decimal_cast(source, ctype.precision):
            raise pa.ArrowInvalid("values Arrow's decimal cast gets wrong take the checked path")
        if kind in (INTEGER, BIGINT) and _hexadecimal(source):
            raise pa.ArrowInvalid("Arrow's integer cast reads 0x10 as 16: the checked path")
        return pc.cast(source, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _checked(source, ctype)


def _unsafe_for_decimal_cast(source: pa.Array, precision: int) -> bool:
    """Values pyarrow 26's string -> decimal cast mishandles: more than 38 digits wrap around
    silently (39 nines become a negative number) and an exponent like ``1e-999999999``
    crashes the process (segmentation fault). Both go to the checked path instead."""
    longest = pc.max(pc.binary_length(source)).as_py()
    if longest is not None and int(longest) > precision + 2:
        return True
    return bool(pc.any(pc.match_substring(source, "e", ignore_case=True)).as_py())


def _hexadecimal(source: pa.Array) -> bool:
    """Whether a value may be hexadecimal (``0x10``), which pyarrow 26's string -> integer cast
    reads as 16 although the contract's integers are decimal: the same text would otherwise be
    a table value in a clean batch, an invalid value in a batch that takes the checked path,
    and a missing key part always (contract §5 v1.1: one parser, whatever else is in the
    file)."""
    return bool(pc.any(pc.match_substring(source, "x", ignore_case=True)).as_py())


def _partial_dates(source: pa.Array) -> pa.Array:
    """SDTM partial dates: the grammar with real parts; a full date must exist (2014-02-29)."""
    result = _masked(source, _DTC)
    impossible = pc.fill_null(pc.match_substring_regex(result, _DTC_NO_SUCH_DAY), False)
    result = pc.if_else(impossible, pa.scalar(None, pa.string()), result)
    full = pc.fill_null(pc.match_substring_regex(result, _DTC_FULL_DATE), False)
    if pc.any(full).as_py():
        day = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(result), 0, 10)
        exists = pc.is_valid(_strict_date(day, _ISO_DATE))
        result = pc.if_else(pc.or_(pc.invert(full), exists), result, pa.scalar(None, pa.string()))
    return result


def _checked(source: pa.Array, ctype: ColumnType) -> pa.Array:
    kind, target = ctype.kind, ctype.arrow
    if kind in (INTEGER, BIGINT):
        text = _masked(source, _INT_TEXT)
        text = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"\.0*$", "")
        wide = _cast_each(text, pa.int64(), int)
        if kind == INTEGER:
            fits = pc.and_(pc.greater_equal(wide, -(2**31)), pc.less(wide, 2**31))
            wide = pc.if_else(fits, wide, pa.scalar(None, pa.int64()))
        return pc.cast(wide, target)
    if kind == DOUBLE:
        text = pc.utf8_trim_whitespace(_masked(source, _NUM_TEXT))
        return _cast_each(text, target, float)
    if kind == DECIMAL:
        return pa.array([_decimal(v, ctype) for v in source.to_pylist()], type=target)
    if kind == BOOLEAN:
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(source))
        true = pc.is_in(lowered, value_set=pa.array(_TRUE))
        false = pc.is_in(lowered, value_set=pa.array(_FALSE))
        return pc.if_else(true, True, pc.if_else(false, False, pa.scalar(None, pa.bool_())))
    if kind == DATE:
        return _dates(source, ctype)
    if kind == TIMESTAMP:
        return _timestamps(source, ctype)
    raise AssertionError(f"unhandled kind {kind}")  # pragma: no cover


def _cast_each(text: pa.Array, target: pa.DataType, parse: type) -> pa.Array:
    try:
        return pc.cast(text, target)
    except (pa.ArrowInvalid, OverflowError):
        out = []
        for value in text.to_pylist():
            try:
                out.append(None if value is None else parse(value))
            except (ValueError, OverflowError):
                out.append(None)
        try:
            return pa.array(out, type=target)
        except (pa.ArrowInvalid, OverflowError):
            return pa.array(
                [v if v is None or -(2**63) <= v < 2**63 else None for v in out], type=target
            )


def finite_decimal(text: str) -> Decimal | None:
    """``text`` as a finite ``Decimal`` if it is a decimal number (contract §5), else None.

    The grammar is the one of the table's numeric columns (no ``NaN``, ``Infinity``, ``1_000``
    or surrounding text); any size and exponent parse, none raises.
    """
    if not _NUM_RE.match(text):
        return None
    try:
        number = Decimal(text.strip())
    except (ArithmeticError, ValueError):  # an exponent beyond what Decimal can hold
        return None
    return number if number.is_finite() else None


def decimal_fits(number: Decimal, precision: int, scale: int) -> bool:
    """Whether ``number`` is exactly a ``decimal(precision, scale)``: at most ``scale`` digits
    after the point (trailing zeros aside) and at most ``precision - scale`` before it.

    Decided from the digits and exponent alone: no arithmetic, so no size can overflow.
    """
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite numbers only
    text = "".join(map(str, digits)).rstrip("0")
    if not text:  # zero
        return True
    exponent += len(digits) - len(text)
    places = max(0, -exponent)
    whole = max(0, len(text) + exponent)
    return places <= scale and whole <= precision - scale


_WIDE = Context(prec=400, rounding=ROUND_HALF_EVEN)  # wider than any value that fits a type


def _decimal(value: str | None, ctype: ColumnType) -> Decimal | None:
    number = finite_decimal(value) if value is not None else None
    if number is None or not decimal_fits(number, ctype.precision, ctype.scale):
        return None  # never rounded: more places than the scale is an invalid value
    return number.quantize(Decimal(1).scaleb(-ctype.scale), context=_WIDE)


_ISO_DATE = "%Y-%m-%d"


def _strict_date(trimmed: pa.Array, fmt: str) -> pa.Array:
    """Parse with ``fmt``; a value that does not format back identically (2014-02-30) is null."""
    parsed = pc.strptime(trimmed, fmt, "s", error_is_null=True)
    if fmt == _ISO_DATE:  # Arrow's ISO date cast writes exactly what strftime would (every
        # year strptime accepts is 0000-9999, at midnight), 10-20x faster than strftime
        formatted = pc.cast(pc.cast(parsed, pa.date32()), pa.string())
    else:
        formatted = pc.utf8_upper(pc.strftime(parsed, fmt))
    same = pc.equal(formatted, pc.utf8_upper(trimmed))
    return pc.if_else(same, parsed, pa.scalar(None, parsed.type))


def _dates(source: pa.Array, ctype: ColumnType) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(source)
    parsed = _strict_date(trimmed, _ISO_DATE)
    if ctype.sas:
        parsed = pc.coalesce(parsed, _strict_date(trimmed, _SAS_DATE))
    return pc.cast(parsed, pa.date32())


def _timestamps(source: pa.Array, ctype: ColumnType) -> pa.Array:
    text = _masked(source, _ISO_TS)
    values: list[dt.datetime | None] = []
    for value in text.to_pylist():
        values.append(_parse_timestamp(value) if value is not None else None)
    result = pa.array(values, type=pa.timestamp("ms"))
    if ctype.sas:
        trimmed = pc.utf8_trim_whitespace(source)
        sas = pc.coalesce(_strict_date(trimmed, _SAS_DATETIME), _strict_date(trimmed, _SAS_DATE))
        result = pc.coalesce(result, pc.cast(sas, pa.timestamp("ms")))
    return result


def _parse_timestamp(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed
