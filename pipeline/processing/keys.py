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
# a sha256 digest read by numpy: the key (first 8 bytes) and the check (next 8)
_DIGEST = np.dtype(
    {"names": ["key", "check"], "formats": [">i8", ">u8"], "offsets": [0, 8], "itemsize": 32}
)


def digests(texts: pa.Array) -> np.ndarray:
    """The sha256 of each value of ``texts`` (a string or binary array without nulls), read as
    ``_DIGEST`` records.

    The values are sliced from the array's one data buffer (no Python object per value but
    the slice hashed), and the digests read by numpy at once.
    """
    if texts.null_count:
        raise ValueError("canonical key strings are never null")
    large = pa.types.is_large_string(texts.type) or pa.types.is_large_binary(texts.type)
    width = np.dtype(np.int64 if large else np.int32)
    offsets = np.frombuffer(
        texts.buffers()[1], width, len(texts) + 1, texts.offset * width.itemsize
    )
    data = texts.buffers()[2]
    raw = b"" if data is None else data.to_pybytes()
    starts: list[int] = offsets[:-1].tolist()
    ends: list[int] = offsets[1:].tolist()
    sha256 = hashlib.sha256  # looked up per call (a test replaces it)
    joined = b"".join([sha256(raw[a:b]).digest() for a, b in zip(starts, ends, strict=True)])
    return np.frombuffer(joined, _DIGEST)


def _sorted_clash(
    keys: np.ndarray, checks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``keys`` sorted (the stable order), whether each sorted key equals the one before it, and
    the sorted position of the first key whose next one is the same key with another check (two
    natural keys with one surrogate key), or None."""
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    clash = np.flatnonzero(same & (checks[order[1:]] != checks[order[:-1]]))
    return order, same, int(clash[0]) if clash.size else None


class _SeenKeys:
    """Every distinct key of a run with the next 8 bytes of its digest (16 bytes a key), and
    the check that no key stands for two natural keys.

    Batches wait in a list and are merged into one sorted array once they hold as many keys as
    it (so each key is sorted a logarithmic number of times), and at ``settle``: numpy sorts
    and compares, no Python object per key.
    """

    def __init__(self) -> None:
        self._keys = np.empty(0, np.int64)
        self._checks = np.empty(0, np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._waiting = 0
        self._clash: int | None = None  # once found, reported by every later call

    def __len__(self) -> int:
        """The distinct keys merged so far (the waiting batches are merged first)."""
        self.settle()
        return len(self._keys)

    def add(self, keys: np.ndarray, checks: np.ndarray) -> int | None:
        """Remember a batch's keys; a key found standing for two natural keys, or None."""
        self._pending.append((keys, checks))
        self._waiting += len(keys)
        if self._waiting >= max(len(self._keys), 1 << 16):
            return self.settle()
        return self._clash

    def settle(self) -> int | None:
        """Merge the waiting batches; the first key found standing for two natural keys (now or
        by an earlier call), or None."""
        if self._clash is not None or not self._pending:
            return self._clash
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        checks = np.concatenate([self._checks, *(c for _, c in self._pending)])
        self._pending.clear()
        self._waiting = 0
        order, same, clash = _sorted_clash(keys, checks)  # sorted runs: argsort merges them
        if clash is not None:
            self._clash = int(keys[order[clash]])
            return self._clash
        keep = order[np.concatenate((np.ones(min(len(keys), 1), np.bool_), ~same))]
        self._keys, self._checks = keys[keep], checks[keep]
        return None


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
    codes, and only those are turned into canonical strings and hashed (one sha256 each, sliced
    from the strings' buffer; the digests are read by numpy). Memory across batches is 16 bytes
    per distinct key (the key and the next 8 bytes of its digest, ``_SeenKeys``): two different
    natural keys with the same surrogate key differ there with certainty short of a 2^-64
    accident, and the run stops with ``KeyCollision`` (within a batch at once, across batches
    at the latest at ``finish``, which the caller runs before publishing anything).
    """

    key: str
    types: tuple[ColumnType | None, ...]
    _seen: _SeenKeys = field(default_factory=_SeenKeys)
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
        keys = pc.take(self._hash_distinct(joined), rows.indices)
        self.missing += int(keys.null_count)
        return keys

    def _by_rows(self, columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.Array:
        per_column = [parts_of(c, t) for c, t in zip(columns, self.types, strict=True)]
        texts: list[str | None] = []
        for parts in zip(*per_column, strict=True):
            if any(p is None for p in parts):
                texts.append(None)
            else:
                texts.append(canonical(self.key, [p for p in parts if p is not None]))
        rows = pc.dictionary_encode(pa.array(texts, pa.string()))
        keys = pc.take(self._hash_distinct(rows.dictionary), rows.indices)
        self.missing += int(keys.null_count)
        return keys

    def _hash_distinct(self, texts: pa.Array) -> pa.Array:
        """The keys of a batch's canonical ``texts`` (distinct codes; two may still be one text:
        ``a`` and ``A `` have one canonical part), checked within the batch and remembered."""
        found = digests(texts)
        keys = found["key"].astype(np.int64)
        checks = found["check"].astype(np.uint64)
        order, _, clash = _sorted_clash(keys, checks)
        if clash is not None:
            one, other = texts[int(order[clash])].as_py(), texts[int(order[clash + 1])].as_py()
            self._collision(int(keys[order[clash]]), f": {one!r} and {other!r}")
        clashing = self._seen.add(keys, checks)
        if clashing is not None:
            self._collision(clashing)
        return pa.array(keys, pa.int64())

    def finish(self) -> None:
        """Check the keys not yet checked across batches (``KeyCollision``); call it once the
        last batch is keyed and before anything is published."""
        clashing = self._seen.settle()
        if clashing is not None:
            self._collision(clashing)

    def _collision(self, value: int, detail: str = "") -> NoReturn:
        raise KeyCollision(
            f"key {self.key!r}: two natural keys of this run share surrogate key {value}{detail}"
        )
