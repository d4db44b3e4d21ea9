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
from typing import Any

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


def describe_dict(change: Mapping[str, Any]) -> str:
    """``describe`` for a change as the status JSON has it (``column``, ``change``, ``from``...)."""
    return describe(
        DriftChange(
            change.get("column"),
            change["change"],
            change.get("from"),
            change.get("to"),
            change.get("class", NONE),
        )
    )


def describe(change: DriftChange) -> str:
    """One line for humans, e.g. ``column age: type changed integer -> varchar (BREAKING)``."""
    where = f"column {change.column}" if change.column else "table"
    detail = change.change
    if change.from_ is not None or change.to is not None:
        detail += f" {change.from_ or '-'} -> {change.to or '-'}"
    return f"{where}: {detail} ({change.drift_class})"


# ---- the status's drift baseline (contract §9 v1.1) --------------------------------------------


def same_state(
    old: Mapping[str, TableManifest],
    new: Mapping[str, TableManifest],
    old_keys: KeyConfig,
    new_keys: KeyConfig,
) -> bool:
    """Whether two processed states of a ref are the same: same tables built from the same inputs
    (manifest fingerprints cover raw data, contents, key config and processing version) and the
    same key config. A re-sync of an unchanged ref compares equal, so it keeps its drift."""
    return {t: m.fingerprint for t, m in old.items()} == {
        t: m.fingerprint for t, m in new.items()
    } and _normal_keys(old_keys) == _normal_keys(new_keys)


def _normal_keys(keys: KeyConfig) -> dict[str, tuple[str, ...]]:
    return {k: tuple(c.upper() for c in v) for k, v in keys.items()}


def drift_base(
    *,
    last_synced: str | None,
    last_synced_base: str | None,
    unchanged_since_synced: bool,
    first_base: str,
) -> str:
    """The commit whose manifests and key config the status's drift is measured against.

    The drift shown is that of the newest change, against the synced state before it:

    * the ref was synced before and something changed since (processing, a merge into it,
      ``lakehook.yaml``): the last synced state, ``last_synced``;
    * nothing changed since the last synced state (a re-sync, a replayed event, a commit that
      touches no input): the baseline that state was measured against, so the drift stays;
    * never synced: ``first_base``, what the ref held before lakehook first processed it (for a
      new branch its source's tables, so it shows NONE; for a new repository nothing, so every
      table is ADDITIVE ``dataset added``).
    """
    if last_synced is None:
        return first_base
    if unchanged_since_synced:
        return last_synced_base or last_synced
    return last_synced


def drift_against(
    base: Mapping[str, TableManifest],
    current: Mapping[str, TableManifest],
    *,
    base_keys: KeyConfig,
    keys: KeyConfig,
) -> tuple[dict[str, Drift], dict[str, Drift]]:
    """Drift of every current table from ``base``, and of every table ``base`` had that is gone.

    Returns:
        (table -> drift for the current tables, removed table -> its BREAKING drift).
    """
    drifts = {
        table: classify(base.get(table), manifest, old_keys=base_keys, new_keys=keys)
        for table, manifest in current.items()
    }
    removed = {
        table: classify(manifest, None, old_keys=base_keys, new_keys=keys)
        for table, manifest in sorted(base.items())
        if table not in current
    }
    return drifts, removed


# ---- keys that cannot agree across tables (contract §6) ----------------------------------------

_NUMERIC_TYPES = ("integer", "bigint", "double", "real", "smallint", "tinyint")


def type_family(table_type: str) -> str:
    """The family a key part is canonicalised by (contract §6): text, numeric, date, timestamp
    or boolean. Declared text, partialdate and undeclared columns are all ``varchar``: text."""
    t = table_type.strip().lower()
    if t in _NUMERIC_TYPES or _DECIMAL.match(t):
        return "numeric"
    if t == "date":
        return "date"
    if _TIMESTAMP.match(t):
        return "timestamp"
    if t == "boolean":
        return "boolean"
    return "text"


def key_family_warnings(manifests: Mapping[str, TableManifest]) -> list[str]:
    """One warning per key whose natural columns have different type families across datasets.

    Such keys never match across those datasets (``"1"`` as text is not ``1`` as a number), so
    the warning names the datasets of each family, e.g. ``key visit: ... VISITNUM numeric in
    LBCH, SV, VS; VISITNUM text in MH``.
    """
    # key -> dataset -> column (upper) -> family
    families: dict[str, dict[str, dict[str, str]]] = {}
    for manifest in manifests.values():
        types = {c.name: c.type for c in manifest.columns}
        sources = {c.name: (c.source or c.name).upper() for c in manifest.columns}
        for key, natural in manifest.keys.items():
            per_column = families.setdefault(key, {}).setdefault(manifest.dataset, {})
            for column in natural:
                name = column_name(column)
                if name in types:
                    per_column[sources.get(name, column.upper())] = type_family(types[name])
    warnings = []
    for key in sorted(families):
        datasets = families[key]
        columns = sorted({c for cols in datasets.values() for c in cols})
        differing = [
            c for c in columns if len({cols[c] for cols in datasets.values() if c in cols}) > 1
        ]
        if not differing:
            continue
        groups: dict[str, list[str]] = {}
        for dataset, cols in datasets.items():
            signature = ", ".join(f"{c} {cols[c]}" for c in differing if c in cols)
            groups.setdefault(signature, []).append(dataset)
        described = "; ".join(
            f"{signature} in {', '.join(sorted(names))}"
            for signature, names in sorted(groups.items())
        )
        warnings.append(
            f"key {key}: {', '.join(differing)} declared with different type families, so "
            f"{key_column(key)} values never match across them: {described}. Declare "
            f"{', '.join(differing)} with one type family in every dataset's contents"
        )
    return warnings
