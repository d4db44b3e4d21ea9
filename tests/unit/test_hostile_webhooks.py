"""Hostile-input corpus, part 1: webhook bodies, names and declared types (issue 11).

Every case names the clear error it expects, and checks that the server stays healthy and
that nothing half-made is left: no job queued for a refused event, no table registered for a
refused definition, the other datasets processed. (The file-level corpus of CSVs, contents
files and ``lakehook.yaml`` is in the bounds engineer's corpus.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cherrypy
import pytest

from lakehook.settings import Settings
from pipeline.metastore import ddl
from pipeline.naming import table_location
from pipeline.provenance import Provenance
from pipeline.service import BranchService
from server.app import Context, mount
from server.jobs import JobQueue
from server.metrics import Metrics
from server.store import Database, SqliteStatusStore
from server.worker import Reconciler
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.processor import FakeProcessor
from tests.fakes.status import MemoryStatusStore
from tests.ports import free_port

TOKEN = "hostile-test-token"  # noqa: S105
COMMIT = {"event_type": "post-commit", "repository_id": "study", "branch_id": "main"}


class Server:
    def __init__(self, url: str, queue: JobQueue) -> None:
        self.url, self.queue = url, queue

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}/webhooks/lakefs",
            data=body,
            method="POST",
            headers=headers or {"X-Lakehook-Token": TOKEN, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            code, raw = err.code, err.read()
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw.decode("utf-8", "replace")

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("hostile")
    port = free_port()
    settings = replace(
        Settings.load({}, None),
        listen=f"127.0.0.1:{port}",
        state_dir=state,
        webhook_token=TOKEN,
        max_body_bytes=65536,
        reconcile_interval=0,
    )
    db = Database(settings.jobs_db)
    store, queue = SqliteStatusStore(db), JobQueue(db)
    lakefs, metrics = FakeLakeFS(), Metrics()
    ctx = Context(
        settings,
        store,
        queue,
        FakeProcessor(),
        lakefs,
        metrics,
        Reconciler(lakefs, queue, store, metrics),
        provenance=Provenance(b"k" * 32, merges=store),
    )
    mount(ctx, with_workers=False)  # refused events must never become jobs
    cherrypy.engine.start()
    cherrypy.engine.wait(cherrypy.engine.states.STARTED)
    try:
        yield Server(f"http://127.0.0.1:{port}", queue)
    finally:
        cherrypy.engine.stop()
        cherrypy.server.httpserver = None
        cherrypy.tree.apps.clear()


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


WEBHOOK_CASES: list[tuple[str, bytes, int, str]] = [
    ("not JSON", b"{not json", 400, "not JSON"),
    ("empty body", b"", 400, "JSON object"),
    ("a JSON array", b"[1, 2]", 400, "JSON object"),
    ("a JSON string", b'"post-commit"', 400, "JSON object"),
    ("bytes that are not UTF-8", b'{"event_type": "\xff\xfe"}', 400, "JSON"),
    ("nested 30,000 deep", b"[" * 30_000 + b"]" * 30_000, 400, "nested too deeply"),
    ("unknown event", _json({**COMMIT, "event_type": "post-revert"}), 400, "not handled"),
    ("event as a number", _json({**COMMIT, "event_type": 7}), 400, "must be a string"),
    ("no repository", _json({"event_type": "post-commit", "branch_id": "m"}), 400, "repository_id"),
    ("repository as a list", _json({**COMMIT, "repository_id": ["a"]}), 400, "must be a string"),
    (
        "SQL in the repository",
        _json({**COMMIT, "repository_id": "study'; DROP SCHEMA hive.x; --"}),
        400,
        "not a lakeFS repository id",
    ),
    (
        "a path in the repository",
        _json({**COMMIT, "repository_id": "../../etc"}),
        400,
        "not a lakeFS repository id",
    ),
    (
        "quotes in the branch",
        _json({**COMMIT, "branch_id": 'main" OR 1=1 --'}),
        400,
        "not a lakeFS branch name",
    ),
    ("a slash in the branch", _json({**COMMIT, "branch_id": "a/../b"}), 400, "branch name"),
    ("newline in the branch", _json({**COMMIT, "branch_id": "main\nx"}), 400, "branch name"),
    ("a 300-character branch", _json({**COMMIT, "branch_id": "b" * 300}), 400, "branch name"),
    (
        "a slash in the tag",
        _json({"event_type": "post-create-tag", "repository_id": "study", "tag_id": "release/1.0"}),
        400,
        "not a lakeFS tag name",
    ),
    (
        "control characters in the commit id",
        _json({**COMMIT, "commit_id": "abc\x00def"}),
        400,
        "control characters",
    ),
    (
        "metadata values that are not text",
        _json({**COMMIT, "commit_metadata": {"lakehook.origin": ["lakehook"]}}),
        400,
        "commit_metadata",
    ),
    (
        "metadata with 1,000 keys",
        _json({**COMMIT, "commit_metadata": {f"k{i}": "v" for i in range(1000)}}),
        400,
        "more than 256 keys",
    ),
    ("a body over the size limit", b" " * 70_000 + b"{}", 413, ""),
    (
        "NaN where a name belongs",
        b'{"event_type": "post-commit", "repository_id": NaN, "branch_id": "main"}',
        400,
        "must be a string",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [case[1:] for case in WEBHOOK_CASES],
    ids=[case[0] for case in WEBHOOK_CASES],
)
def test_hostile_webhook_bodies_are_refused_clearly(
    server: Server, body: bytes, status: int, message: str
) -> None:
    before = dict(server.queue.counts())
    code, answer = server.post(body)
    assert code == status, answer
    if message:
        assert message in answer["error"], answer
    assert server.queue.counts() == before  # nothing queued
    assert server.healthy()


def test_forged_lakehook_marker_is_processed_like_any_commit(server: Server) -> None:
    """A post-commit carrying lakehook's marker without a valid signature is not ignored."""
    forged = {
        **COMMIT,
        "commit_id": "c" * 64,
        "commit_metadata": {
            "lakehook.origin": "lakehook",
            "lakehook.source_commit": "a" * 64,
            "lakehook.signature": "0" * 64,
        },
    }
    code, answer = server.post(_json(forged))
    assert code == 202, answer
    assert "job_id" in answer


def test_wrong_token_and_cross_site_content_types(server: Server) -> None:
    body = _json(COMMIT)
    for headers, status in [
        ({"Content-Type": "application/json"}, 401),
        ({"Content-Type": "application/json", "X-Lakehook-Token": TOKEN + "x"}, 401),
        ({"Content-Type": "application/json", "Authorization": f"Basic {TOKEN}"}, 401),
        ({"Content-Type": "text/plain", "X-Lakehook-Token": TOKEN}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded", "X-Lakehook-Token": TOKEN}, 415),
    ]:
        code, answer = server.post(body, headers)
        assert code == status, (headers, answer)
        assert TOKEN not in json.dumps(answer)
    assert server.healthy()


# ---- names and declared types that try SQL or path injection, through processing -------------

REPO = "study"
HOSTILE_DATASETS = {
    # dataset file name (the CSV stem) -> the safe table name it must become
    'x"; DROP TABLE dm; --': "x___drop_table_dm____",
    "Robert'); DROP SCHEMA hive.x;--": "robert____drop_schema_hive_x___",
    "..%2F..%2Fetc": "___2f___2fetc",
}
HOSTILE_TYPES = [
    # declared type -> what the status error must say
    "varchar) COMMENT 'x' WITH (external_location = 's3a://other-study/main/tables/dm/', "
    "format = 'PARQUET') /*",
    "decimal(10,2)) --",
    "integer; DROP TABLE dm",
    "varchar(10) COMMENT 'x'",
    "bigint/**/",
    "array(varchar)",
    "decimal(39,2)",
]


@pytest.fixture
def service(tmp_path: Path) -> tuple[FakeLakeFS, BranchService]:
    lakefs = FakeLakeFS()
    lakefs.create_repository(REPO, "local://study")
    metastore = FakeMetastore()  # asserts that only checked definitions reach it
    for table in [*HOSTILE_DATASETS.values(), "dm", "ae"]:
        metastore.set_rows(table_location(REPO, "main", table), 1)
    service = BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=MemoryStatusStore(),
        workdir=tmp_path / "work",
        provenance=Provenance(b"k" * 32),
    )
    return lakefs, service


def test_hostile_dataset_and_column_names_become_safe_identifiers(
    service: tuple[FakeLakeFS, BranchService],
) -> None:
    lakefs, svc = service
    for dataset in HOSTILE_DATASETS:
        lakefs.upload_object(REPO, "main", f"raw/{dataset}.csv", b'"a""b",c d;--,"e\nf"\n1,2,3\n')
    lakefs.commit(REPO, "main", "hostile names", {})
    status = svc.sync_branch(REPO, "main")
    assert {t.table for t in status.tables} == set(HOSTILE_DATASETS.values())
    for table in status.tables:
        ddl.identifier(table.table)
        for name, _ in table.columns:
            ddl.identifier(name)  # every column name is a safe identifier too
        assert {n for n, _ in table.columns} == {"a_b", "c_d___", "e_f"}
    assert set(svc.metastore.list_tables(status.schema)) == set(HOSTILE_DATASETS.values())


@pytest.mark.parametrize("declared", HOSTILE_TYPES)
def test_hostile_declared_types_fail_that_dataset_only(
    service: tuple[FakeLakeFS, BranchService], declared: str
) -> None:
    lakefs, svc = service
    contents = (
        "dataset,column,type\n"
        "dm,USUBJID,string\n"
        f'ae,AETERM,"{declared.replace(chr(34), chr(34) * 2)}"\n'
        "ae,USUBJID,string\n"
    )
    lakefs.upload_object(REPO, "main", "raw/contents.csv", contents.encode())
    lakefs.upload_object(REPO, "main", "raw/DM.csv", b"USUBJID\n01\n")
    lakefs.upload_object(REPO, "main", "raw/AE.csv", b"AETERM,USUBJID\nx,01\n")
    lakefs.commit(REPO, "main", "hostile type", {})
    status = svc.sync_branch(REPO, "main")
    assert status.state == "failed"
    error = next(e for e in status.errors if e.get("table") == "ae")
    assert (error["file"], error["line"], error["column"]) == ("raw/contents.csv", 3, "type")
    assert "unknown type" in error["message"] or "decimal" in error["message"]
    assert error["hint"]
    assert [t.table for t in status.tables] == ["dm"]  # the other dataset proceeds
    assert svc.metastore.list_tables(status.schema) == ["dm"]  # nothing of ae registered
