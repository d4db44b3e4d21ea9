"""Deterministic surrogate keys (contract §6).

``<key>_sk`` is a pure function of the natural key, computed from the CSV fields as written:

    canonical = "|".join(f"{len(p)}:{p}" for p in ["v1", key_name, *parts])
    key       = first 8 bytes of sha256(canonical), big-endian, signed

``KeyHasher`` computes keys for Arrow batches. It hashes each *distinct* natural key once
(Arrow finds the distinct values and maps them back), remembers them for the whole run, and
checks that no two canonical strings share a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import pyarrow as pa
import pyarrow.compute as pc

from lakehook.errors import KeyCollision
from pipeline.processing.types import (
    BOOLEAN,
    DATE,
    NUMERIC_KINDS,
    TIMESTAMP,
    ColumnType,
)

VERSION = "v1"
_MICRO = Decimal("1e-6")
_SEPARATOR = "\x1f"
_TRUE = {"y", "yes", "true", "1", "t"}
_FALSE = {"n", "no", "false", "0", "f"}


def text_part(value: str) -> str | None:
    """Text, partial dates and undeclared columns: NFC, stripped, upper-cased."""
    part = unicodedata.normalize("NFC", value).strip().upper()
    return part or None


def numeric_part(value: str) -> str | None:
    """A number as written, rounded to 6 decimals (half even), without trailing zeros."""
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    normal = number.quantize(_MICRO, rounding=ROUND_HALF_EVEN).normalize()
    if normal.is_zero():
        return "0"
    return format(normal, "f")


def date_part(value: str) -> str | None:
    from pipeline.processing.types import _parse_timestamp

    text = value.strip()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return dt.datetime.strptime(text.title(), "%d%b%Y").date().isoformat()
    except ValueError:
        parsed = _parse_timestamp(text)
        return parsed.date().isoformat() if parsed else None


def timestamp_part(value: str) -> str | None:
    from pipeline.processing.types import _parse_timestamp

    parsed = _parse_timestamp(value)
    if parsed is None:
        for fmt in ("%d%b%Y:%H:%M:%S", "%d%b%Y"):
            try:
                parsed = dt.datetime.strptime(value.strip().title(), fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    text = parsed.strftime("%Y-%m-%dT%H:%M:%S")
    millis = parsed.microsecond // 1000
    return f"{text}.{millis:03d}" if millis else text


def boolean_part(value: str) -> str | None:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return "true"
    if lowered in _FALSE:
        return "false"
    return None


def part(value: str | None, ctype: ColumnType | None) -> str | None:
    """The canonical part of one natural key field; None when missing or unreadable."""
    if value is None:
        return None
    if ctype is None:
        return text_part(value)
    if ctype.kind in NUMERIC_KINDS:
        return numeric_part(value)
    if ctype.kind == DATE:
        return date_part(value)
    if ctype.kind == TIMESTAMP:
        return timestamp_part(value)
    if ctype.kind == BOOLEAN:
        return boolean_part(value)
    return text_part(value)


def canonical(key: str, parts: Sequence[str]) -> str:
    return "|".join(f"{len(p)}:{p}" for p in [VERSION, key, *parts])


def key_of(canonical_text: str) -> int:
    digest = hashlib.sha256(canonical_text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def surrogate_key(
    key: str, values: Sequence[str | None], types: Sequence[ColumnType | None]
) -> int | None:
    """The key of one natural key (fields as written), or None if a part is missing."""
    parts = [part(v, t) for v, t in zip(values, types, strict=True)]
    if any(p is None for p in parts):
        return None
    return key_of(canonical(key, [p for p in parts if p is not None]))


@dataclass
class KeyHasher:
    """Keys of one key over many batches of one run, with the collision check."""

    key: str
    types: tuple[ColumnType | None, ...]
    _memo: dict[str, int | None] = field(default_factory=dict)
    _seen: dict[int, str] = field(default_factory=dict)
    missing: int = 0

    def compute(self, columns: Sequence[pa.Array]) -> pa.Array:
        """The ``<key>_sk`` array for natural key ``columns`` (CSV text, null = empty)."""
        columns = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
        if len(columns) == 1:
            joined = columns[0]
        elif any(pc.any(pc.match_substring_regex(c, "[\x00\x1f]")).as_py() for c in columns):
            return self._exact(columns)  # a field holds the separator: rare, row by row
        else:
            joined = pc.binary_join_element_wise(
                *columns, _SEPARATOR, null_handling="replace", null_replacement="\x00"
            )
        distinct = pc.unique(joined)
        values: list[int | None] = []
        for text in distinct.to_pylist():
            if text in self._memo:
                values.append(self._memo[text])
                continue
            value = self._hash(text)
            self._memo[text] = value
            values.append(value)
        keys = pc.take(pa.array(values, type=pa.int64()), pc.index_in(joined, value_set=distinct))
        self.missing += int(keys.null_count)
        return keys

    def _hash(self, text: str | None) -> int | None:
        if text is None:
            return None
        fields: list[str | None] = (
            [text]
            if len(self.types) == 1
            else [None if f == "\x00" else f for f in text.split(_SEPARATOR)]
        )
        return self._hash_fields(fields)

    def _exact(self, columns: Sequence[pa.Array]) -> pa.Array:
        rows = zip(*(c.to_pylist() for c in columns), strict=True)
        keys = pa.array([self._hash_fields(list(r)) for r in rows], type=pa.int64())
        self.missing += int(keys.null_count)
        return keys

    def _hash_fields(self, fields: Sequence[str | None]) -> int | None:
        parts = [part(v, t) for v, t in zip(fields, self.types, strict=True)]
        if any(p is None for p in parts):
            return None
        text_key = canonical(self.key, [p for p in parts if p is not None])
        value = key_of(text_key)
        earlier = self._seen.setdefault(value, text_key)
        if earlier != text_key:
            raise KeyCollision(
                f"key {self.key!r}: {earlier!r} and {text_key!r} share surrogate key {value}"
            )
        return value
