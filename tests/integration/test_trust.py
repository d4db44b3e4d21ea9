"""Issue 11's exploits on the real stack: each must now fail (contract §8, §9 v1.1).

One ``lakehook serve`` writes tables through Trino DDL (``LAKEHOOK_METASTORE_API=trino``, the
adapter the DDL injection targeted); each exploit gets its own repository, and lakeFS calls
the server through the installed actions, as for a user.

1. a branch named ``_lakehook-x`` made from a branch with BREAKING drift, with lakehook's
   commit metadata copied onto it, is refused by the pre-merge gate (412);
2. a forged manifest and Parquet file committed by a person are not trusted: the table is
   rebuilt from raw, the status names the path, Trino reads the real data;
3. a declared type written as DDL fails that dataset with a clear error, registers nothing,
   and the other datasets proceed;
8. the API answers 401 without the token and refuses a cross-site form post.
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehook.settings import Settings
from tests.integration.conftest import (
    RunningServer,
    free_port,
    get_json,
    install_actions,
    new_repository,
    start_server,
    trino_query,
)
from tests.integration.test_end_to_end import upload_and_commit, wait_state

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack

CONTENTS = b"""dataset,column,type
dm,STUDYID,string
dm,USUBJID,string
dm,AGE,integer
ae,USUBJID,string
ae,AETERM,string
"""
DM = b"STUDYID,USUBJID,AGE\nS1,01-701-1015,63\nS1,01-701-1023,64\nS1,01-701-1028,71\n"
AE = b"USUBJID,AETERM\n01-701-1015,HEADACHE\n"
V1 = {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/AE.csv": AE}
INJECTED_TYPE = (
    "varchar) COMMENT 'x' WITH (external_location = 's3a://other-study/main/tables/dm/', "
    "format = 'PARQUET') /*"
)


@pytest.fixture(scope="module")
def server(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    # no timed sweeps: on the shared stack they would queue every other test's repositories
    # ahead of these; lakeFS's webhooks drive everything here
    env = {"LAKEHOOK_METASTORE_API": "trino", "LAKEHOOK_RECONCILE_INTERVAL": "3600"}
    running = start_server(tmp_path_factory.mktemp("trust"), free_port(), env)
    yield running
    running.stop()


@pytest.fixture
def study(client: LakeFSClient, server: RunningServer) -> str:
    repo = new_repository(client, "trust")
    install_actions(server, repo)
    return repo


def first_delivery(client: LakeFSClient, server: RunningServer, repo: str) -> dict[str, Any]:
    commit = upload_and_commit(client, repo, "main", V1, "delivery 1")
    status = wait_state(server, repo, "main", commit)
    assert status["state"] == "synced", status
    return status


def test_a_lakehook_named_branch_with_copied_metadata_gets_the_gate(
    client: LakeFSClient, server: RunningServer, study: str
) -> None:
    first_delivery(client, server, study)
    client.branches_api.create_branch(study, lakefs_sdk.BranchCreation(name="dev", source="main"))
    breaking = upload_and_commit(
        client,
        study,
        "dev",
        {"raw/contents.csv": CONTENTS.replace(b"dm,AGE,integer", b"dm,AGE,string")},
        "AGE as text",
    )
    dev = wait_state(server, study, "dev", breaking)
    assert {t["table"]: t["drift"]["class"] for t in dev["tables"]}["dm"] == "BREAKING"
    dev_head = client.branches_api.get_branch(study, "dev").commit_id
    copied = dict(client.commits_api.get_commit(study, dev_head).metadata)
    assert copied["lakehook.origin"] == "lakehook"  # lakehook wrote back on dev

    client.branches_api.create_branch(
        study, lakefs_sdk.BranchCreation(name="_lakehook-x", source="dev")
    )
    client.objects_api.upload_object(study, "_lakehook-x", "notes/why.txt", content=b"x")
    client.commits_api.commit(
        study, "_lakehook-x", lakefs_sdk.CommitCreation(message="copy", metadata=copied)
    )
    main_before = client.branches_api.get_branch(study, "main").commit_id
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        client.refs_api.merge_into_branch(
            study, "_lakehook-x", "main", merge=lakefs_sdk.Merge(message="x", metadata=copied)
        )
    assert refused.value.status == 412
    answer = gate_answer(client, study, refused.value)
    assert "HTTP/1.1 412" in answer
    assert "named like a lakehook working branch" in answer
    assert "not been processed" in answer
    assert client.branches_api.get_branch(study, "main").commit_id == main_before


def gate_answer(client: LakeFSClient, repo: str, refused: lakefs_sdk.ApiException) -> str:
    """What lakehook answered lakeFS's pre-merge hook (lakeFS keeps it in the action run)."""
    found = re.search(r"run id \\?'(\w+)", str(refused.body))
    assert found, refused.body
    run = found[1]
    return "".join(
        client.actions_api.get_run_hook_output(repo, run, hook.hook_run_id).decode()
        for hook in client.actions_api.list_run_hooks(repo, run).results
    )


def _parquet(rows: dict[str, list[Any]]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(rows), out)
    return out.getvalue()


def test_a_forged_manifest_and_parquet_are_rebuilt_from_raw(
    client: LakeFSClient, server: RunningServer, stack_settings: Settings, study: str
) -> None:
    status = first_delivery(client, server, study)
    schema = status["schema"]
    manifest = json.loads(
        client.objects_api.get_object(study, "main", "_lakehook/manifests/dm.json")
    )
    forged_path = "tables/dm/forged.parquet"
    forged = {
        **manifest,
        "files": [forged_path],
        "rows": 1,
        "file_fingerprints": {forged_path: [1, "x"]},
    }  # signature copied from the real manifest: it no longer matches
    person = upload_and_commit(
        client,
        study,
        "main",
        {
            forged_path: _parquet(
                {"studyid": ["X"], "usubjid": ["FORGED"], "age": pa.array([999], pa.int32())}
            ),
            "_lakehook/manifests/dm.json": json.dumps(forged).encode(),
        },
        "better outputs",
    )
    status = wait_state(server, study, "main", person)
    assert status["state"] == "synced", status
    assert any(
        w.startswith("_lakehook/manifests/dm.json is not signed by lakehook")
        and "rebuilt from raw/DM.csv" in w
        for w in status["warnings"]
    ), status["warnings"]
    rows = trino_query(stack_settings, f'SELECT usubjid, age FROM "{schema}".dm ORDER BY 1')
    assert rows == [["01-701-1015", 63], ["01-701-1023", 64], ["01-701-1028", 71]]
    paths = [
        o.path for o in client.objects_api.list_objects(study, "main", prefix="tables/").results
    ]
    assert forged_path not in paths


def test_a_declared_type_written_as_ddl_fails_that_dataset_only(
    client: LakeFSClient, server: RunningServer, stack_settings: Settings, study: str
) -> None:
    contents = CONTENTS.replace(b"ae,AETERM,string", f'ae,AETERM,"{INJECTED_TYPE}"'.encode())
    commit = upload_and_commit(
        client, study, "main", {**V1, "raw/contents.csv": contents}, "delivery"
    )
    status = wait_state(server, study, "main", commit)
    assert status["state"] == "failed"
    error = next(e for e in status["errors"] if e.get("dataset") == "AE" or e.get("table") == "ae")
    assert error["file"] == "raw/contents.csv"
    assert error["line"] == 6
    assert "unknown type" in error["message"]
    schema = status["schema"]
    assert [t["table"] for t in status["tables"]] == ["dm"]
    assert trino_query(stack_settings, f'SHOW TABLES FROM "{schema}"') == [["dm"]]
    assert trino_query(stack_settings, f'SELECT count(*) FROM "{schema}".dm') == [[3]]


def _send(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if data else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def test_the_api_needs_the_token_and_refuses_cross_site_form_posts(server: RunningServer) -> None:
    token = Settings.load().webhook_token
    for path in ("/api/v1/repos/any/status", "/api/v1/repos/any/jobs", "/api/v1/jobs/1"):
        code, body = _send(server.url + path, {})
        assert code == 401, (path, body)
        assert token not in body
    assert get_json(f"{server.url}/api/v1/repos/any/status") == []
    reconcile = f"{server.url}/api/v1/repos/any/reconcile"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _send(reconcile, form, b"branch=main")[0] == 401
    code, body = _send(reconcile, {**form, "X-Lakehook-Token": token}, b"branch=main")
    assert code == 415
    assert "application/json" in body
    webhook = f"{server.url}/webhooks/lakefs"
    assert (
        _send(webhook, {"Content-Type": "text/plain", "X-Lakehook-Token": token}, b"{}")[0] == 415
    )
    assert _send(f"{server.url}/healthz", {})[0] == 200
