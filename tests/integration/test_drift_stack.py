"""Drift in the status on the real stack (contract §9 v1.1), driven by real lakeFS webhooks.

Each test makes its own repository, lets lakeFS call a real ``lakehook serve``, and reads the
status API: after a merge the destination shows what the merge brought; a key change in
``lakehook.yaml`` is KEY_AFFECTING; a removed dataset is in ``removed_tables``; a contents file
declaring a dataset that is not delivered yet is a warning, not a failure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pytest

from tests.integration.conftest import RunningServer, get_json
from tests.integration.test_end_to_end import upload_and_commit, wait_state

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack

CONTENTS = b"""dataset,column,type,label
dm,STUDYID,string,Study Identifier
dm,USUBJID,string,Unique Subject Identifier
dm,AGE,integer,Age
sv,STUDYID,string,Study Identifier
sv,USUBJID,string,Unique Subject Identifier
sv,VISITNUM,double,Visit Number
sv,SVSEQ,integer,Sequence Number
"""
DM = b"STUDYID,USUBJID,AGE\nCDISCPILOT01,01-701-1015,63\nCDISCPILOT01,01-701-1023,64\n"
SV = b"STUDYID,USUBJID,VISITNUM,SVSEQ\nCDISCPILOT01,01-701-1015,1,1\nCDISCPILOT01,01-701-1023,1,1\n"
V1 = {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV}


@pytest.fixture
def study(client: LakeFSClient, lakehook_server: RunningServer) -> str:
    from tests.integration.conftest import install_actions, new_repository

    repo = new_repository(client, "drift")
    install_actions(lakehook_server, repo)
    return repo


def classes(status: dict[str, Any]) -> dict[str, str]:
    return {t["table"]: t["drift"]["class"] for t in status["tables"]}


def changes(status: dict[str, Any], table: str) -> set[tuple[Any, ...]]:
    found = next(t for t in status["tables"] if t["table"] == table)
    return {(c["column"], c["change"], c["from"], c["to"]) for c in found["drift"]["changes"]}


def first_delivery(client: LakeFSClient, server: RunningServer, repo: str) -> dict[str, Any]:
    commit = upload_and_commit(client, repo, "main", V1, "delivery 1")
    status = wait_state(server, repo, "main", commit)
    assert status["state"] == "synced", status
    assert classes(status) == {"dm": "ADDITIVE", "sv": "ADDITIVE"}
    return status


def test_merge_then_status_shows_what_the_merge_brought(
    client: LakeFSClient, study: str, lakehook_server: RunningServer
) -> None:
    first_delivery(client, lakehook_server, study)
    client.branches_api.create_branch(study, lakefs_sdk.BranchCreation(name="v2", source="main"))
    head = client.branches_api.get_branch(study, "v2").commit_id
    meta = client.commits_api.get_commit(study, head).metadata
    created = wait_state(lakehook_server, study, "v2", meta.get("lakehook.source_commit", head))
    assert classes(created) == {"dm": "NONE", "sv": "NONE"}  # a branch just created

    contents = (
        CONTENTS.replace(b"sv,SVSEQ,integer", b"sv,SVSEQ,double")
        + b"dm,SEX,string,Sex\nae,STUDYID,string,Study Identifier\n"
        + b"ae,USUBJID,string,Unique Subject Identifier\nae,AETERM,string,Reported Term\n"
    )
    dm = b"STUDYID,USUBJID,AGE,SEX\nCDISCPILOT01,01-701-1015,63,F\nCDISCPILOT01,01-701-1023,64,M\n"
    ae = b"STUDYID,USUBJID,AETERM\nCDISCPILOT01,01-701-1015,HEADACHE\n"
    second = upload_and_commit(
        client,
        study,
        "v2",
        {"raw/contents.csv": contents, "raw/DM.csv": dm, "raw/AE.csv": ae},
        "delivery 2",
    )
    branch = wait_state(lakehook_server, study, "v2", second)
    assert branch["state"] == "synced", branch
    expected = {"ae": "ADDITIVE", "dm": "ADDITIVE", "sv": "WIDENING"}
    assert classes(branch) == expected

    merge = client.refs_api.merge_into_branch(
        study, "v2", "main", merge=lakefs_sdk.Merge(message="promote v2")
    )
    merged = wait_state(lakehook_server, study, "main", merge.reference)
    assert merged["state"] == "synced", merged
    assert classes(merged) == expected
    assert changes(merged, "ae") == {(None, "dataset added", None, "AE")}
    assert ("sex", "column added", None, "varchar") in changes(merged, "dm")
    assert changes(merged, "sv") == {("svseq", "type changed", "integer", "double")}

    # a re-run changes nothing, so the drift of the merge stays
    subprocess.run(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "reconcile"]
        + ["--repo", study, "--branch", "main", "--wait"],
        env=lakehook_server.env,
        check=True,
        capture_output=True,
    )
    again = get_json(f"{lakehook_server.url}/api/v1/repos/{study}/branches/main/status")
    assert again["state"] == "synced"
    assert classes(again) == expected
    assert again["drift_base"] == merged["drift_base"]


def test_key_change_then_status_is_key_affecting_and_key_families_warn(
    client: LakeFSClient, study: str, lakehook_server: RunningServer
) -> None:
    first_delivery(client, lakehook_server, study)
    config = b"keys:\n  patient: [USUBJID]\n  visit: [STUDYID, USUBJID, VISITNUM]\n"
    mh = b"STUDYID,USUBJID,VISITNUM\nCDISCPILOT01,01-701-1015,1\n"  # VISITNUM undeclared: text
    commit = upload_and_commit(
        client, study, "main", {"lakehook.yaml": config, "raw/MH.csv": mh}, "patient key by USUBJID"
    )
    status = wait_state(lakehook_server, study, "main", commit)
    assert status["state"] == "synced", status
    assert classes(status) == {"dm": "KEY_AFFECTING", "sv": "KEY_AFFECTING", "mh": "ADDITIVE"}
    assert ("patient_sk", "key config changed", "STUDYID,USUBJID", "USUBJID") in changes(
        status, "dm"
    )
    visit = [w for w in status["warnings"] if w.startswith("key visit:")]
    assert len(visit) == 1, status["warnings"]
    assert "VISITNUM numeric in SV" in visit[0]
    assert "VISITNUM text in MH" in visit[0]


def test_removal_then_status_lists_removed_tables(
    client: LakeFSClient, study: str, lakehook_server: RunningServer
) -> None:
    first_delivery(client, lakehook_server, study)
    client.objects_api.delete_object(study, "main", "raw/SV.csv")
    contents = b"\n".join(line for line in CONTENTS.split(b"\n") if not line.startswith(b"sv,"))
    commit = upload_and_commit(
        client, study, "main", {"raw/contents.csv": contents}, "sv withdrawn"
    )
    status = wait_state(lakehook_server, study, "main", commit)
    assert status["state"] == "synced", status
    assert [t["table"] for t in status["tables"]] == ["dm"]
    assert classes(status) == {"dm": "NONE"}
    [removed] = status["removed_tables"]
    assert removed["table"] == "sv"
    assert removed["drift"]["class"] == "BREAKING"
    assert removed["drift"]["changes"][0]["change"] == "dataset removed"


def test_declared_but_undelivered_dataset_is_a_warning_not_a_failure(
    client: LakeFSClient, study: str, lakehook_server: RunningServer
) -> None:
    contents = CONTENTS + b"ae,STUDYID,string,Study Identifier\nae,AETERM,string,Reported Term\n"
    commit = upload_and_commit(
        client, study, "main", {**V1, "raw/contents.csv": contents}, "ae declared, not delivered"
    )
    status = wait_state(lakehook_server, study, "main", commit)
    assert status["state"] == "synced", status
    assert status["errors"] == []
    assert any(re.search(r"\bae\b", w, re.IGNORECASE) for w in status["warnings"]), status[
        "warnings"
    ]
    assert {t["table"] for t in status["tables"]} == {"dm", "sv"}
