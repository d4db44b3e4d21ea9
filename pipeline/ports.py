"""Ports: the small interfaces lakehook needs from the outside world.

Each port has one real adapter in ``pipeline.adapters`` and one hand-written in-memory fake in
``tests/fakes``; ``tests/contract`` runs one behaviour suite against both. To add an
implementation, satisfy the Protocol and translate vendor errors into ``lakehook.errors``
(``ServiceUnavailable`` for outages, ``NotFound`` for missing refs, ``RefMoved`` for lost races).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from pipeline.model import GateDecision, RefStatus

# --------------------------------------------------------------------------------------------
# lakeFS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    id: str
    parents: tuple[str, ...]
    committer: str
    message: str
    metadata: Mapping[str, str]
    creation_date: int = 0


@dataclass(frozen=True)
class Ref:
    """A branch or tag and the commit it points at."""

    name: str
    commit_id: str


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    checksum: str
    size: int


@dataclass(frozen=True)
class Change:
    """One entry of a diff: type is ``added``, ``removed``, ``changed`` or ``conflict``."""

    type: str
    path: str


class LakeFS(Protocol):
    """What lakehook needs of a lakeFS server."""

    def whoami(self) -> str:
        """The id of the user lakehook acts as."""
        ...

    def list_repositories(self) -> list[str]: ...

    def create_repository(
        self, repo: str, storage_namespace: str, default_branch: str = "main"
    ) -> None:
        """Create a repository (tests and demo); no error when it exists."""
        ...

    def list_branches(self, repo: str) -> list[Ref]: ...

    def list_tags(self, repo: str) -> list[Ref]: ...

    def branch_head(self, repo: str, branch: str) -> str:
        """Commit id at the head of ``branch``; ``NotFound`` when the branch does not exist."""
        ...

    def resolve(self, repo: str, ref: str) -> str:
        """Commit id of any ref (branch, tag or commit id)."""
        ...

    def get_commit(self, repo: str, commit_id: str) -> Commit: ...

    def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` at ``ref`` (recursive), sorted by path."""
        ...

    def stat_object(self, repo: str, ref: str, path: str) -> ObjectInfo | None: ...

    def read_object(self, repo: str, ref: str, path: str) -> bytes: ...

    def open_object(self, repo: str, ref: str, path: str) -> BinaryIO:
        """A readable stream of the object; the caller closes it."""
        ...

    def read_range(self, repo: str, ref: str, path: str, offset: int, length: int) -> bytes:
        """At most ``length`` bytes of the object from ``offset`` (a ranged read)."""
        ...

    def upload_object(
        self, repo: str, branch: str, path: str, data: bytes | BinaryIO
    ) -> ObjectInfo: ...

    def delete_object(self, repo: str, branch: str, path: str) -> None: ...

    def copy_object(
        self, repo: str, branch: str, source_ref: str, source_path: str, path: str
    ) -> ObjectInfo:
        """Copy ``source_path`` at ``source_ref`` to ``path`` on ``branch`` (no data moved)."""
        ...

    def create_branch(self, repo: str, branch: str, source: str) -> str:
        """Create ``branch`` from ``source``; returns its head. ``exist_ok`` semantics."""
        ...

    def delete_branch(self, repo: str, branch: str) -> None: ...

    def create_tag(self, repo: str, tag: str, ref: str) -> str: ...

    def delete_tag(self, repo: str, tag: str) -> None: ...

    def commit(
        self,
        repo: str,
        branch: str,
        message: str,
        metadata: Mapping[str, str],
        allow_empty: bool = False,
    ) -> Commit: ...

    def merge(
        self,
        repo: str,
        source_ref: str,
        destination_branch: str,
        message: str,
        metadata: Mapping[str, str],
    ) -> str:
        """Merge and return the resulting commit id.

        Raises ``RefMoved`` when the destination has uncommitted changes or moved, and
        ``TerminalError`` on a conflict or when a pre-merge hook refused it.
        """
        ...

    def uncommitted(self, repo: str, branch: str, prefix: str = "") -> list[Change]:
        """Uncommitted changes on ``branch`` (under ``prefix``)."""
        ...

    def diff_refs(self, repo: str, left: str, right: str, prefix: str = "") -> list[Change]: ...

    def log(self, repo: str, ref: str, limit: int = 100) -> list[Commit]:
        """Commits reachable from ``ref``, newest first (first parent chain is fine)."""
        ...


# --------------------------------------------------------------------------------------------
# Metastore (Hive, reached through Trino DDL or Thrift)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Trino type name: varchar, bigint, integer, double, decimal(p,s), boolean, date, timestamp(3)
    comment: str = ""


@dataclass(frozen=True)
class TableDef:
    schema: str
    name: str
    location: str
    columns: tuple[Column, ...]
    properties: Mapping[str, str] = field(default_factory=dict)


class Metastore(Protocol):
    """The schemas and external Parquet tables of the Hive catalog."""

    def list_schemas(self) -> list[str]: ...

    def create_schema(
        self, schema: str, location: str | None = None, properties: Mapping[str, str] | None = None
    ) -> None:
        """Create ``schema``; no error when it exists."""
        ...

    def drop_schema(self, schema: str) -> None:
        """Drop ``schema`` and its table definitions, never data; no error when absent."""
        ...

    def list_tables(self, schema: str) -> list[str]: ...

    def get_table(self, schema: str, table: str) -> TableDef | None: ...

    def create_table(self, table: TableDef) -> None:
        """Create or replace the external Parquet table ``table``."""
        ...

    def drop_table(self, schema: str, table: str) -> None: ...

    def probe(self, schema: str, table: str) -> int:
        """Run a query through the engine and return the row count (verification)."""
        ...


# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


class LineageSink(Protocol):
    """Where OpenLineage events go (Marquez, a journal, both, or a list in tests)."""

    def emit(self, event: object) -> None:
        """Send one ``openlineage.client.event_v2.RunEvent``; never raises for delivery problems."""
        ...


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Read ``stream`` in chunks of ``size`` bytes."""
    while chunk := stream.read(size):
        yield chunk


__all__: Sequence[str] = [
    "Change",
    "Column",
    "Commit",
    "LakeFS",
    "LineageSink",
    "Metastore",
    "ObjectInfo",
    "Ref",
    "TableDef",
]


# --------------------------------------------------------------------------------------------
# Recorded state (the server keeps it in SQLite; tests in a dict)
# --------------------------------------------------------------------------------------------


class StatusStore(Protocol):
    """The last recorded status of each (repository, ref)."""

    def get_status(self, repo: str, ref: str, ref_type: str = "branch") -> RefStatus | None: ...

    def put_status(self, status: RefStatus) -> None: ...

    def delete_status(self, repo: str, ref: str, ref_type: str = "branch") -> None: ...

    def list_statuses(self, repo: str) -> list[RefStatus]: ...

    def schema_mapping(self) -> dict[tuple[str, str, str], str]:
        """Every persisted (repository, ref_type, ref) -> Hive schema name."""
        ...

    def save_schema_name(self, repo: str, ref_type: str, ref: str, schema: str) -> str:
        """Claim ``schema`` for the ref atomically and return the name actually stored.

        A name already stored for the ref is returned unchanged. If another ref took
        ``schema`` meanwhile (two refs processed at the same moment), the name is recomputed
        by the collision rule (``naming.schema_name``) inside the same transaction, so two
        refs never share a schema (contract §7 v1.1).
        """
        ...

    def record_merge(self, repo: str, destination: str, source_commit: str) -> None:
        """Record, durably and before asking lakeFS, that lakehook merges ``source_commit``
        into ``destination`` (contract §8 v1.1: the gate lets only recorded merges through)."""
        ...

    def merge_recorded(self, repo: str, destination: str, source_commit: str) -> bool:
        """Whether lakehook recorded that merge (``record_merge``)."""
        ...


# --------------------------------------------------------------------------------------------
# The processor: what a server job runs
# --------------------------------------------------------------------------------------------


class Processor(Protocol):
    """Makes the derived state of one ref right. Every method is idempotent.

    The server's jobs call these; ``pipeline.service.BranchService`` is the real one and
    ``tests/fakes`` has a recording fake.
    """

    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        """Process the branch head (changed datasets only), write back, sync schema, verify."""
        ...

    def create_branch(self, repo: str, branch: str, source_ref: str) -> RefStatus:
        """Copy the source's schema to the new branch (no reprocessing), then verify."""
        ...

    def delete_branch(self, repo: str, branch: str) -> None:
        """Drop the branch's schema, never data."""
        ...

    def sync_tag(self, repo: str, tag: str) -> RefStatus: ...

    def delete_tag(self, repo: str, tag: str) -> None: ...

    def gate(
        self, repo: str, source_ref: str, destination_branch: str, source_commit: str | None
    ) -> GateDecision:
        """Pre-merge decision from recorded state and manifests only (fast, no processing)."""
        ...

    def metastore_problems(self, status: RefStatus) -> list[str]:
        """How the metastore differs from a synced ref's manifests (definitions only, no data).

        The reconciler asks this of refs whose head has not moved, so a table dropped or
        altered behind lakehook's back is found and repaired without any event.
        """
        ...
