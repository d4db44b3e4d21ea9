"""Server parts on fakes: events, action files, the job queue, the HTTP app, the reconciler."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cherrypy
import pytest

from lakehook.errors import InvalidEvent, ServiceUnavailable, TerminalError
from lakehook.settings import Settings
from pipeline.model import GateDecision, RefStatus
from pipeline.provenance import Provenance
from server import events as ev
from server.actions import ActionFile, install, render, templates, validate
from server.app import Context, Readiness, mount, quiet_access_log
from server.jobs import DONE, FAILED, PENDING, RUNNING, JobQueue
from server.metrics import Metrics
from server.store import Database, SqliteStatusStore
from server.worker import Reconciler
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.processor import FakeProcessor
from tests.ports import free_port

# ---- events -----------------------------------------------------------------------------------


def test_parse_post_commit_and_tags() -> None:
    event = ev.parse_event(
        {
            "event_type": "post-commit",
            "repository_id": "sss",
            "branch_id": "main",
            "commit_id": "c1",
            "commit_metadata": {"a": "b"},
        }
    )
    assert (event.ref, event.ref_type, event.commit_id) == ("main", "branch", "c1")
    tag = ev.parse_event({"event_type": "post-create-tag", "repository_id": "sss", "tag_id": "v1"})
    assert (tag.ref, tag.ref_type) == ("v1", "tag")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "JSON object"),
        ({"event_type": "post-revert", "repository_id": "sss"}, "not handled"),
        ({"event_type": "post-commit", "branch_id": "b"}, "repository_id"),
        ({"event_type": "post-commit", "repository_id": "sss"}, "branch_id"),
        ({"event_type": "post-commit", "repository_id": 3, "branch_id": "b"}, "string"),
        # lakeFS's rule: 3 to 63 characters (a 1-character id was let through until 2026-12-02)
        ({"event_type": "post-commit", "repository_id": "s", "branch_id": "b"}, "repository id"),
        ({"event_type": "post-commit", "repository_id": "a" * 64, "branch_id": "b"}, "repository"),
        (
            {
                "event_type": "post-commit",
                "repository_id": "sss",
                "branch_id": "b",
                "commit_metadata": {"a": 1},
            },
            "commit_metadata",
        ),
    ],
)
def test_bad_payloads_say_why(payload: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        ev.parse_event(payload)


def test_lakehooks_own_events_are_ignored_and_a_forged_marker_is_not() -> None:
    provenance = Provenance(b"k" * 32)
    signed = provenance.commit_metadata("sss", "main", "c" * 64, "p" * 64, {}, ["dm"])
    own_branch = ev.Event("post-commit", "sss", branch="_lakehook-main-abc")
    own_commit = ev.Event("post-merge", "sss", branch="main", metadata=signed)
    user = ev.Event("post-commit", "sss", branch="main")
    assert ev.ignored_because(own_branch, provenance)
    assert ev.ignored_because(own_commit, provenance)
    assert ev.ignored_because(user, provenance) is None
    # a marker typed by a person, or lakehook's metadata signed with another key or for
    # another repository, is a person's commit
    for metadata in (
        {"lakehook.origin": "lakehook", "lakehook.source_commit": "c" * 64},
        Provenance(b"other" * 8).commit_metadata("sss", "main", "c" * 64, "p" * 64, {}),
        {**signed, "lakehook.source_commit": "d" * 64},
    ):
        forged = ev.Event("post-commit", "sss", branch="main", metadata=metadata)
        assert ev.ignored_because(forged, provenance) is None
    assert ev.ignored_because(replace(own_commit, repository="t"), provenance) is None
    # where lakehook has its own lakeFS user, the committer must be that user too
    enterprise = Provenance(b"k" * 32, lakehook_user="lakehook-bot")
    assert ev.ignored_because(replace(own_commit, committer="alice"), enterprise) is None
    assert ev.ignored_because(replace(own_commit, committer="lakehook-bot"), enterprise)


# ---- action files -----------------------------------------------------------------------------


def test_every_action_event_has_a_handler_and_every_handler_an_event() -> None:
    events = [e for f in render("http://127.0.0.1:8090") for e in f.events]
    assert sorted(events) == sorted(ev.HANDLED)
    for f in render("http://127.0.0.1:8090"):
        assert "{{ ENV.LAKEFSACTION_LAKEHOOK_TOKEN }}" in f.text
        assert "http://127.0.0.1:8090/webhooks/lakefs" in f.text


GOOD = """name: a-b
on:
  post-commit:
hooks:
  - id: hook_1
    type: webhook
    properties: {url: "http://x/webhooks/lakefs", timeout: 5s}
"""


@pytest.mark.parametrize(
    ("path", "text", "problem"),
    [
        ("_lakefs_actions/a.yaml", GOOD.replace("name: a-b\n", ""), "'name' is required"),
        ("_lakefs_actions/a.yaml", GOOD.replace("hook_1", "h.1"), "hook id"),
        ("_lakefs_actions/a.yaml", GOOD + "---\n" + GOOD, "one action per file"),
        ("_lakefs_actions/sub/a.yaml", GOOD, "directly in"),
        ("_lakefs_actions/a.yaml", GOOD.replace("post-commit", "post-push"), "not supported"),
        ("_lakefs_actions/a.yaml", GOOD.replace(", timeout: 5s", ""), "timeout"),
        ("_lakefs_actions/a.yaml", GOOD.replace("type: webhook", "type: lua"), "webhook"),
    ],
)
def test_validation_follows_lakefs_rules(path: str, text: str, problem: str) -> None:
    problems = validate([ActionFile(path, text)])
    assert any(problem in p for p in problems), problems


def test_duplicate_action_names_across_files() -> None:
    problems = validate(
        [ActionFile("_lakefs_actions/a.yaml", GOOD), ActionFile("_lakefs_actions/b.yaml", GOOD)]
    )
    assert any("also used" in p for p in problems)


def test_shipped_templates_are_valid() -> None:
    assert len(templates()) == 7
    assert validate(render("http://lakehook:8090")) == []


def test_install_commits_once() -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("sss", "local://sss")
    first = install(lakefs, "sss", "main", "http://127.0.0.1:8090")
    assert first is not None
    assert install(lakefs, "sss", "main", "http://127.0.0.1:8090") is None
    assert len(lakefs.list_objects("sss", "main", "_lakefs_actions/")) == 7


# ---- job queue --------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "jobs.sqlite")


def test_pending_jobs_for_one_ref_coalesce(db: Database) -> None:
    queue = JobQueue(db)
    first, merged = queue.enqueue("sss", "branch", "main", "sync_branch")
    second, merged_again = queue.enqueue("sss", "branch", "main", "sync_branch")
    other, _ = queue.enqueue("sss", "branch", "dev", "sync_branch")
    assert (merged, merged_again, second) == (False, True, first)
    assert other != first
    created, _ = queue.enqueue("sss", "branch", "main", "create_branch", {"source_ref": "x"})
    assert created == first
    job = queue.get(first)
    assert job is not None
    assert job.kind == "create_branch"  # the stronger kind wins


def test_one_running_job_per_ref_and_a_successor(db: Database) -> None:
    queue = JobQueue(db)
    queue.enqueue("sss", "branch", "main", "sync_branch")
    job = queue.claim("w1")
    assert job is not None
    successor, merged = queue.enqueue("sss", "branch", "main", "sync_branch")
    assert not merged
    assert queue.claim("w2") is None  # main is being worked on
    assert queue.complete(job.id, "w1")
    nxt = queue.claim("w2")
    assert nxt is not None
    assert nxt.id == successor


def test_expired_lease_is_claimed_again_and_completes_once(db: Database) -> None:
    queue = JobQueue(db, lease_seconds=0.01)
    queue.enqueue("sss", "branch", "main", "sync_branch")
    job = queue.claim("dead-worker")
    assert job is not None
    time.sleep(0.05)  # let the lease run out (the worker "died")
    again = queue.claim("w2")
    assert again is not None
    assert again.id == job.id
    assert again.attempts == 2
    assert not queue.complete(job.id, "dead-worker")  # the old holder can no longer finish it
    assert queue.complete(job.id, "w2")
    assert not queue.complete(job.id, "w2")
    assert queue.counts()[DONE] == 1


def test_recover_frees_jobs_of_dead_processes(db: Database) -> None:
    queue = JobQueue(db, lease_seconds=3600)
    queue.enqueue("sss", "branch", "main", "sync_branch")
    job = queue.claim("999999999:worker-0")  # a pid that does not exist
    assert job is not None
    assert queue.counts()[RUNNING] == 1
    assert queue.recover() == 1
    assert queue.counts()[PENDING] == 1


def test_status_store_round_trip_and_schema_names(db: Database) -> None:
    store = SqliteStatusStore(db)
    status = RefStatus("sss", "main", "branch", "s_main", "h", "c", "synced", updated_at=1.0)
    store.put_status(status)
    assert store.get_status("sss", "main") == status
    store.save_schema_name("sss", "branch", "main", "s_main")
    store.save_schema_name("sss", "branch", "main", "other")  # the first name stays
    assert store.schema_mapping() == {("sss", "branch", "main"): "s_main"}
    store.delete_status("sss", "main")
    assert store.list_statuses("sss") == []


# ---- reconciler -------------------------------------------------------------------------------


def test_reconciler_enqueues_what_differs(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("sss", "local://sss")
    lakefs.create_repository("plain", "local://plain")
    install(lakefs, "sss", "main", "http://x:1")
    lakefs.create_branch("sss", "dev", "main")
    lakefs.create_tag("sss", "v1", "main")
    store, queue = SqliteStatusStore(db), JobQueue(db)
    head = lakefs.branch_head("sss", "main")
    store.put_status(RefStatus("sss", "main", "branch", "s_main", head, head, "synced"))
    store.put_status(RefStatus("sss", "gone", "branch", "s_gone", "x", "x", "synced"))
    reconciler = Reconciler(lakefs, queue, store, Metrics())
    jobs = reconciler.sweep()
    kinds = {(j.ref, j.kind) for j in (queue.get(i) for i in jobs) if j is not None}
    assert kinds == {("dev", "sync_branch"), ("v1", "sync_tag"), ("gone", "delete_branch")}
    assert reconciler.repositories() == ["sss"]


class LockedElsewhere(JobQueue):
    """Another replica's reconciler holds the sweep lock."""

    @contextmanager
    def sweep_lock(self) -> Iterator[bool]:
        yield False


def test_a_timer_sweep_skips_while_another_replicas_reconciler_sweeps(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("sss", "local://sss")
    install(lakefs, "sss", "main", "http://x:1")
    lakefs.create_branch("sss", "dev", "main")
    queue, metrics = LockedElsewhere(db), Metrics()
    reconciler = Reconciler(lakefs, queue, SqliteStatusStore(db), metrics)
    assert reconciler.sweep() == []
    assert queue.counts()[PENDING] == 0
    assert 'lakehook_reconcile_sweeps_total{outcome="skipped"} 1.0' in metrics.render().decode()
    # an explicit reconcile (`lakehook reconcile`, the API) is not a timer sweep: it runs
    assert len(reconciler.sweep("sss")) == 2


def test_reconciler_resyncs_a_synced_ref_whose_metastore_differs(db: Database) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("sss", "local://sss")
    install(lakefs, "sss", "main", "http://x:1")
    lakefs.create_branch("sss", "dev", "main")
    store, queue, metrics = SqliteStatusStore(db), JobQueue(db), Metrics()
    for branch in ("main", "dev"):
        head = lakefs.branch_head("sss", branch)
        store.put_status(RefStatus("sss", branch, "branch", f"s_{branch}", head, head, "synced"))
    processor = FakeProcessor()
    reconciler = Reconciler(lakefs, queue, store, metrics, processor=processor)
    assert reconciler.sweep() == []  # heads unchanged, metastore as the manifests say

    processor.metastore_differs[("sss", "dev")] = ["dm: table missing"]
    jobs = reconciler.sweep()
    assert [(j.ref, j.kind, j.event) for j in map(queue.get, jobs) if j] == [
        ("dev", "sync_branch", "reconcile")
    ]
    assert metrics.metastore_repairs._value.get() == 1
    assert ("metastore_problems", "sss", "main") in processor.calls


# ---- the HTTP app -----------------------------------------------------------------------------


class App:
    def __init__(self, url: str, ctx: Context, processor: FakeProcessor) -> None:
        self.url, self.ctx, self.processor = url, ctx, processor

    def post(self, payload: Any, token: str = "t0ken", raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/webhooks/lakefs",
            data=data,
            method="POST",
            headers={"X-Lakehook-Token": token, "Content-Type": "application/json"},
        )
        return self._open(request)

    def get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        if headers is None:
            headers = {"X-Lakehook-Token": "t0ken", "Content-Type": "application/json"}
        data = b"{}" if method == "POST" else None
        return self._open(
            urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        )

    @staticmethod
    def _open(request: urllib.request.Request) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    state = tmp_path_factory.mktemp("state")
    port = free_port()
    settings = replace(
        Settings.load({}, None),
        listen=f"127.0.0.1:{port}",
        state_dir=state,
        webhook_token="t0ken",
        max_body_bytes=4096,
        reconcile_interval=0,
    )
    db = Database(settings.jobs_db)
    store, queue = SqliteStatusStore(db), JobQueue(db)
    lakefs = FakeLakeFS()
    processor = FakeProcessor()
    metrics = Metrics()
    ctx = Context(
        settings,
        store,
        queue,
        processor,
        lakefs,
        metrics,
        Reconciler(lakefs, queue, store, metrics),
    )
    mount(ctx)
    cherrypy.engine.start()
    cherrypy.engine.wait(cherrypy.engine.states.STARTED)
    try:
        yield App(f"http://127.0.0.1:{port}", ctx, processor)
    finally:
        cherrypy.engine.stop()
        cherrypy.server.httpserver = None
        cherrypy.tree.apps.clear()


def _wait_done(app: App, job_id: int) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = app.ctx.queue.get(job_id)
        if job is not None and job.state in (DONE, FAILED):
            return job.state
        app.ctx.wake()
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


COMMIT = {
    "event_type": "post-commit",
    "repository_id": "sss",
    "branch_id": "main",
    "commit_id": "c",
}


def test_token_size_and_payload_are_checked(app: App) -> None:
    assert app.post(COMMIT, token="wrong")[0] == 401
    assert app.post(COMMIT, token="")[0] == 401
    status, body = app.post(None, raw=b"{not json")
    assert status == 400
    assert "JSON" in body["error"]
    status, body = app.post({"event_type": "post-commit", "repository_id": "sss"})
    assert status == 400
    assert "branch_id" in body["error"]
    assert app.post(None, raw=b"x" * 10000)[0] == 413


def test_answers_are_encoded_by_the_c_json_encoder(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CherryPy's own json_out handler is the pure-Python iterencode, ~10 % of the intake's
    interpreter time per webhook (issue 16): the intake encodes in one C call instead."""

    def pure_python(value: Any) -> Any:
        raise AssertionError("CherryPy's iterencode was used")

    monkeypatch.setattr(cherrypy._json, "_encode", pure_python)
    status, body = app.post({**COMMIT, "branch_id": "json-encoder"})
    assert status == 202
    assert set(body) == {"job_id", "coalesced"}
    assert app.get("/healthz")[0] == 200


def test_the_access_line_is_not_even_formatted_above_info(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CherryPy formats each request's access line before any logger looks at the level: at
    WARNING that was ~11 % of the intake's interpreter time per webhook for a line nobody
    wrote (issue 16). At INFO the line is still formatted and written."""
    formatted: list[str] = []
    real = cherrypy._cplogging.LogManager.time

    def counted(self: Any) -> str:
        formatted.append("line")
        return str(real(self))

    monkeypatch.setattr(cherrypy._cplogging.LogManager, "time", counted)
    assert app.get("/healthz")[0] == 200
    assert formatted, "at INFO the access line is formatted"
    formatted.clear()
    quiet_access_log("WARNING")
    try:
        assert app.get("/healthz")[0] == 200
        assert app.post({**COMMIT, "branch_id": "access-log"})[0] == 202
        assert formatted == []
    finally:
        for mounted in cherrypy.tree.apps.values():
            if isinstance(mounted, cherrypy.Application):
                vars(mounted.log).pop("access", None)
    quiet_access_log("INFO")  # changes nothing
    assert app.get("/healthz")[0] == 200
    assert formatted == ["line"]


def test_a_webhook_skips_cherrypys_request_machinery(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook is a WSGI application grafted onto CherryPy's tree (``server.webhook``):
    CherryPy's per-request machinery was the larger part of the intake's CPU per webhook
    (2.6 -> 1.6 ms measured, issue 16, docs/benchmarks.md). Health and the API still use it."""
    runs: list[str] = []
    real = cherrypy._cprequest.Request.run

    def counted(self: Any, method: str, path: str, *args: Any) -> Any:
        runs.append(path)
        return real(self, method, path, *args)

    monkeypatch.setattr(cherrypy._cprequest.Request, "run", counted)
    assert app.post({**COMMIT, "branch_id": "lean"})[0] == 202
    pre_merge = {"event_type": "pre-merge", "repository_id": "sss", "branch_id": "main"}
    assert app.post(pre_merge)[0] in (200, 412)
    assert runs == []
    assert app.get("/healthz")[0] == 200
    assert runs == ["/healthz"]


def test_the_webhooks_wrong_paths_and_methods_are_json_answers(app: App) -> None:
    assert app.get("/webhooks/other", method="POST") == (
        404,
        {"error": "unknown path: webhooks are POSTed to /webhooks/lakefs"},
    )
    assert app.get("/webhooks", method="POST")[0] == 404
    request = urllib.request.Request(f"{app.url}/webhooks/lakefs", method="GET")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "POST"
    assert refused.value.headers["Content-Type"] == "application/json"
    assert json.loads(refused.value.read()) == {"error": "use POST"}


def test_a_fault_in_the_webhook_handler_is_a_json_500_and_the_intake_goes_on(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug with a secret path /srv/x")

    with monkeypatch.context() as patched:
        patched.setattr(app.ctx.queue, "enqueue", broken)
        status, body = app.post({**COMMIT, "branch_id": "faulty"})
    assert status == 500
    assert body == {"error": "internal error: see the server's log"}
    assert "the webhook handler failed" in caplog.text
    assert app.post({**COMMIT, "branch_id": "after-the-fault"})[0] == 202


def test_a_webhooks_access_line_is_written_at_info_only(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lakehook.access"):
        assert app.post({**COMMIT, "branch_id": "quiet"})[0] == 202
    assert not [r for r in caplog.records if r.name == "lakehook.access"]
    with caplog.at_level(logging.INFO, logger="lakehook.access"):
        assert app.post({**COMMIT, "branch_id": "logged"})[0] == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "lakehook.access"]
    assert len(lines) == 1
    assert lines[0].startswith('127.0.0.1 "POST /webhooks/lakefs HTTP/1.1" 202 ')


def test_slow_clients_neither_starve_the_intake_nor_stay(app: App) -> None:
    """A client that sends part of a request and stops holds one HTTP thread until
    LAKEHOOK_HTTP_REQUEST_TIMEOUT: with 16 threads and CherryPy's 10 s, 20 such connections
    held /healthz and every webhook for 9.5 s (measured 2026-12-02). And cheroot gave every
    new connection a thread at once, so connections that never sent a byte did the same,
    however many threads there were. Now 40 half-sent requests and 200 silent connections
    leave the intake answering at once, and each of them is dropped after the timeout."""
    settings = app.ctx.settings
    port = int(settings.listen.rpartition(":")[2])
    slow = []
    try:
        for i in range(240):
            client = socket.create_connection(("127.0.0.1", port), timeout=30)
            start = b"POST /webhooks/lakefs HTTP/1.1\r\nHost: x\r\n"
            if i % 6 == 1:  # headers complete, the body never
                start += b"Content-Type: application/json\r\nContent-Length: 900\r\n\r\n{"
            if i % 6 < 2:  # 40 half-sent requests; the other 200 send nothing
                client.sendall(start)
            slow.append(client)
        started = time.monotonic()
        assert app.get("/healthz")[0] == 200
        assert app.post({**COMMIT, "branch_id": "slow-clients"})[0] == 202
        assert time.monotonic() - started < settings.http_request_timeout / 2
        for client in slow:  # each is dropped: the server closes it (after a 408 or not)
            while client.recv(4096):
                pass
        assert time.monotonic() - started < settings.http_request_timeout + 10
    finally:
        for client in slow:
            client.close()


def test_a_chunked_body_past_the_limit_is_413_not_500(app: App) -> None:
    """A body sent in chunks has no Content-Length for CherryPy to refuse up front: cheroot
    stops reading at the limit with a bare OSError, which the handler let through as a 500
    (found 2026-12-02 with a 200 MB chunked webhook)."""
    port = int(app.ctx.settings.listen.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /webhooks/lakefs HTTP/1.1\r\nHost: x\r\nX-Lakehook-Token: t0ken\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"[" * 1024
        with contextlib.suppress(OSError):  # the server may close before all is sent
            for _ in range(8):  # 8 KiB against the fixture's 4 KiB limit
                client.sendall(b"400\r\n" + chunk + b"\r\n")
        answer = b""
        while part := client.recv(4096):  # the answer closes the connection
            answer += part
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer
    assert b"larger than 4096 bytes" in rest
    assert app.get("/healthz")[0] == 200


@pytest.mark.parametrize(
    ("chunks", "status", "says"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", 400, b"Bad chunked transfer size"),
        (b"3\r\nabcXY0\r\n\r\n", 400, b"Bad chunked transfer coding"),
        (b"1" * 9000 + b"\r\n", 413, b"larger than 4096 bytes"),  # an endless size line
    ],
)
def test_broken_chunked_coding_is_4xx_not_500(
    app: App, chunks: bytes, status: int, says: bytes
) -> None:
    """cheroot raises ValueError (or MaxSizeExceeded) for broken chunked coding while the
    handler reads the body; the webhook answered 500 (found 2026-12-02 by probing the
    endpoint with hand-made requests)."""
    port = int(app.ctx.settings.listen.rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /webhooks/lakefs HTTP/1.1\r\nHost: x\r\nX-Lakehook-Token: t0ken\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        )
        answer = b""
        with contextlib.suppress(OSError):
            while part := client.recv(4096):
                answer += part
                if b"}" in answer:
                    break
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == str(status).encode(), answer
    assert says in rest
    assert app.get("/healthz")[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/api/v1/jobs/999999999999999999999999999", 404, "no job"),
        ("GET", "/api/v1/jobs/%C2%B2", 404, "no job"),  # a digit to str.isdigit, not to int
        ("POST", "/api/v1/repos/Study/reconcile", 400, "'repository_id' is not a lakeFS repo"),
        ("POST", "/api/v1/repos/ab/reconcile", 400, "'repository_id' is not a lakeFS repo"),
        ("POST", "/api/v1/repos/study/reconcile?branch=a/b", 400, "a lakeFS branch name"),
        ("GET", "/api/v1/repos/%2e%2e/branches/main/status", 400, "repository id"),
    ],
)
def test_api_paths_lakefs_would_refuse_are_4xx_never_500(
    app: App, method: str, path: str, status: int, says: str
) -> None:
    """Found by probing the API on 2026-12-02: a job id past 64 bits overflowed SQLite, and a
    reconcile of a repository id lakeFS refuses (its 400) came back as a 500."""
    answer, body = app.get(path, method=method)
    assert answer == status, body
    assert says in body["error"]


def test_a_reconcile_lakefs_refuses_is_400_with_its_reason(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lakeFS refused the reconcile's listing (here: its 400 "invalid value", which it gave
    for a repository id shorter than 3 characters that lakehook let through), which the
    adapter raises as a terminal error: it came back as a 500."""

    def refused(repo: str, branch: str | None = None) -> list[int]:
        raise TerminalError(f"list branches of {repo}: lakeFS answered 400: invalid value")

    monkeypatch.setattr(app.ctx.reconciler, "sweep", refused)
    answer, body = app.get("/api/v1/repos/abc/reconcile", method="POST")
    assert (answer, body["error"]) == (
        400,
        "list branches of abc: lakeFS answered 400: invalid value",
    )


def test_every_api_route_needs_the_token_but_health_does_not(app: App) -> None:
    app.ctx.store.put_status(RefStatus("sss", "v9", "branch", "s_v9", "h", "c", "synced"))
    for path, method in [
        ("/api/v1/repos/sss/status", "GET"),
        ("/api/v1/repos/sss/branches/v9/status", "GET"),
        ("/api/v1/repos/sss/jobs", "GET"),
        ("/api/v1/jobs/1", "GET"),
        ("/api/v1/repos/sss/reconcile", "POST"),
        ("/api/v1/no/such/route", "GET"),
    ]:
        for headers in (
            {},
            {"X-Lakehook-Token": "wrong"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic dDBrZW4="},
        ):
            code, body = app.get(
                path, method, headers={**headers, "Content-Type": "application/json"}
            )
            assert code == 401, (path, headers, code, body)
            assert "t0ken" not in json.dumps(body)
    assert app.get("/api/v1/repos/sss/branches/v9/status")[0] == 200
    bearer = {"Authorization": "Bearer t0ken"}
    assert app.get("/api/v1/repos/sss/branches/v9/status", headers=bearer)[0] == 200
    for path in ("/healthz", "/metrics"):
        assert app.get(path, headers={})[0] == 200


def test_cross_site_form_posts_are_refused(app: App) -> None:
    # what a page on another site can send without a CORS preflight: a form-encoded body,
    # even carrying the token, never reaches the handler
    form = {"X-Lakehook-Token": "t0ken", "Content-Type": "application/x-www-form-urlencoded"}
    code, body = app.get("/api/v1/repos/sss/reconcile", "POST", headers=form)
    assert code == 415
    assert "application/json" in body["error"]
    for content_type in ("text/plain", "multipart/form-data; boundary=x", ""):
        headers = {"X-Lakehook-Token": "t0ken", "Content-Type": content_type}
        request = urllib.request.Request(
            f"{app.url}/webhooks/lakefs", data=json.dumps(COMMIT).encode(), headers=headers
        )
        assert App._open(request)[0] == 415
    # the same request as JSON gets through to the handler (which knows no repository s)
    assert app.get("/api/v1/repos/sss/reconcile", "POST")[0] in (202, 404)


def test_post_event_is_a_durable_job_run_once(app: App) -> None:
    status, body = app.post(COMMIT)
    assert status == 202
    assert _wait_done(app, body["job_id"]) == DONE
    assert ("sync_branch", "sss", "main") in app.processor.calls
    code, job = app.get(f"/api/v1/jobs/{body['job_id']}")
    assert code == 200
    assert job["state"] == "done"


def test_a_jobs_step_seconds_are_in_the_metrics(app: App) -> None:
    status, body = app.post({**COMMIT, "branch_id": "timed"})
    assert status == 202
    assert _wait_done(app, body["job_id"]) == DONE
    code, metrics = app.get("/metrics")
    assert code == 200
    assert re.search(r'lakehook_job_step_seconds_count\{step="processing"\} [1-9]', metrics)


def test_request_times_are_in_the_metrics_by_bounded_route(app: App) -> None:
    def count(route: str) -> float:
        found = re.search(
            rf'lakehook_http_request_seconds_count\{{route="{route}"\}} ([0-9.]+)',
            app.get("/metrics")[1],
        )
        return float(found.group(1)) if found else 0.0

    before = {r: count(r) for r in ("webhook", "gate", "api", "health", "other")}
    assert app.post({**COMMIT, "branch_id": "counted"})[0] == 202
    assert app.post({"event_type": "pre-merge", "repository_id": "sss", "branch_id": "main"})[0]
    assert app.get("/healthz")[0] == 200
    assert app.get("/api/v1/repos/sss/jobs")[0] == 200
    assert app.get("/no/such/path/" + "x" * 50)[0] == 404
    after = {r: count(r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        "webhook": 1,
        "gate": 1,
        "api": 1,
        "health": 1,
        "other": 1,
    }
    assert "xxxxx" not in app.get("/metrics")[1]  # a client's path is never a label


def test_own_events_are_acknowledged_and_ignored(app: App) -> None:
    status, body = app.post({**COMMIT, "branch_id": "_lakehook-main-0123456789ab"})
    assert status == 200
    assert "ignored" in body


def test_pre_merge_is_the_gate(app: App) -> None:
    pre_merge = {
        "event_type": "pre-merge",
        "repository_id": "sss",
        "branch_id": "main",
        "source_ref": "c9",
        "merge_source": "v3",
    }
    app.processor.decision = GateDecision(False, ("table dm: BREAKING drift (columns: age)",))
    status, body = app.post(pre_merge)
    assert status == 412
    assert "age" in body["reasons"][0]
    assert ("gate", "sss", "v3", "main", "c9") in app.processor.calls
    app.processor.decision = GateDecision(True)
    assert app.post(pre_merge)[0] == 200


def test_a_gate_that_cannot_decide_in_its_budget_refuses_at_once_with_503(app: App) -> None:
    settings = app.ctx.settings
    app.ctx.settings = replace(settings, gate_timeout_seconds=0.3)
    app.processor.gate_delay = 3.0
    try:
        started = time.monotonic()
        status, body = app.post(
            {
                "event_type": "pre-merge",
                "repository_id": "sss",
                "branch_id": "main",
                "source_ref": "v",
            }
        )
        elapsed = time.monotonic() - started
    finally:
        app.ctx.settings = settings
        app.processor.gate_delay = 0.0
    assert status == 503
    assert body["allowed"] is False
    assert "cannot decide now" in body["reasons"][0]
    assert "retry the merge" in body["reasons"][0]
    assert elapsed < 2.0  # answered when the budget ran out, not when the gate finished


def test_transient_failures_are_retried_then_succeed(app: App) -> None:
    app.processor.fail_with = ServiceUnavailable("lakeFS is down")
    app.processor.failures_left = 2
    status, body = app.post({**COMMIT, "branch_id": "flaky"})
    assert status == 202
    assert _wait_done(app, body["job_id"]) == DONE
    assert app.processor.calls.count(("sync_branch", "sss", "flaky")) == 3


def test_status_health_and_metrics(app: App) -> None:
    app.ctx.store.put_status(RefStatus("sss", "v2", "branch", "s_v2", "h", "c", "synced"))
    code, status = app.get("/api/v1/repos/sss/branches/v2/status")
    assert code == 200
    assert status["schema"] == "s_v2"
    assert app.get("/api/v1/repos/sss/branches/nope/status")[0] == 404
    assert app.get("/healthz")[0] == 200
    assert app.post({"event_type": "post-commit"}, token="wrong")[0] == 401  # counted below
    code, metrics = app.get("/metrics")
    assert code == 200
    assert re.search(
        r'lakehook_events_total\{outcome="unauthorized",type="unknown"\} [1-9]', metrics
    )
    assert 'lakehook_jobs{state="done"}' in metrics
    assert app.get("/no/such/path")[0] == 404


# ---- readiness --------------------------------------------------------------------------------


def test_readiness_probes_once_however_many_ask_and_never_queues_callers() -> None:
    """/readyz is open: each call probed lakeFS, Trino and the metastore itself (149 calls a
    second from one script made 447 requests a second to the stack), and with a service
    blackholed each call held an HTTP thread for up to three 3 s timeouts in a row."""
    calls: Counter[str] = Counter()
    slow = threading.Event()

    def probe(name: str, ok: bool = True, wait: bool = False) -> Callable[[], bool]:
        def run() -> bool:
            calls[name] += 1
            if wait:
                slow.wait(10)
            if name == "broken":
                raise OSError("refused")
            return ok

        return run

    readiness = Readiness(
        {"lakefs": probe("lakefs"), "trino": probe("trino", ok=False), "broken": probe("broken")},
        max_age=60,
    )
    answers: list[dict[str, bool]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(readiness.checks())) for _ in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [{"lakefs": True, "trino": False, "broken": False}] * 40
    assert calls == Counter({"lakefs": 1, "trino": 1, "broken": 1})  # once for all 40

    # a probe under way (a service that does not answer): callers get the last answer at once
    hanging = Readiness({"metastore": probe("metastore", wait=True)}, max_age=0)
    first = threading.Thread(target=hanging.checks)
    slow.set()
    first.start()
    first.join()  # a first answer exists
    slow.clear()
    second = threading.Thread(target=hanging.checks)
    second.start()  # probes again (max_age 0) and hangs in it
    deadline = time.monotonic() + 10
    while calls["metastore"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    assert hanging.checks() == {"metastore": True}  # the last answer, not a wait
    assert time.monotonic() - started < 1
    slow.set()
    second.join()
