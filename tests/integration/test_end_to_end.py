"""The whole loop on the real stack, driven only by what users do and real lakeFS webhooks.

A study is committed to lakeFS; lakeFS calls a real ``lakehook serve``; the test then checks
lakeFS commits, Trino queries, the status API and the merge gate. Nothing here calls lakehook's
processing directly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pytest

from lakehook.settings import Settings
from tests.integration.conftest import (
    RunningServer,
    get_json,
    install_actions,
    new_repository,
    post_json,
    trino_query,
)

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack

CONTENTS = b"""dataset,column,type,label
dm,STUDYID,string,Study Identifier
dm,USUBJID,string,Unique Subject Identifier
dm,SITEID,string,Study Site Identifier
dm,AGE,integer,Age
dm,BRTHDTC,partialdate,Date of Birth
sv,STUDYID,string,Study Identifier
sv,USUBJID,string,Unique Subject Identifier
sv,VISITNUM,double,Visit Number
sv,SVSTDTC,date,Start Date of Visit
"""

DM = b"""STUDYID,USUBJID,SITEID,AGE,BRTHDTC
CDISCPILOT01,01-701-1015,701,63,1951
CDISCPILOT01,01-701-1023,701,64,1950-07
CDISCPILOT01,01-702-1001,702,abc,1949-02-30
"""

SV = b"""STUDYID,USUBJID,VISITNUM,SVSTDTC
CDISCPILOT01,01-701-1015,1,2014-01-02
CDISCPILOT01,01-701-1015,1.2000000000000002,2014-01-16
CDISCPILOT01,01-701-1023,1,2014-07-02
"""

WAIT = 300.0


def wait_state(
    server: RunningServer, repo: str, ref: str, source_commit: str, kind: str = "branches"
) -> dict[str, Any]:
    """Poll the status API until ``ref`` has finished with ``source_commit``."""
    url = f"{server.url}/api/v1/repos/{repo}/{kind}/{ref}/status"
    deadline = time.monotonic() + WAIT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = get_json(url)
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        if (
            isinstance(last, dict)
            and last.get("source_commit") == source_commit
            and last.get("state") in {"synced", "failed"}
        ):
            return last
        time.sleep(0.5)
    pytest.fail(f"{repo}/{ref} never finished {source_commit[:12]}; last status: {last}")


@pytest.fixture
def study(client: LakeFSClient, lakehook_server: RunningServer) -> str:
    """A new repository with lakehook's actions pointing at the test server."""
    repo = new_repository(client, "e2e")
    install_actions(lakehook_server, repo)
    return repo


def upload_and_commit(
    client: LakeFSClient, repo: str, branch: str, files: dict[str, bytes], message: str
) -> str:
    for path, data in files.items():
        client.objects_api.upload_object(repo, branch, path, content=data)
    return str(
        client.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=message)).id
    )


def test_commit_is_processed_keyed_committed_back_and_queryable(
    client: LakeFSClient, study: str, lakehook_server: RunningServer, stack_settings: Settings
) -> None:
    user_commit = upload_and_commit(
        client,
        study,
        "main",
        {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV},
        "delivery 1",
    )
    status = wait_state(lakehook_server, study, "main", user_commit)
    assert status["state"] == "synced", status
    tables = {t["table"]: t for t in status["tables"]}
    assert set(tables) == {"dm", "sv"}
    assert tables["dm"]["rows"] == 3
    assert tables["dm"]["invalid_values"]["age"] == 1
    assert [c["name"] for c in tables["dm"]["columns"]][:3] == ["patient_sk", "site_sk", "studyid"]

    # lakehook committed the outputs back with provenance, as its own commit on main
    head = client.branches_api.get_branch(study, "main").commit_id
    meta = client.commits_api.get_commit(study, head).metadata
    assert meta["lakehook.origin"] == "lakehook"
    assert meta["lakehook.source_commit"] == user_commit

    schema = status["schema"]
    rows = trino_query(
        stack_settings, f"SELECT usubjid, patient_sk, age FROM {schema}.dm ORDER BY usubjid"
    )
    assert rows[0] == ["01-701-1015", -882300288707882733, 63]
    assert rows[2][2] is None  # 'abc' is not an integer: NULL and counted
    visit = trino_query(stack_settings, f"SELECT visit_sk FROM {schema}.sv WHERE visitnum > 1.1")
    assert visit == [[1535226055626573821]]

    # re-processing the same commit changes nothing: no new lakehook commit
    code, _ = post_json(f"{lakehook_server.url}/api/v1/repos/{study}/reconcile?branch=main")
    assert code == 202
    again = wait_state(lakehook_server, study, "main", user_commit)
    assert again["state"] == "synced"
    assert client.branches_api.get_branch(study, "main").commit_id == head


def test_branch_copy_incremental_delivery_and_gate(
    client: LakeFSClient, study: str, lakehook_server: RunningServer, stack_settings: Settings
) -> None:
    first = upload_and_commit(
        client,
        study,
        "main",
        {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV},
        "delivery 1",
    )
    main_status = wait_state(lakehook_server, study, "main", first)
    assert main_status["state"] == "synced"

    # a branch reads the same rows at once, through its own schema
    client.branches_api.create_branch(study, lakefs_sdk.BranchCreation(name="v2", source="main"))
    branch_head = client.branches_api.get_branch(study, "v2").commit_id
    meta = client.commits_api.get_commit(study, branch_head).metadata
    v2_status = wait_state(
        lakehook_server, study, "v2", meta.get("lakehook.source_commit", branch_head)
    )
    assert v2_status["schema"] != main_status["schema"]
    assert trino_query(stack_settings, f"SELECT count(*) FROM {v2_status['schema']}.dm") == [[3]]

    # second delivery on the branch: only sv changes, and a column is added (ADDITIVE)
    sv2 = (
        b"STUDYID,USUBJID,VISITNUM,SVSTDTC,EPOCH\n"
        b"CDISCPILOT01,01-701-1015,1,2014-01-02,SCREENING\n"
        b"CDISCPILOT01,01-701-1015,1.2000000000000002,2014-01-16,TREATMENT\n"
        b"CDISCPILOT01,01-701-1023,1,2014-07-02,SCREENING\n"
        b"CDISCPILOT01,01-702-1001,1,2014-08-01,SCREENING\n"
    )
    dm_manifest_before = client.objects_api.stat_object(
        study, "v2", "_lakehook/manifests/dm.json"
    ).checksum
    second = upload_and_commit(
        client, study, "v2", {"raw/SV.csv": sv2}, "delivery 2: new visits and EPOCH"
    )
    v2_status = wait_state(lakehook_server, study, "v2", second)
    assert v2_status["state"] == "synced", v2_status
    tables = {t["table"]: t for t in v2_status["tables"]}
    assert tables["sv"]["rows"] == 4
    assert tables["sv"]["drift"]["class"] == "ADDITIVE"
    assert (
        client.objects_api.stat_object(study, "v2", "_lakehook/manifests/dm.json").checksum
        == dm_manifest_before
    )

    # keys are identical on both branches for the same natural keys
    main_keys = trino_query(
        stack_settings, f"SELECT usubjid, patient_sk FROM {main_status['schema']}.sv ORDER BY 1, 2"
    )
    v2_keys = trino_query(
        stack_settings, f"SELECT usubjid, patient_sk FROM {v2_status['schema']}.sv ORDER BY 1, 2"
    )
    assert set(map(tuple, main_keys)) <= set(map(tuple, v2_keys))

    # ADDITIVE passes the gate into main
    client.refs_api.merge_into_branch(
        study, "v2", "main", merge=lakefs_sdk.Merge(message="promote v2")
    )

    # a declared type change (AGE integer -> string) is BREAKING: lakeFS refuses the merge
    client.branches_api.create_branch(study, lakefs_sdk.BranchCreation(name="v3", source="main"))
    third = upload_and_commit(
        client,
        study,
        "v3",
        {"raw/contents.csv": CONTENTS.replace(b"dm,AGE,integer", b"dm,AGE,string")},
        "AGE as text",
    )
    v3_status = wait_state(lakehook_server, study, "v3", third)
    dm = next(t for t in v3_status["tables"] if t["table"] == "dm")
    assert dm["drift"]["class"] == "BREAKING"
    main_before = client.branches_api.get_branch(study, "main").commit_id
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        client.refs_api.merge_into_branch(
            study, "v3", "main", merge=lakefs_sdk.Merge(message="promote v3")
        )
    assert refused.value.status == 412
    assert "age" in str(refused.value.body).lower()
    assert client.branches_api.get_branch(study, "main").commit_id == main_before
    assert trino_query(stack_settings, f"SELECT count(*) FROM {main_status['schema']}.dm") == [[3]]


def test_bad_csv_fails_that_dataset_only(
    client: LakeFSClient, study: str, lakehook_server: RunningServer, stack_settings: Settings
) -> None:
    ragged = DM + b"CDISCPILOT01,01-701-9999,701\n"
    commit = upload_and_commit(
        client,
        study,
        "main",
        {"raw/contents.csv": CONTENTS, "raw/DM.csv": ragged, "raw/SV.csv": SV},
        "ragged dm",
    )
    status = wait_state(lakehook_server, study, "main", commit)
    assert status["state"] == "failed"
    error = next(e for e in status["errors"] if "DM.csv" in json.dumps(e))
    assert error["line"] == 5
    assert {t["table"] for t in status["tables"]} == {"sv"}
    assert trino_query(stack_settings, f"SELECT count(*) FROM {status['schema']}.sv") == [[3]]

    # lineage (journal; Marquez is optional): sv COMPLETE with its facets, dm FAIL with the error
    journal = lakehook_server.state_dir / "lineage" / "events.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    final = {
        e["job"]["name"]: e
        for e in events
        if e["eventType"] in {"COMPLETE", "FAIL"} and e["run"]["facets"].get("parent")
    }
    sv_run, dm_run = final[f"{study}.sv"], final[f"{study}.dm"]
    assert sv_run["eventType"] == "COMPLETE"
    facets = sv_run["outputs"][0]["facets"]
    assert [f["name"] for f in facets["schema"]["fields"]][:2] == ["patient_sk", "visit_sk"]
    sources = facets["columnLineage"]["fields"]["patient_sk"]["inputFields"]
    assert {f["field"] for f in sources} == {"STUDYID", "USUBJID"}
    assert dm_run["eventType"] == "FAIL"
    assert "DM.csv" in dm_run["run"]["facets"]["errorMessage"]["message"]


def test_delete_branch_drops_schema_and_tag_snapshots(
    client: LakeFSClient, study: str, lakehook_server: RunningServer, stack_settings: Settings
) -> None:
    commit = upload_and_commit(
        client,
        study,
        "main",
        {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV},
        "delivery 1",
    )
    wait_state(lakehook_server, study, "main", commit)
    head = client.branches_api.get_branch(study, "main").commit_id
    client.tags_api.create_tag(study, lakefs_sdk.TagCreation(id="v1.0", ref=head))
    tag = wait_state(lakehook_server, study, "v1.0", commit, kind="tags")
    assert trino_query(stack_settings, f"SELECT count(*) FROM {tag['schema']}.dm") == [[3]]

    client.branches_api.create_branch(
        study, lakefs_sdk.BranchCreation(name="scratch", source="main")
    )
    scratch = wait_state(lakehook_server, study, "scratch", commit)
    client.branches_api.delete_branch(study, "scratch")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        schemas = [
            r[0]
            for r in trino_query(
                stack_settings, f"SHOW SCHEMAS FROM {stack_settings.trino_catalog}"
            )
        ]
        if scratch["schema"] not in schemas:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"schema {scratch['schema']} still exists after the branch was deleted")
    # data untouched: main still reads its rows
    assert trino_query(stack_settings, f"SELECT count(*) FROM {tag['schema']}.dm") == [[3]]
