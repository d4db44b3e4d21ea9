"""Pre-merge decisions in processes of their own, so that the intake only waits for them.

A decision reads lakeFS (the source's status, both sides' manifests and ``lakehook.yaml``)
through the lakeFS SDK, whose responses are validated into models in Python: tens of
milliseconds of interpreter time per decision. Made in the intake, that time held the
interpreter lock its webhook threads need. Measured with ``bench_isolation`` while a worker
processed a 1 GB CSV: 20 of the 27 webhooks slower than 20 ms were in flight while a pre-merge
was, though one was in flight only 15 % of the time; without pre-merges the webhook p99 was
12.7 ms instead of 22.9 (docs/benchmarks.md).

``GateProcesses`` keeps ``LAKEHOOK_GATE_PROCESSES`` processes (forked by the workers' fork
server, never from the threaded intake), each with its own read-only processor. The intake's budget
(``gate_timeout_seconds``) and slots (``server.webhook.within``) still bound every decision; a
process that dies is replaced, and the merge it was deciding is refused with 503 "retry".
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from lakehook.errors import LakehookError, ServiceUnavailable
from lakehook.settings import Settings
from pipeline.model import GateDecision

log = logging.getLogger(__name__)

_processor: Any = None  # in a gate process: its read-only processor (``_start``)


@dataclass(frozen=True)
class _Undecided:
    """A ``LakehookError`` raised in a gate process, carried back as text (the error classes
    take keyword arguments that pickling would lose)."""

    message: str


def _start(settings: Settings, intake: int) -> None:
    """Initializer of a gate process: end with the intake; build the processor once."""
    global _processor
    from server.logs import configure
    from server.state import open_state
    from server.worker_main import die_with, leave_intake_group

    die_with(intake)
    # a little nicer than the intake: a webhook that comes in while a merge is being decided
    # gets the cores first (the decision has a budget of seconds; the ack, milliseconds)
    leave_intake_group(settings.gate_nice)
    os.nice(settings.gate_nice)
    configure(settings.log_level, settings.log_dir)
    from pipeline.service import build_processor

    store = open_state(settings, "gate", checkpoints=False).store
    _processor = build_processor(settings, store, lineage=False)


def _ready() -> int:
    return os.getpid()


def _decide(
    repo: str, source: str, destination: str, source_commit: str | None
) -> GateDecision | _Undecided:
    assert _processor is not None, "not a gate process"
    try:
        decision: GateDecision = _processor.gate(repo, source, destination, source_commit)
        return decision
    except LakehookError as err:
        return _Undecided(str(err))


class GateProcesses:
    """The pool of gate processes of one intake."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the processes and wait until each has built its processor (so that the
        first merge after a start is not the one that pays for the imports)."""
        try:
            pool = self._current()
            for future in [pool.submit(_ready) for _ in range(self.settings.gate_processes)]:
                future.result(timeout=120)
        except Exception:  # the next decision starts them again (``decide``)
            log.exception("starting the gate processes failed")

    def pids(self) -> list[int]:
        """The gate processes running now."""
        with self._lock:
            pool = self._pool
        # the pool's own dict, which a decision's submit() on another thread may grow while
        # this runs: copied in one step (a C call that holds the interpreter), then looked at;
        # iterating the dict itself failed now and then, and /healthz answered 500
        processes = list((getattr(pool, "_processes", None) or {}).values())
        return sorted(p.pid for p in processes if p.is_alive())

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forked by the fork server the worker processes come from (preloaded with
                # lakehook, single-threaded): a gate process starts in milliseconds, with
                # nothing of the intake's threads or sockets
                from server.supervisor import PRELOAD

                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(PRELOAD)
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.gate_processes,
                    mp_context=context,
                    initializer=_start,
                    initargs=(self.settings, os.getpid()),
                )
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def decide(
        self, repo: str, source: str, destination: str, source_commit: str | None
    ) -> GateDecision:
        """The gate's decision, made in a gate process (blocks; the caller bounds the wait)."""
        pool = self._current()
        try:
            answer = pool.submit(_decide, repo, source, destination, source_commit).result()
        except BrokenProcessPool as err:
            log.error("a gate process ended while deciding; replacing the gate processes")
            self._replace(pool)
            raise ServiceUnavailable(f"the gate process ended ({err})") from err
        if isinstance(answer, _Undecided):
            raise ServiceUnavailable(answer.message)
        return answer
