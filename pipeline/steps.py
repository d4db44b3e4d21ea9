"""Wall-clock seconds per step of one job: where a commit's time to ``synced`` goes.

A job runs inside ``recording()``; the code of each step runs inside ``step(name)``. Steps
are exclusive: a step entered inside another (a download inside processing) pauses the outer
one, so the seconds add up to at most the job's time and the rest is "other" (statuses,
lineage). Outside ``recording()`` a step costs one context-variable read and records nothing.
The worker logs the figures with "job done" and observes them in
``lakehook_job_step_seconds`` (``server/worker.py``); ``bench/bench_commit.py`` prints them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

LAKEFS_READS = "lakefs_reads"  # plan (head, manifests, config, contents, listing), downloads
PROCESSING = "processing"  # CSV -> typed, keyed Parquet (either engine)
UPLOAD = "upload"  # working branch, Parquet files and manifests to lakeFS
COMMIT_MERGE = "commit_merge"  # commit on the working branch, merge, branch deleted
METASTORE = "metastore"  # the ref's Hive schema synced to the manifests
VERIFICATION = "verification"  # metastore, Parquet footers and probes checked
STEPS = (LAKEFS_READS, PROCESSING, UPLOAD, COMMIT_MERGE, METASTORE, VERIFICATION)


@dataclass
class StepTimes:
    """Seconds per step of one job, exclusive of nested steps."""

    seconds: dict[str, float] = field(default_factory=dict)
    _open: list[str] = field(default_factory=list)  # steps entered, innermost last
    _since: float = 0.0  # when the innermost open step last (re)started counting

    def enter(self, name: str) -> None:
        now = time.monotonic()
        if self._open:
            self._count(now)
        self._open.append(name)
        self._since = now

    def leave(self) -> None:
        now = time.monotonic()
        self._count(now)
        self._open.pop()
        self._since = now  # the outer step, if any, counts again from here

    def _count(self, now: float) -> None:
        name = self._open[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in sorted(self.seconds.items())}


_CURRENT: ContextVar[StepTimes | None] = ContextVar("lakehook_step_times", default=None)


@contextmanager
def recording(times: StepTimes | None = None) -> Iterator[StepTimes]:
    """Record the steps run in this context (this thread) into ``times`` (default: new)."""
    times = StepTimes() if times is None else times
    token = _CURRENT.set(times)
    try:
        yield times
    finally:
        _CURRENT.reset(token)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Count the time inside as ``name`` (nothing when no job is being recorded)."""
    times = _CURRENT.get()
    if times is None:
        yield
        return
    times.enter(name)
    try:
        yield
    finally:
        times.leave()
