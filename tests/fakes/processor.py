"""A recording ``Processor`` for server tests: remembers calls, answers the gate as told."""

from __future__ import annotations

import threading
import time

from lakehook.errors import LakehookError
from pipeline import steps
from pipeline.model import GateDecision, RefStatus


class FakeProcessor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.decision = GateDecision(True)
        self.fail_with: LakehookError | None = None  # raised by the next sync calls
        self.failures_left = 0
        self.gate_delay = 0.0  # seconds the gate takes to decide (a slow lakeFS)
        self.metastore_differs: dict[tuple[str, str], list[str]] = {}  # (repo, ref) -> problems
        self._lock = threading.Lock()

    def _record(self, *call: str) -> None:
        with self._lock:
            self.calls.append(call)
            if self.fail_with is not None and self.failures_left > 0:
                self.failures_left -= 1
                raise self.fail_with

    def _status(self, repo: str, ref: str, ref_type: str = "branch") -> RefStatus:
        return RefStatus(
            repo, ref, ref_type, f"{repo}_{ref}", "head", "head", "synced", updated_at=time.time()
        )

    def sync_branch(self, repo: str, branch: str) -> RefStatus:
        with steps.step(steps.PROCESSING):  # as the real one does (the step timings are seen)
            self._record("sync_branch", repo, branch)
        return self._status(repo, branch)

    def create_branch(self, repo: str, branch: str, source_ref: str) -> RefStatus:
        self._record("create_branch", repo, branch, source_ref)
        return self._status(repo, branch)

    def delete_branch(self, repo: str, branch: str) -> None:
        self._record("delete_branch", repo, branch)

    def sync_tag(self, repo: str, tag: str) -> RefStatus:
        self._record("sync_tag", repo, tag)
        return self._status(repo, tag, "tag")

    def delete_tag(self, repo: str, tag: str) -> None:
        self._record("delete_tag", repo, tag)

    def gate(
        self, repo: str, source_ref: str, destination_branch: str, source_commit: str | None
    ) -> GateDecision:
        self._record("gate", repo, source_ref, destination_branch, source_commit or "")
        time.sleep(self.gate_delay)
        return self.decision

    def metastore_problems(self, status: RefStatus) -> list[str]:
        self._record("metastore_problems", status.repository, status.ref)
        return list(self.metastore_differs.get((status.repository, status.ref), []))
