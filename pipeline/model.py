"""Plain data shared by the steps, the server and the lineage recorder.

Nothing here does I/O. ``TableManifest`` is what lakehook writes to
``_lakehook/manifests/<table>.json`` on a branch; ``TableRun`` is the description a processing
step returns (the lineage recorder reads it; steps never emit lineage themselves); ``RefStatus``
is the status JSON of contract §9.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_PREFIX = "_lakehook/manifests/"
TABLES_PREFIX = "tables/"
ORIGIN_KEY = "lakehook.origin"
ORIGIN_VALUE = "lakehook"
SOURCE_COMMIT_KEY = "lakehook.source_commit"
PROCESSING_VERSION = "3"  # 2: one parser per type for values and keys (contract §5 v1.1);
# 3: no Parquet dictionary for columns of nearly unique values (``convert.dictionary_columns``)

STATES = ("synced", "pending", "processing", "failed")
DRIFT_CLASSES = (
    "NONE",
    "COSMETIC",
    "ADDITIVE",
    "WIDENING",
    "VALUE_LEVEL",
    "BREAKING",
    "KEY_AFFECTING",
)


@dataclass(frozen=True)
class OutputColumn:
    """A column of a processed table."""

    name: str
    type: str  # Trino type: varchar, integer, bigint, double, decimal(p,s), boolean, date, timestamp(3)
    source: str | None = None  # the raw CSV column it came from (None for <key>_sk)
    declared: str | None = None  # declared type as written in the contents file (None: undeclared)
    label: str = ""
    key_sources: tuple[str, ...] = ()  # for <key>_sk: the natural key columns (table names)


@dataclass(frozen=True)
class TableManifest:
    """What one processed table was made from and what it holds."""

    table: str
    dataset: str
    source_commit: str
    raw_path: str
    raw_checksum: str
    contents_path: str
    contents_fingerprint: str
    keys_fingerprint: str
    processing_version: str
    fingerprint: str  # sha256 over all inputs above: equal fingerprint -> nothing to redo
    files: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    rows: int
    invalid_values: Mapping[str, int] = field(default_factory=dict)
    null_keys: Mapping[str, int] = field(default_factory=dict)
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> natural columns used
    warnings: tuple[str, ...] = ()
    # (v1.1) path -> (size, lakeFS checksum) of each file, and lakehook's signature over the
    # rest (pipeline.provenance): only signed manifests whose files still match are trusted
    file_fingerprints: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    signature: str = ""
    engine: str = "pyarrow"  # the processing engine that built the table: pyarrow or trino

    @property
    def path(self) -> str:
        return f"{MANIFEST_PREFIX}{self.table}.json"

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> TableManifest:
        raw: dict[str, Any] = json.loads(data)
        raw["files"] = tuple(raw["files"])
        raw["columns"] = tuple(
            OutputColumn(**{**c, "key_sources": tuple(c.get("key_sources", ()))})
            for c in raw["columns"]
        )
        raw["keys"] = {k: tuple(v) for k, v in raw.get("keys", {}).items()}
        raw["warnings"] = tuple(raw.get("warnings", ()))
        raw["file_fingerprints"] = {
            str(path): (int(size), str(checksum))
            for path, (size, checksum) in dict(raw.get("file_fingerprints", {})).items()
        }
        return cls(**raw)


@dataclass(frozen=True)
class DriftChange:
    column: str | None  # None for a table-level change (dataset added/removed, key config)
    change: str  # e.g. "column added", "type changed", "column removed", "label changed"
    from_: str | None = None
    to: str | None = None
    drift_class: str = "NONE"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "change": self.change,
            "from": self.from_,
            "to": self.to,
            "class": self.drift_class,
        }


@dataclass(frozen=True)
class Drift:
    drift_class: str = "NONE"
    changes: tuple[DriftChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.drift_class, "changes": [c.to_dict() for c in self.changes]}


@dataclass(frozen=True)
class TableRun:
    """What processing one table read and wrote: the step's description of itself.

    The lineage recorder turns this into OpenLineage events; steps never emit lineage.
    """

    repository: str
    branch: str
    source_commit: str  # the user's commit processed
    table: str
    dataset: str
    raw_path: str
    raw_checksum: str
    contents_path: str
    output_commit: str | None = None  # lakehook's commit holding the output (None until written)
    manifest: TableManifest | None = None  # None when the table failed
    schema: str = ""  # Hive schema of the branch
    drift: Drift = field(default_factory=Drift)
    error: str | None = None
    error_detail: Mapping[str, Any] | None = None  # InputError.as_dict(): file, line, column, hint
    started_at: float = 0.0
    finished_at: float = 0.0
    reused: bool = False  # fingerprint unchanged: nothing was rewritten
    in_place: bool = False  # the files are already on the working branch (the Trino engine)
    null_counts: Mapping[str, int] = field(default_factory=dict)  # per column, when converted


@dataclass(frozen=True)
class TableStatus:
    table: str
    location: str
    rows: int
    columns: tuple[tuple[str, str], ...]
    drift: Drift = field(default_factory=Drift)
    invalid_values: Mapping[str, int] = field(default_factory=dict)
    null_keys: Mapping[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    engine: str = "pyarrow"
    # the probe_identity (pipeline.metastore.verify) last probed without a problem at this
    # ref's schema: the next sync does not probe that same definition and files again
    probed: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "location": self.location,
            "rows": self.rows,
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "drift": self.drift.to_dict(),
            "invalid_values": dict(self.invalid_values),
            "null_keys": dict(self.null_keys),
            "fingerprint": self.fingerprint,
            "engine": self.engine,
            "probed": self.probed,
        }


@dataclass(frozen=True)
class RemovedTable:
    """A table the drift baseline had and the ref no longer has (contract §9 ``removed_tables``)."""

    table: str
    drift: Drift = field(default_factory=Drift)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "drift": self.drift.to_dict()}


def _drift_from_dict(d: Mapping[str, Any]) -> Drift:
    return Drift(
        d["class"],
        tuple(
            DriftChange(
                c["column"], c["change"], c.get("from"), c.get("to"), c.get("class", "NONE")
            )
            for c in d["changes"]
        ),
    )


@dataclass(frozen=True)
class RefStatus:
    """Contract §9: the state of one branch or tag."""

    repository: str
    ref: str
    ref_type: str  # "branch" or "tag"
    schema: str
    head_commit: str
    source_commit: str | None
    state: str
    tables: tuple[TableStatus, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[
        dict[str, Any], ...
    ] = ()  # {"table"|"dataset"|"file", "line", "column", "message", "hint"}
    reason: str = ""  # why pending/failed, in one line
    updated_at: float = 0.0
    removed_tables: tuple[RemovedTable, ...] = ()
    # Drift baseline (docs/drift.md): the commit whose manifests and key config the tables'
    # drift is measured against — the synced state before the newest change.
    drift_base: str | None = None
    # The newest synced state (its head commit) and the baseline its drift was measured
    # against; carried through pending/failed states so the next sync compares with them.
    last_synced_commit: str | None = None
    last_synced_drift_base: str | None = None
    # a service failure being retried: {"kind", "attempts", "next_try_at", "error"} (or None)
    retry: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repository": self.repository,
            self.ref_type: self.ref,
            "ref_type": self.ref_type,
            "schema": self.schema,
            "head_commit": self.head_commit,
            "source_commit": self.source_commit,
            "state": self.state,
            "reason": self.reason,
            "tables": [t.to_dict() for t in self.tables],
            "removed_tables": [t.to_dict() for t in self.removed_tables],
            "drift_base": self.drift_base,
            "last_synced_commit": self.last_synced_commit,
            "last_synced_drift_base": self.last_synced_drift_base,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "updated_at": self.updated_at,
            "retry": dict(self.retry) if self.retry else None,
        }
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RefStatus:
        tables = tuple(
            TableStatus(
                table=t["table"],
                location=t["location"],
                rows=t["rows"],
                columns=tuple((c["name"], c["type"]) for c in t["columns"]),
                drift=_drift_from_dict(t["drift"]),
                invalid_values=t.get("invalid_values", {}),
                null_keys=t.get("null_keys", {}),
                fingerprint=t.get("fingerprint", ""),
                engine=t.get("engine", "pyarrow"),
                probed=t.get("probed", ""),
            )
            for t in d.get("tables", [])
        )
        ref_type = d.get("ref_type", "branch")
        return cls(
            repository=d["repository"],
            ref=d[ref_type],
            ref_type=ref_type,
            schema=d.get("schema", ""),
            head_commit=d.get("head_commit", ""),
            source_commit=d.get("source_commit"),
            state=d["state"],
            tables=tables,
            warnings=tuple(d.get("warnings", ())),
            errors=tuple(d.get("errors", ())),
            reason=d.get("reason", ""),
            updated_at=d.get("updated_at", 0.0),
            removed_tables=tuple(
                RemovedTable(r["table"], _drift_from_dict(r["drift"]))
                for r in d.get("removed_tables", [])
            ),
            drift_base=d.get("drift_base"),
            last_synced_commit=d.get("last_synced_commit"),
            last_synced_drift_base=d.get("last_synced_drift_base"),
            retry=d.get("retry") or None,
        )


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reasons: tuple[str, ...] = ()
