"""The recorder: event order, FAIL on errors, and processing never broken by lineage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openlineage.client.serde import Serde

from pipeline.lineage import naming
from pipeline.lineage.recorder import LineageRecorder
from tests.unit.test_lineage_events import sample_run


class ListSink:
    """A ``LineageSink`` that keeps the wire form of every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: object) -> None:
        self.events.append(json.loads(Serde.to_json(event)))

    def trace(self) -> list[tuple[str, str]]:
        return [(e["job"]["name"], e["eventType"]) for e in self.events]


class BrokenSink:
    """A sink that fails every time, as a full disk or a bug would."""

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: object) -> None:
        self.calls += 1
        raise OSError(28, "No space left on device")


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def recorder(sink: ListSink) -> LineageRecorder:
    return LineageRecorder(sink, clock=Clock())


def test_start_then_complete_nested_in_the_commit_run(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    with recorder.commit_run("study", "main", "c0ffee") as commit:
        with commit.table_run("dm", "DM") as dm:
            dm.finish(sample_run())
        with commit.table_run("ae", "AE") as ae:
            ae.finish(sample_run(table="ae", dataset="AE", raw_path="raw/AE.csv"))
    assert sink.trace() == [
        ("study", "START"),
        ("study.dm", "START"),
        ("study.dm", "COMPLETE"),
        ("study.ae", "START"),
        ("study.ae", "COMPLETE"),
        ("study", "COMPLETE"),
    ]
    table_ids = {e["run"]["runId"] for e in sink.events if e["job"]["name"] == "study.dm"}
    assert table_ids == {naming.table_run_id("study", "c0ffee", "dm")}
    assert sink.events[2]["eventTime"] == "2025-06-15T15:06:42.500+00:00"  # TableRun.finished_at


def test_start_names_the_default_raw_path(recorder: LineageRecorder, sink: ListSink) -> None:
    with (
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM") as run,
    ):
        run.finish(sample_run())
    start = sink.events[1]
    assert [i["name"] for i in start["inputs"]] == ["main/raw/DM.csv", "main/raw/contents.csv"]


def test_exception_inside_a_table_run_sends_fail_then_propagates(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    with (
        pytest.raises(ValueError, match="bad header"),
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM"),
    ):
        raise ValueError("bad header")
    assert sink.trace() == [
        ("study", "START"),
        ("study.dm", "START"),
        ("study.dm", "FAIL"),
        ("study", "FAIL"),
    ]
    error = sink.events[2]["run"]["facets"]["errorMessage"]
    assert error["message"] == "ValueError: bad header"
    assert "Traceback" in error["stackTrace"]
    assert "ValueError: bad header" in sink.events[3]["run"]["facets"]["errorMessage"]["message"]


def test_a_failed_table_run_fails_the_commit_run(recorder: LineageRecorder, sink: ListSink) -> None:
    with recorder.commit_run("study", "main", "c0ffee") as commit:
        with commit.table_run("dm", "DM") as dm:
            dm.finish(sample_run(manifest=None, error="raw/DM.csv, line 3: broken quoting"))
        with commit.table_run("ae", "AE") as ae:
            ae.finish(sample_run(table="ae", dataset="AE"))
    assert sink.trace()[-1] == ("study", "FAIL")
    assert sink.events[2]["eventType"] == "FAIL"
    assert sink.events[2]["run"]["facets"]["errorMessage"]["message"] == (
        "raw/DM.csv, line 3: broken quoting"
    )
    assert sink.events[-1]["run"]["facets"]["errorMessage"]["message"] == "1 table(s) failed: dm"


def test_leaving_without_a_result_is_a_fail(recorder: LineageRecorder, sink: ListSink) -> None:
    with recorder.commit_run("study", "main", "c0ffee") as commit, commit.table_run("dm", "DM"):
        pass
    assert sink.trace()[2] == ("study.dm", "FAIL")
    message = sink.events[2]["run"]["facets"]["errorMessage"]["message"]
    assert message == "processing ended without a result"


def test_finish_twice_sends_one_terminal_event(recorder: LineageRecorder, sink: ListSink) -> None:
    with (
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM") as run,
    ):
        run.finish(sample_run())
        run.finish(sample_run(error="late"))
    assert [t for t in sink.trace() if t[0] == "study.dm"] == [
        ("study.dm", "START"),
        ("study.dm", "COMPLETE"),
    ]


def test_a_commit_without_table_runs_sends_nothing(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    with recorder.commit_run("study", "main", "c0ffee"):
        pass
    assert sink.events == []


def test_contexts_entered_and_closed_like_the_service_does(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    """BranchService enters every table run in one ExitStack and finishes them later."""
    import contextlib

    with contextlib.ExitStack() as stack:
        commit = stack.enter_context(recorder.commit_run("study", "main", "c0ffee"))
        runs = [stack.enter_context(commit.table_run(t, t.upper())) for t in ("dm", "ae")]
        for run, table in zip(runs, ("dm", "ae"), strict=True):
            run.finish(sample_run(table=table))
    assert sink.trace() == [
        ("study", "START"),
        ("study.dm", "START"),
        ("study.ae", "START"),
        ("study.dm", "COMPLETE"),
        ("study.ae", "COMPLETE"),
        ("study", "COMPLETE"),
    ]


def test_a_failing_sink_never_breaks_processing() -> None:
    sink = BrokenSink()
    recorder = LineageRecorder(sink, clock=Clock())
    processed = []
    with (
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM") as run,
    ):
        processed.append("dm")
        run.finish(sample_run())
    assert processed == ["dm"]
    assert sink.calls == 4
    assert recorder.failures == 4
    assert recorder.emitted == 0


def test_a_failing_sink_keeps_the_processing_error() -> None:
    recorder = LineageRecorder(BrokenSink(), clock=Clock())
    with (
        pytest.raises(KeyError),
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM"),
    ):
        raise KeyError("patient")
    assert recorder.failures == 4


def test_an_event_that_cannot_be_built_is_counted_not_raised(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    with (
        recorder.commit_run("study", "main", "c0ffee") as commit,
        commit.table_run("dm", "DM") as run,
    ):
        run.finish(sample_run(finished_at=float("nan")))  # no valid event time
    assert recorder.failures == 1
    assert ("study.dm", "COMPLETE") not in sink.trace()
    assert sink.trace()[-1] == ("study", "COMPLETE")


def test_record_replays_a_finished_run_with_its_own_times(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    recorder.record(sample_run())
    assert sink.trace() == [("study.dm", "START"), ("study.dm", "COMPLETE")]
    assert sink.events[0]["eventTime"] == "2025-06-15T15:06:40.000+00:00"
    assert sink.events[1]["eventTime"] == "2025-06-15T15:06:42.500+00:00"


def test_the_ingestion_run_goes_first_with_the_first_table_run(
    recorder: LineageRecorder, sink: ListSink
) -> None:
    from tests.unit.test_lineage_events import INGESTION

    with (
        recorder.commit_run("study", "main", "c0ffee", INGESTION) as commit,
        commit.table_run("dm", "DM") as dm,
    ):
        dm.finish(sample_run())
    assert sink.trace() == [
        ("study.ingest", "COMPLETE"),
        ("study", "START"),
        ("study.dm", "START"),
        ("study.dm", "COMPLETE"),
        ("study", "COMPLETE"),
    ]
    with recorder.commit_run("study", "main", "c0ffee", INGESTION):
        pass  # nothing processed (a reconcile): no ingestion run either
    assert len(sink.events) == 5
