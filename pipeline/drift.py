"""Schema drift of one table between two processed versions (contract §9).

``classify`` compares an old and a new ``TableManifest`` column by column and names each change
with its class; the table's class is the most severe one, in the order of ``DRIFT_CLASSES``
(``KEY_AFFECTING`` most severe). Pure: no I/O, no clock.

Rules, beyond the contract's table:

* Columns are matched by name (table names are already lower-cased).
* A change to a *key column* (a ``<key>_sk`` column or a natural key column it is derived
  from) is ``KEY_AFFECTING`` when its type changes or it is removed; adding one is ``ADDITIVE``.
* The key config counts only for keys the table uses (before or after): a change of their
  natural columns is ``KEY_AFFECTING``.
* ``VALUE_LEVEL`` needs a "before": it compares invalid-value counts of columns present in both
  versions and missing-key-part counts of keys used by both. A new dataset or column is only
  ``ADDITIVE``, whatever its values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pipeline.model import DRIFT_CLASSES, Drift, DriftChange, OutputColumn, TableManifest
from pipeline.naming import column_name, key_column

NONE = "NONE"
COSMETIC = "COSMETIC"
ADDITIVE = "ADDITIVE"
WIDENING = "WIDENING"
VALUE_LEVEL = "VALUE_LEVEL"
BREAKING = "BREAKING"
KEY_AFFECTING = "KEY_AFFECTING"

KeyConfig = Mapping[str, Sequence[str]]

_SEVERITY = {name: rank for rank, name in enumerate(DRIFT_CLASSES)}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_TIMESTAMP = re.compile(r"^timestamp(\(\d+\))?$")
_INTEGERS = ("integer", "bigint")


def severity(drift_class: str) -> int:
    """Rank of a drift class: 0 for ``NONE`` up to 6 for ``KEY_AFFECTING``."""
    return _SEVERITY[drift_class]


def most_severe(classes: Sequence[str]) -> str:
    """The most severe of ``classes`` (``NONE`` for none)."""
    return max(classes, key=severity, default=NONE)


def is_widening(old_type: str, new_type: str) -> bool:
    """Whether ``old_type`` -> ``new_type`` is a lossless widening the contract allows.

    integer->bigint, integer/bigint->double or decimal, decimal precision up (scale and integer
    digits not reduced), date->timestamp.
    """
    old, new = old_type.strip().lower(), new_type.strip().lower()
    if old == "integer" and new == "bigint":
        return True
    if old in _INTEGERS and (new == "double" or _DECIMAL.match(new)):
        return True
    old_decimal, new_decimal = _DECIMAL.match(old), _DECIMAL.match(new)
    if old_decimal and new_decimal:
        p1, s1 = int(old_decimal[1]), int(old_decimal[2])
        p2, s2 = int(new_decimal[1]), int(new_decimal[2])
        return p2 > p1 and s2 >= s1 and p2 - s2 >= p1 - s1
    return old == "date" and bool(_TIMESTAMP.match(new))


def key_columns(manifest: TableManifest, keys: KeyConfig) -> set[str]:
    """Columns of ``manifest`` that carry or feed a surrogate key."""
    names = {c.name for c in manifest.columns}
    out: set[str] = set()
    for column in manifest.columns:
        if column.key_sources:
            out.add(column.name)
            out.update(column_name(s) for s in column.key_sources)
    for key, natural in manifest.keys.items():
        out.add(key_column(key))
        out.update(column_name(c) for c in natural)
    for key, configured in keys.items():
        if key_column(key) in names:
            out.add(key_column(key))
            out.update(column_name(c) for c in configured)
    return out & names


def _used_keys(manifest: TableManifest | None, keys: KeyConfig) -> set[str]:
    if manifest is None:
        return set()
    names = {c.name for c in manifest.columns}
    return set(manifest.keys) | {k for k in keys if key_column(k) in names}


def classify(
    old: TableManifest | None,
    new: TableManifest | None,
    *,
    old_keys: KeyConfig,
    new_keys: KeyConfig,
) -> Drift:
    """Drift of one table from ``old`` to ``new``.

    Args:
        old: the previous version (``None``: the table did not exist).
        new: the new version (``None``: the table was removed).
        old_keys: the study's key config (``lakehook.yaml`` ``keys``) of the old version.
        new_keys: the key config of the new version.

    Returns:
        The per-column changes, each with its class, and the table's class.
    """
    if old is None and new is None:
        return Drift()
    if old is None:
        assert new is not None
        return _drift([DriftChange(None, "dataset added", None, new.dataset, ADDITIVE)])
    if new is None:
        return _drift([DriftChange(None, "dataset removed", old.dataset, None, BREAKING)])

    changes: list[DriftChange] = []
    changes += _key_config_changes(old, new, old_keys, new_keys)
    changes += _column_changes(old, new, key_columns(old, old_keys) | key_columns(new, new_keys))
    changes += _value_changes(old, new)
    return _drift(changes)


def _drift(changes: list[DriftChange]) -> Drift:
    return Drift(most_severe([c.drift_class for c in changes]), tuple(changes))


def _key_config_changes(
    old: TableManifest, new: TableManifest, old_keys: KeyConfig, new_keys: KeyConfig
) -> list[DriftChange]:
    changes = []
    for key in sorted(_used_keys(old, old_keys) | _used_keys(new, new_keys)):
        before = tuple(old_keys.get(key, old.keys.get(key, ())))
        after = tuple(new_keys.get(key, new.keys.get(key, ())))
        if [c.upper() for c in before] != [c.upper() for c in after]:
            changes.append(
                DriftChange(
                    key_column(key),
                    "key config changed",
                    ",".join(before) or None,
                    ",".join(after) or None,
                    KEY_AFFECTING,
                )
            )
    return changes


def _column_changes(
    old: TableManifest, new: TableManifest, key_cols: set[str]
) -> list[DriftChange]:
    before: dict[str, OutputColumn] = {c.name: c for c in old.columns}
    after: dict[str, OutputColumn] = {c.name: c for c in new.columns}
    changes = []
    for name, column in before.items():
        if name not in after:
            drift_class = KEY_AFFECTING if name in key_cols else BREAKING
            changes.append(DriftChange(name, "column removed", column.type, None, drift_class))
    for name, column in after.items():
        previous = before.get(name)
        if previous is None:
            changes.append(DriftChange(name, "column added", None, column.type, ADDITIVE))
            continue
        if previous.type.lower() != column.type.lower():
            if name in key_cols:
                drift_class = KEY_AFFECTING
            elif is_widening(previous.type, column.type):
                drift_class = WIDENING
            else:
                drift_class = BREAKING
            changes.append(
                DriftChange(name, "type changed", previous.type, column.type, drift_class)
            )
        if previous.label != column.label:
            changes.append(
                DriftChange(name, "label changed", previous.label, column.label, COSMETIC)
            )
    common_before = [n for n in before if n in after]
    common_after = [n for n in after if n in before]
    if common_before != common_after:
        changes.append(
            DriftChange(
                None,
                "column order changed",
                ",".join(common_before),
                ",".join(common_after),
                COSMETIC,
            )
        )
    return changes


def _value_changes(old: TableManifest, new: TableManifest) -> list[DriftChange]:
    changes = []
    old_names = {c.name for c in old.columns}
    for name, count in sorted(new.invalid_values.items()):
        previous = old.invalid_values.get(name, 0)
        if name in old_names and count > previous:
            changes.append(
                DriftChange(name, "more invalid values", str(previous), str(count), VALUE_LEVEL)
            )
    for key, count in sorted(new.null_keys.items()):
        if key not in old.null_keys and key not in old.keys:
            continue
        previous = old.null_keys.get(key, 0)
        if count > previous:
            changes.append(
                DriftChange(
                    key_column(key),
                    "more rows with missing key parts",
                    str(previous),
                    str(count),
                    VALUE_LEVEL,
                )
            )
    return changes


def describe(change: DriftChange) -> str:
    """One line for humans, e.g. ``column age: type changed integer -> varchar (BREAKING)``."""
    where = f"column {change.column}" if change.column else "table"
    detail = change.change
    if change.from_ is not None or change.to is not None:
        detail += f" {change.from_ or '-'} -> {change.to or '-'}"
    return f"{where}: {detail} ({change.drift_class})"
