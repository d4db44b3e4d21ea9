"""Deterministic surrogate keys (contract §6).

``<key>_sk`` is a pure function of the natural key, computed from the CSV fields as written:

    canonical = "|".join(f"{len(p)}:{p}" for p in ["v1", key_name, *parts])
    key       = first 8 bytes of sha256(canonical), big-endian, signed

``KeyHasher`` computes keys for Arrow batches: canonical parts per distinct column value,
canonical strings assembled by Arrow, each distinct one hashed once, and a check over the
whole run that no two canonical strings share a key.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehook.errors import KeyCollision
from pipeline.processing.types import (
    BOOLEAN,
    DATE,
    NUMERIC_KINDS,
    PARTIALDATE,
    TEXT,
    TIMESTAMP,
    ColumnType,
    convert,
    finite_decimal,
)

VERSION = "v1"
_MICRO = Decimal("1e-6")
_WIDE = Context(prec=400, rounding=ROUND_HALF_EVEN)  # any finite double quantizes exactly


def text_part(value: str) -> str | None:
    """Text, partial dates and undeclared columns: NFC, stripped, upper-cased."""
    part = unicodedata.normalize("NFC", value).strip().upper()
    return part or None


def numeric_part(value: str) -> str | None:
    """A number as written, rounded to 6 decimals (half even), without trailing zeros.

    None for anything that is not a finite decimal number whose rounding fits 400 digits
    (beyond any double); never an exception, whatever the size or exponent.
    """
    number = finite_decimal(value)
    if number is None:
        return None
    try:
        normal = number.quantize(_MICRO, context=_WIDE).normalize(context=_WIDE)
    except ArithmeticError:  # too large to write out: not a number any type accepts
        return None
    if normal.is_zero():
        return "0"
    return format(normal, "f")


def parts_of(values: pa.Array, ctype: ColumnType | None) -> list[str | None]:
    """Canonical parts of CSV ``values`` (string array, null = empty) of one declared type.

    Validity is decided by ``types.convert``, the parser the table uses (contract §5 v1.1): a
    value the table stores as NULL is a missing part here. Date and timestamp parts are the ISO
    text of the parsed value; numeric parts are the text as written, canonicalised.
    """
    texts: list[str | None] = values.to_pylist()
    if ctype is None or ctype.kind == TEXT:
        return [None if v is None else text_part(v) for v in texts]
    typed, _ = convert(values, ctype)
    parsed = typed.to_pylist()
    kind = ctype.kind
    out: list[str | None] = []
    for text, value in zip(texts, parsed, strict=True):
        if text is None or value is None:
            out.append(None)
        elif kind in NUMERIC_KINDS:
            out.append(numeric_part(text))
        elif kind == PARTIALDATE:
            out.append(text_part(text))
        elif kind == BOOLEAN:
            out.append("true" if value else "false")
        elif kind == DATE:
            out.append(value.isoformat())
        elif kind == TIMESTAMP:
            stamp = value.strftime("%Y-%m-%dT%H:%M:%S")
            millis = value.microsecond // 1000
            out.append(f"{stamp}.{millis:03d}" if millis else stamp)
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(f"unhandled kind {kind}")
    return out


def part(value: str | None, ctype: ColumnType | None) -> str | None:
    """The canonical part of one natural key field; None when missing or not valid."""
    if value is None:
        return None
    return parts_of(pa.array([value], pa.string()), ctype)[0]


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


_CODE_LIMIT = 1 << 62  # row codes (mixed-radix dictionary indexes) must fit in an int64
_DIGEST = np.dtype([("key", ">i8"), ("check", ">u8")])  # the first 16 bytes of a sha256


@dataclass(frozen=True)
class EncodedColumn:
    """One natural key column of a batch, dictionary-encoded: each row's index into the
    distinct values, and the canonical part of each distinct value (None: missing/invalid).

    Several keys sharing a column (``STUDYID``, ``USUBJID``) share one encoding per batch.
    """

    indices: pa.Array  # int64, one per row (null where the field is empty)
    parts: list[str | None]
    usable: pa.Array  # bool per row: the row's part exists

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray, ctype: ColumnType | None) -> EncodedColumn:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = pc.dictionary_encode(column)
        parts = parts_of(encoded.dictionary, ctype)
        indices = pc.cast(encoded.indices, pa.int64())
        usable = pc.take(pa.array([p is not None for p in parts], pa.bool_()), indices)
        return cls(indices, parts, usable)


@dataclass
class KeyHasher:
    """Keys of one key over many batches of one run, with the collision check.

    Per batch, each natural key column is dictionary-encoded by Arrow and only its *distinct*
    values are canonicalised in Python (few: subjects, visit numbers). A row's natural key
    becomes one integer code (its dictionary indexes in mixed radix), Arrow finds the distinct
    codes, and only those are turned into canonical strings and hashed (one sha256 each; the
    digests are read by numpy, the check runs on whole dicts). Memory across batches
    is one ``int -> int`` entry per distinct key (the key and the next 8 bytes of its digest):
    two different natural keys with the same surrogate key differ there with certainty short
    of a 2^-64 accident, and the run stops with ``KeyCollision``.
    """

    key: str
    types: tuple[ColumnType | None, ...]
    _seen: dict[int, int] = field(default_factory=dict)
    missing: int = 0

    def compute(self, columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array:
        """The ``<key>_sk`` array for natural key ``columns`` (CSV text, null = empty)."""
        encoded = [EncodedColumn.of(c, t) for c, t in zip(columns, self.types, strict=True)]
        return self.compute_encoded(encoded, columns)

    def compute_encoded(
        self,
        encoded: Sequence[EncodedColumn],
        columns: Sequence[pa.Array | pa.ChunkedArray],
    ) -> pa.Array:
        """``compute`` for columns already encoded (``EncodedColumn.of`` each of ``columns``)."""
        codes: pa.Array | None = None
        valid: pa.Array | None = None
        radix = 1
        for column in encoded:
            valid = column.usable if valid is None else pc.and_(valid, column.usable)
            size = max(len(column.parts), 1)
            radix *= size
            if radix >= _CODE_LIMIT:  # > 2^62 combinations in one batch: row by row
                return self._by_rows(columns)
            indexes = column.indices
            codes = indexes if codes is None else pc.add(pc.multiply(codes, size), indexes)
        if codes is None or valid is None:  # pragma: no cover - a key has at least one column
            raise ValueError(f"key {self.key!r} has no columns")
        codes = pc.if_else(pc.fill_null(valid, False), codes, pa.scalar(None, pa.int64()))
        rows = pc.dictionary_encode(codes)  # the distinct codes and each row's index into them
        distinct = rows.dictionary
        # canonical strings of the distinct keys only: decode each code back into its
        # dictionary indexes (mixed radix) and join the columns' "len:part" pieces
        pieces = []
        rest = distinct
        for column in reversed(encoded):
            size = max(len(column.parts), 1)
            quotient = pc.divide(rest, size)
            index = pc.subtract(rest, pc.multiply(quotient, size))
            texts = pa.array(
                [None if p is None else f"{len(p)}:{p}" for p in column.parts], pa.string()
            )
            pieces.append(pc.take(texts, index))
            rest = quotient
        joined = pc.binary_join_element_wise(canonical(self.key, []), *reversed(pieces), "|")
        values = self._hash_all(pc.cast(joined, pa.binary()).to_pylist())
        keys = pc.take(values, rows.indices)
        self.missing += int(keys.null_count)
        return keys

    def _by_rows(self, columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array:
        per_column = [parts_of(c, t) for c, t in zip(columns, self.types, strict=True)]
        values: list[int | None] = []
        for parts in zip(*per_column, strict=True):
            if any(p is None for p in parts):
                values.append(None)
            else:
                values.append(self._hash(canonical(self.key, [p for p in parts if p is not None])))
        keys = pa.array(values, pa.int64())
        self.missing += int(keys.null_count)
        return keys

    def _hash_all(self, texts: list[bytes]) -> pa.Array:
        """The keys of canonical ``texts`` (UTF-8), checked against every key of the run."""
        sha256 = hashlib.sha256
        digests = np.frombuffer(b"".join([sha256(t).digest()[:16] for t in texts]), _DIGEST)
        values: list[int] = digests["key"].tolist()
        checks: list[int] = digests["check"].tolist()
        batch = dict(zip(values, checks, strict=True))
        if len(batch) < len(values):  # the same key twice: the same text, or a collision
            for text in texts:
                self._hash(text.decode("utf-8"))
        else:
            seen = self._seen
            for value in batch.keys() & seen.keys():
                if seen[value] != batch[value]:
                    self._collision(texts[values.index(value)].decode("utf-8"), value)
            seen.update(batch)
        return pa.array(digests["key"].astype(np.int64), pa.int64())

    def _hash(self, text: str) -> int:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        value = int.from_bytes(digest[:8], "big", signed=True)
        check = int.from_bytes(digest[8:16], "big")
        earlier = self._seen.setdefault(value, check)
        if earlier != check:
            self._collision(text, value)
        return value

    def _collision(self, text: str, value: int) -> NoReturn:
        raise KeyCollision(
            f"key {self.key!r}: natural key {text!r} shares surrogate key {value} with "
            "another natural key of this run"
        )
