"""In-memory ``StatusStore``."""

from __future__ import annotations

import threading

from pipeline import naming
from pipeline.model import RefStatus


class MemoryStatusStore:
    """``pipeline.ports.StatusStore`` in a dict."""

    def __init__(self) -> None:
        self._statuses: dict[tuple[str, str, str], RefStatus] = {}
        self._schemas: dict[tuple[str, str, str], str] = {}
        self.merges: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def get_status(self, repo: str, ref: str, ref_type: str = "branch") -> RefStatus | None:
        return self._statuses.get((repo, ref_type, ref))

    def put_status(self, status: RefStatus) -> None:
        with self._lock:
            self._statuses[(status.repository, status.ref_type, status.ref)] = status

    def delete_status(self, repo: str, ref: str, ref_type: str = "branch") -> None:
        with self._lock:
            self._statuses.pop((repo, ref_type, ref), None)
            self._schemas.pop((repo, ref_type, ref), None)

    def list_statuses(self, repo: str) -> list[RefStatus]:
        return [s for (r, _, _), s in sorted(self._statuses.items()) if r == repo]

    def schema_mapping(self) -> dict[tuple[str, str, str], str]:
        return dict(self._schemas)

    def save_schema_name(self, repo: str, ref_type: str, ref: str, schema: str) -> str:
        with self._lock:
            key = (repo, ref_type, ref)
            if key in self._schemas:
                return self._schemas[key]
            if schema in self._schemas.values():
                schema = naming.schema_name(repo, ref, self._schemas, ref_type)
            self._schemas[key] = schema
            return schema

    def record_merge(self, repo: str, destination: str, source_commit: str) -> None:
        with self._lock:
            self.merges.add((repo, destination, source_commit))

    def merge_recorded(self, repo: str, destination: str, source_commit: str) -> bool:
        return (repo, destination, source_commit) in self.merges
