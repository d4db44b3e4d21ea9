"""The local stack is real: lakeFS, its S3 gateway, Trino on the Hive Metastore, lakeFS actions."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehook.settings import Settings
from pipeline.adapters.lakefs import LakeFSClient
from tests.integration.conftest import trino_query, unique_name
from tests.repositories import created

pytestmark = pytest.mark.stack


def parquet(values: list[int]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), buf)
    return buf.getvalue()


def test_each_branch_reads_its_own_data_through_trino(stack_settings: Settings) -> None:
    lakefs = LakeFSClient.from_settings(stack_settings)
    repo = unique_name("stack")
    lakefs.create_repository(created(repo), f"local://{repo}")
    # through the S3 gateway, as Spark or any S3 client would write
    lakefs.upload_object(repo, "main", "tables/t/part-0.parquet", io.BytesIO(parquet([1, 2, 3])))
    lakefs.commit(repo, "main", "main data", {})
    lakefs.create_branch(repo, "dev", "main")
    lakefs.upload_object(repo, "dev", "tables/t/part-0.parquet", io.BytesIO(parquet([10, 20])))
    lakefs.commit(repo, "dev", "dev data", {})

    schemas = {}
    for branch in ("main", "dev"):
        schema = f"{repo}_{branch}".replace("-", "_")
        schemas[branch] = schema
        trino_query(stack_settings, f"CREATE SCHEMA {schema}")
        trino_query(
            stack_settings,
            f"CREATE TABLE {schema}.t (x bigint) WITH "
            f"(external_location = 's3a://{repo}/{branch}/tables/t/', format = 'PARQUET')",
        )
    assert trino_query(stack_settings, f"SELECT sum(x), count(*) FROM {schemas['main']}.t") == [
        [6, 3]
    ]
    assert trino_query(stack_settings, f"SELECT sum(x), count(*) FROM {schemas['dev']}.t") == [
        [30, 2]
    ]


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def listener() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"received": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()


def test_a_real_lakefs_action_calls_a_webhook_with_the_token(
    stack_settings: Settings, listener: tuple[str, type[_Recorder]]
) -> None:
    url, handler = listener
    lakefs = LakeFSClient.from_settings(stack_settings)
    repo = unique_name("hooks")
    lakefs.create_repository(created(repo), f"local://{repo}")
    action = (
        "name: probe\non:\n  post-commit:\nhooks:\n  - id: probe_hook\n    type: webhook\n"
        f"    properties:\n      url: {url}\n      timeout: 5s\n"
        '      headers:\n        X-Lakehook-Token: "{{ ENV.LAKEFSACTION_LAKEHOOK_TOKEN }}"\n'
    )
    lakefs.upload_object(repo, "main", "_lakefs_actions/probe.yaml", action.encode())
    lakefs.commit(repo, "main", "add action", {})
    lakefs.upload_object(repo, "main", "data.txt", b"x")
    commit = lakefs.commit(repo, "main", "trigger", {})

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        hits = [(h, b) for h, b in handler.received if b.get("commit_id") == commit.id]
        if hits:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"lakeFS never called the webhook; received {handler.received}")
    headers, body = hits[0]
    assert body["event_type"] == "post-commit"
    assert body["branch_id"] == "main"
    assert headers["X-Lakehook-Token"] == stack_settings.webhook_token
