"""``LineageRecorder``: OpenLineage runs around processing, without ever breaking it.

::

    recorder = LineageRecorder(sink, settings)
    with recorder.commit_run(repo, branch, source_commit) as commit:
        with commit.table_run("dm", "DM") as run:      # START
            table_run = process_table(...)
            run.finish(table_run)                      # COMPLETE, or FAIL if table_run.error
    # an exception inside a table run: FAIL with the error, then the exception propagates

The commit run (job ``<repo>``) is the parent of its table runs; the ingestion
run of the commit (job ``<repo>.ingest``) and the commit run's START are sent with the first
table run and its COMPLETE (FAIL when a table failed) when it exits, so a
reconcile that processes nothing sends nothing. Every emission goes through ``_emit``, which
catches, logs and counts any error: lineage problems never reach processing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType

from lakehook.settings import Settings
from pipeline.lineage import events, naming
from pipeline.lineage.events import CommitPlan, IngestionPlan, TablePlan
from pipeline.lineage.naming import LineageNaming
from pipeline.model import TableRun
from pipeline.ports import LineageSink

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class LineageRecorder:
    """Turns processing into OpenLineage runs on a ``LineageSink``.

    Args:
        sink: where events go (``pipeline.lineage.delivery.JournalSink`` in production).
        settings: the endpoints named in symlinks (default: the local stack's).
        clock: epoch seconds for START events and runs without their own times.

    Attributes:
        emitted: events handed to the sink.
        failures: events that could not be built or emitted (logged, never raised).
    """

    def __init__(
        self, sink: LineageSink, settings: Settings | None = None, *, clock: Clock = time.time
    ) -> None:
        self.sink = sink
        self.names = LineageNaming.from_settings(settings) if settings else LineageNaming()
        self.clock = clock
        self.emitted = 0
        self.failures = 0
        self._lock = threading.Lock()

    # ---- lifecycle of the sink's background delivery (no-op for plain sinks) ---------------
    def start(self) -> None:
        """Start the sink's background delivery, if it has one."""
        start = getattr(self.sink, "start", None)
        if callable(start):
            start()

    def stop(self) -> None:
        """Stop the sink's background delivery, if it has one."""
        stop = getattr(self.sink, "stop", None)
        if callable(stop):
            stop()

    # ---- runs ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def commit_run(
        self,
        repo: str,
        branch: str,
        source_commit: str,
        ingestion: IngestionPlan | None = None,
    ) -> Iterator[CommitRun]:
        """The parent run of processing ``source_commit`` of ``repo`` on ``branch``.

        Args:
            ingestion: the commit as an ingestion run, sent before the first table run.

        Yields:
            The ``CommitRun`` whose ``table_run`` opens each table's run.
        """
        commit = CommitRun(self, CommitPlan(repo, branch, source_commit), ingestion)
        try:
            yield commit
        except BaseException as err:
            commit.close(error=_describe(err))
            raise
        commit.close()

    def record(self, run: TableRun, parent: CommitPlan | None = None) -> None:
        """Send START and COMPLETE/FAIL of an already finished table run, with its own times.

        For callers that only have the description (replays, tests); never raises.
        """
        plan = TablePlan.of(run)
        started = run.started_at or self.clock()
        self.emit(lambda: events.table_start_event(plan, started, parent))
        self.emit(lambda: events.table_end_event(run, self.names, parent, at=self._end(run)))

    def completed(self, run_id: str) -> bool:
        """Whether a COMPLETE of ``run_id`` is in the sink's journal (False without a journal).

        Scans the journal: meant for resuming an interrupted job, not for every run.
        """
        journal = getattr(self.sink, "journal", None)
        if journal is None:
            return False
        try:
            for entry in journal.entries(0):
                if run_id not in entry.text:
                    continue
                event = json.loads(entry.text)
                if event.get("eventType") == "COMPLETE" and event["run"]["runId"] == run_id:
                    return True
        except (OSError, ValueError, KeyError, TypeError):
            log.exception("lineage journal unreadable; treating run %s as not completed", run_id)
        return False

    def complete_resumed(self, run: TableRun) -> None:
        """End a run an interrupted job started (same run id) unless its COMPLETE is journaled."""
        if self.completed(TablePlan.of(run).run_id):
            return
        parent = CommitPlan(run.repository, run.branch, run.source_commit)
        self.emit(lambda: events.table_end_event(run, self.names, parent, at=self._end(run)))

    def emit(self, build: Callable[[], object]) -> bool:
        """Build one event and hand it to the sink; log and count any error instead of raising.

        Returns:
            Whether the sink accepted the event.
        """
        try:
            event = build()
            self.sink.emit(event)
        except Exception:
            with self._lock:
                self.failures += 1
            log.exception("lineage event not recorded (processing goes on)")
            return False
        with self._lock:
            self.emitted += 1
        return True

    def _end(self, run: TableRun) -> float:
        return run.finished_at or self.clock()


class CommitRun:
    """The parent run of one processed commit; opens the table runs."""

    def __init__(
        self, recorder: LineageRecorder, plan: CommitPlan, ingestion: IngestionPlan | None = None
    ) -> None:
        self.recorder = recorder
        self.plan = plan
        self.ingestion = ingestion
        self.started = False
        self.failed_tables: list[str] = []
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def table_run(
        self,
        table: str,
        dataset: str,
        *,
        raw_path: str | None = None,
        contents_path: str | None = None,
        schema: str = "",
    ) -> TableRunContext:
        """A context manager around processing one table: START on entry.

        Args:
            table: the output table.
            dataset: the dataset (CSV stem).
            raw_path: the CSV's path (default ``raw/<dataset>.csv``).
            contents_path: the contents file's path (default ``raw/contents.csv``).
            schema: the branch's Hive schema, when known (the output's symlinks).
        """
        plan = TablePlan(
            repository=self.plan.repository,
            branch=self.plan.branch,
            source_commit=self.plan.source_commit,
            table=table,
            dataset=dataset,
            raw_path=raw_path or naming.default_raw_path(dataset),
            contents_path=contents_path or naming.DEFAULT_CONTENTS_PATH,
            schema=schema,
        )
        return TableRunContext(self, plan)

    def _ensure_started(self) -> None:
        with self._lock:
            if self.started:
                return
            self.started = True
        at = self.recorder.clock()
        ingestion = self.ingestion
        if ingestion is not None:
            self.recorder.emit(lambda: events.ingestion_event(ingestion, at))
        self.recorder.emit(lambda: events.commit_start_event(self.plan, at))

    def _table_failed(self, table: str) -> None:
        with self._lock:
            self.failed_tables.append(table)

    def close(self, error: str | None = None) -> None:
        """Send the parent's COMPLETE or FAIL, if any table run started."""
        if not self.started:
            return
        at = self.recorder.clock()
        failed = sorted(self.failed_tables)
        self.recorder.emit(lambda: events.commit_end_event(self.plan, at, failed, error))


class TableRunContext:
    """One table's run: START on entry; COMPLETE/FAIL on ``finish`` or on an exception.

    Leaving the block without ``finish`` and without an exception sends FAIL ("ended without a
    result"): a run must end, and a silent COMPLETE would claim outputs nobody described.
    """

    def __init__(self, commit: CommitRun, plan: TablePlan) -> None:
        self.commit = commit
        self.plan = plan
        self.finished = False

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def __enter__(self) -> TableRunContext:
        recorder = self.commit.recorder
        self.commit._ensure_started()
        at = recorder.clock()
        recorder.emit(lambda: events.table_start_event(self.plan, at, self.commit.plan))
        return self

    def finish(self, run: TableRun) -> None:
        """Hand over the finished run's description: sends COMPLETE, or FAIL if it failed."""
        if self.finished:
            log.warning("lineage: table run %s finished twice; ignored", self.plan.table)
            return
        self.finished = True
        recorder = self.commit.recorder
        if run.error is not None or run.manifest is None:
            self.commit._table_failed(self.plan.table)
        recorder.emit(
            lambda: events.table_end_event(
                run, recorder.names, self.commit.plan, at=recorder._end(run)
            )
        )

    def fail(self, message: str, stack_trace: str | None = None) -> None:
        """End the run with FAIL and ``message`` (when no ``TableRun`` describes it)."""
        if self.finished:
            return
        self.finished = True
        recorder = self.commit.recorder
        self.commit._table_failed(self.plan.table)
        at = recorder.clock()
        recorder.emit(
            lambda: events.table_fail_event(
                self.plan,
                recorder.names,
                at,
                message,
                parent=self.commit.plan,
                stack_trace=stack_trace,
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            trace = "".join(traceback.format_exception(exc_type, exc, tb))
            self.fail(_describe(exc), trace)
        elif not self.finished:
            self.fail("processing ended without a result")


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
