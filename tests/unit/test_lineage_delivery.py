"""Journal, cursor and delivery against a real HTTP server on an ephemeral loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openlineage.client.serde import Serde

from lakehook.cli import main
from lakehook.settings import Settings
from pipeline.lineage import build_recorder
from pipeline.lineage.delivery import (
    Deliverer,
    JournalSink,
    MarquezEndpoint,
    build_deliverer,
    wait_until_delivered,
)
from pipeline.lineage.journal import Journal
from pipeline.lineage.recorder import LineageRecorder
from tests.unit.test_lineage_events import sample_run

DEADLINE = 10.0


class LineageServer:
    """An OpenLineage endpoint on 127.0.0.1:<ephemeral>: records bodies, answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 201
        self.answer_delay = 0.0  # > the client's timeout: stored, but no answer in time
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                status = outer.status
                if self.path == "/api/v1/lineage" and 200 <= status < 300:
                    with outer.lock:
                        outer.received.append(json.loads(body))
                time.sleep(outer.answer_delay)
                self.send_response(status if self.path == "/api/v1/lineage" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # Marquez's /api/v1/events/lineage, unfiltered
                with outer.lock:
                    body = json.dumps({"events": outer.received}).encode()
                self.send_response(200 if self.path.startswith("/api/v1/events/lineage") else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def run_ids(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["run"]["runId"], e["eventType"]) for e in self.received]


@pytest.fixture
def server() -> Iterator[LineageServer]:
    srv = LineageServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "lineage" / "events.jsonl")


def record_two_tables(sink: JournalSink) -> list[tuple[str, str]]:
    """Six events (commit START, 2 × table START/COMPLETE, commit COMPLETE) in the journal."""
    recorder = LineageRecorder(sink)
    with recorder.commit_run("study", "main", "c0ffee") as commit:
        for table in ("dm", "ae"):
            with commit.table_run(table, table.upper()) as run:
                run.finish(sample_run(table=table, dataset=table.upper()))
    assert recorder.failures == 0
    lines = sink.journal.path.read_text(encoding="utf-8").splitlines()
    return [(json.loads(x)["run"]["runId"], json.loads(x)["eventType"]) for x in lines]


def fast_deliverer(journal: Journal, url: str) -> Deliverer:
    return Deliverer(
        journal, MarquezEndpoint(url, timeout=2.0), poll_interval=0.05, max_backoff=0.5
    )


# ---- journal ----------------------------------------------------------------------------------


def test_journal_holds_one_serialized_event_per_line(journal: Journal) -> None:
    written = record_two_tables(JournalSink(journal))
    assert len(written) == 6
    first = journal.path.read_text(encoding="utf-8").splitlines()[0]
    assert first == Serde.to_json(json.loads(first))  # the client's serializer, sorted keys
    state = journal.state()
    assert (state.delivered, state.pending, state.size) == (0, 6, journal.path.stat().st_size)


def test_a_torn_last_line_is_never_read_and_never_glued_to_the_next(journal: Journal) -> None:
    journal.path.parent.mkdir(parents=True)
    journal.path.write_bytes(b'{"complete": 1}\n{"torn": ')
    assert [e.text for e in journal.entries(0)] == ['{"complete": 1}']
    Journal(journal.path).append('{"next": 2}')
    texts = [e.text for e in journal.entries(0)]
    assert texts == ['{"complete": 1}', '{"torn":', '{"next": 2}']


def test_cursor_survives_a_new_journal_object(journal: Journal) -> None:
    journal.append('{"a": 1}')
    journal.append('{"b": 2}')
    first = next(iter(journal.entries(0)))
    journal.set_delivered_offset(first.end)
    again = Journal(journal.path)
    assert again.delivered_offset() == first.end
    assert [e.text for e in again.entries(again.delivered_offset())] == ['{"b": 2}']
    assert again.state().pending == 1


# ---- delivery ---------------------------------------------------------------------------------


def test_down_then_up_delivers_everything_exactly_once_in_order(
    journal: Journal, server: LineageServer, closed_url: str
) -> None:
    written = record_two_tables(JournalSink(journal))

    down = fast_deliverer(journal, closed_url).resend_pending(max_seconds=1.0)
    assert down.delivered == 0
    assert down.remaining == 6
    assert down.error is not None
    assert "did not answer" in down.error
    assert journal.delivered_offset() == 0

    up = fast_deliverer(journal, server.url).resend_pending()
    assert (up.delivered, up.remaining, up.error) == (6, 0, None)
    assert server.run_ids() == written
    assert journal.delivered_offset() == journal.size()

    again = fast_deliverer(journal, server.url).resend_pending()
    assert again.delivered == 0
    assert server.run_ids() == written  # nothing sent twice


def test_server_errors_stop_the_pass_and_keep_the_order(
    journal: Journal, server: LineageServer
) -> None:
    written = record_two_tables(JournalSink(journal))
    server.status = 503
    report = fast_deliverer(journal, server.url).resend_pending(max_seconds=1.0)
    assert report.error is not None
    assert "503" in report.error
    assert report.remaining == 6
    server.status = 201
    assert fast_deliverer(journal, server.url).resend_pending().delivered == 6
    assert server.run_ids() == written


def test_a_refused_event_is_set_aside_and_delivery_goes_on(
    journal: Journal, server: LineageServer
) -> None:
    record_two_tables(JournalSink(journal))
    journal.append("not json at all")
    server.status = 400
    report = fast_deliverer(journal, server.url).resend_pending()
    assert (report.rejected, report.remaining, report.error) == (7, 0, None)
    rejected = journal.rejected_path.read_text(encoding="utf-8")
    assert "not a JSON document" in rejected
    assert rejected.count("# Marquez answered 400") == 6


def test_background_deliverer_sends_what_the_sink_journals(
    journal: Journal, server: LineageServer
) -> None:
    deliverer = fast_deliverer(journal, server.url)
    sink = JournalSink(journal, deliverer)
    sink.start()
    try:
        written = record_two_tables(sink)
        assert wait_until_delivered(deliverer, DEADLINE)
    finally:
        sink.stop()
    assert not deliverer.running
    assert server.run_ids() == written


def test_background_deliverer_catches_up_after_an_outage(
    journal: Journal, server: LineageServer
) -> None:
    server.status = 503
    deliverer = fast_deliverer(journal, server.url)
    sink = JournalSink(journal, deliverer)
    sink.start()
    try:
        written = record_two_tables(sink)  # emitting never waits for the backend
        deadline = time.monotonic() + DEADLINE
        while deliverer.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert deliverer.last_error is not None
        assert journal.state().pending == 6
        server.status = 201
        assert wait_until_delivered(deliverer, DEADLINE)
    finally:
        sink.stop()
    assert server.run_ids() == written


def test_concurrent_passes_never_send_an_event_twice(
    journal: Journal, server: LineageServer
) -> None:
    written = record_two_tables(JournalSink(journal))
    passes = [fast_deliverer(journal, server.url) for _ in range(3)]
    threads = [threading.Thread(target=d.resend_pending) for d in passes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert server.run_ids() == written
    assert sum(d.delivered_total for d in passes) == 6


def test_events_journaled_by_another_process_are_delivered_without_a_wake(
    journal: Journal, server: LineageServer
) -> None:
    deliverer = fast_deliverer(journal, server.url)
    deliverer.start()
    try:
        other_process = JournalSink(Journal(journal.path))  # its own objects, no deliverer
        written = record_two_tables(other_process)
        assert wait_until_delivered(deliverer, DEADLINE)
    finally:
        deliverer.stop()
    assert server.run_ids() == written


def test_an_event_taken_without_an_answer_is_not_sent_again(
    journal: Journal, server: LineageServer
) -> None:
    written = record_two_tables(JournalSink(journal))
    deliverer = Deliverer(journal, MarquezEndpoint(server.url, timeout=0.3))
    deliverer.resend_pending()  # the process starts: the first event is checked, then sent
    server.received.clear()
    journal.set_delivered_offset(0)
    server.answer_delay = 1.0  # Marquez stores the event but answers too late
    first = deliverer.resend_pending()
    assert first.error is not None
    assert "did not answer" in first.error
    assert server.run_ids() == written[:1]
    server.answer_delay = 0.0
    assert deliverer.resend_pending().remaining == 0
    assert server.run_ids() == written  # the first event once, the others after it


def test_a_restarted_deliverer_does_not_resend_what_marquez_already_has(
    journal: Journal, server: LineageServer
) -> None:
    """A crash between Marquez's 2xx and the cursor write: the new process asks first."""
    written = record_two_tables(JournalSink(journal))
    assert fast_deliverer(journal, server.url).resend_pending().remaining == 0
    journal.set_delivered_offset(0)  # as if the cursor write had been lost
    report = fast_deliverer(journal, server.url).resend_pending()
    assert server.run_ids()[:6] == written
    assert report.delivered == 6  # the first was found in Marquez, the rest re-sent
    assert len(server.run_ids()) == 11  # without the check the first would be there twice


def test_the_server_bus_starts_and_stops_delivery_and_counts_it(
    journal: Journal, server: LineageServer
) -> None:
    from cherrypy.process.wspbus import Bus

    from server.lineage import LineageDeliveryPlugin, LineageMetrics
    from server.metrics import Metrics

    deliverer = fast_deliverer(journal, server.url)
    metrics = Metrics()
    metrics.registry.register(LineageMetrics(deliverer))
    bus = Bus()
    LineageDeliveryPlugin(bus, deliverer).subscribe()
    bus.start()
    try:
        assert deliverer.running
        written = record_two_tables(JournalSink(journal))
        assert wait_until_delivered(deliverer, DEADLINE)
        text = metrics.render().decode()
    finally:
        bus.exit()
    assert not deliverer.running
    assert server.run_ids() == written
    assert "lakehook_lineage_events_delivered_total 6.0" in text
    assert "lakehook_lineage_events_pending 0.0" in text
    assert "lakehook_lineage_events_failed_total 0.0" in text


# ---- composition and CLI ----------------------------------------------------------------------


def test_build_recorder_journals_under_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    recorder = build_recorder(settings)
    recorder.record(sample_run())
    assert recorder.failures == 0
    assert settings.lineage_journal == tmp_path / "lineage" / "events.jsonl"
    assert len(settings.lineage_journal.read_text(encoding="utf-8").splitlines()) == 2
    assert build_deliverer(settings) is None


def cli(tmp_path: Path, marquez_url: str, *args: str) -> Any:
    env = {"LAKEHOOK_STATE_DIR": str(tmp_path), "LAKEHOOK_MARQUEZ_URL": marquez_url}
    return CliRunner().invoke(main, ["lineage", *args], env=env)


def test_cli_flush_fails_while_marquez_is_down_and_says_what_remains(
    tmp_path: Path, closed_url: str
) -> None:
    build_recorder(Settings(state_dir=tmp_path)).record(sample_run())
    result = cli(tmp_path, closed_url, "flush", "--timeout", "1")
    assert result.exit_code == 1
    assert "2 event(s) remain" in result.output
    status = cli(tmp_path, closed_url, "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.output)["pending"] == 2


def test_cli_flush_delivers_and_status_shows_nothing_pending(
    tmp_path: Path, server: LineageServer
) -> None:
    build_recorder(Settings(state_dir=tmp_path)).record(sample_run())
    result = cli(tmp_path, server.url, "flush")
    assert result.exit_code == 0, result.output
    assert "delivered 2 event(s)" in result.output
    assert len(server.received) == 2
    status = json.loads(cli(tmp_path, server.url, "status", "--json").output)
    assert status["pending"] == 0
    assert status["delivered_offset"] == status["size"] > 0


def test_cli_flush_without_marquez_is_a_clear_error(tmp_path: Path) -> None:
    result = cli(tmp_path, "", "flush")
    assert result.exit_code == 1
    assert "LAKEHOOK_MARQUEZ_URL" in result.output
