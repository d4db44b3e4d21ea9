"""Webhooks are hints: duplicates, disorder, a killed server and a server that was down.

lakeFS never retries post-hooks, may deliver them concurrently and in any order, and drops them
when the receiver is down. These tests drive a real ``lakehook serve`` with real lakeFS
webhooks (plus replayed ones) and check the end state: one lakehook commit per processed user
commit, the newest commit processed, and every job finished exactly once.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pytest
from trino.exceptions import TrinoUserError

from lakehook.settings import Settings
from pipeline.generator import generate_study
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

SETTLE = 300.0


def lakehook_merges(client: LakeFSClient, repo: str, branch: str) -> dict[str, int]:
    """Per user commit: how many lakehook write-back commits landed on ``branch``."""
    counts: dict[str, int] = {}
    after = ""
    while True:
        page = client.refs_api.log_commits(repo, branch, after=after, amount=1000)
        for commit in page.results:
            meta = commit.metadata or {}
            if meta.get("lakehook.origin") == "lakehook" and len(commit.parents) == 2:
                source = meta["lakehook.source_commit"]
                counts[source] = counts.get(source, 0) + 1
        if not page.pagination.has_more:
            return counts
        after = page.pagination.next_offset


def wait_jobs_settled(server: RunningServer, repo: str) -> list[dict[str, Any]]:
    """Poll the job list until no job of ``repo`` is queued, running or waiting for a retry."""
    deadline = time.monotonic() + SETTLE
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = get_json(f"{server.url}/api/v1/repos/{repo}/jobs")
        if jobs and all(j["state"] in {"done", "failed"} for j in jobs):
            return jobs
        time.sleep(0.25)
    pytest.fail(f"jobs of {repo} never settled: {jobs}")


def post_event(server: RunningServer, payload: dict[str, Any]) -> int:
    """POST a webhook body as lakeFS does; its status code."""
    return gate_answer(server, payload, timeout=10)[0]


def gate_answer(
    server: RunningServer, payload: dict[str, Any], timeout: float = 30
) -> tuple[int, Any]:
    """POST a webhook body (for pre-merge: ask lakehook's gate, as lakeFS's hook does) and read
    the answer: its status code and JSON body (the gate's reasons)."""
    token = server.env.get("LAKEHOOK_WEBHOOK_TOKEN") or Settings.load().webhook_token
    req = urllib.request.Request(
        f"{server.url}/webhooks/lakefs",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-Lakehook-Token": token},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
            code, body = int(response.status), response.read()
    except urllib.error.HTTPError as err:
        code, body = int(err.code), err.read()
    try:
        return code, json.loads(body or b"null")
    except ValueError:
        return code, body.decode(errors="replace")


def post_commit_event(repo: str, branch: str, commit: str) -> dict[str, Any]:
    """The body lakeFS sends for post-commit (contract §8)."""
    return {
        "event_type": "post-commit",
        "event_time": "2026-11-25T10:00:00Z",
        "action_name": "lakehook post-commit",
        "hook_id": "lakehook",
        "repository_id": repo,
        "branch_id": branch,
        "source_ref": branch,
        "commit_id": commit,
        "commit_message": "replayed",
        "committer": "admin",
        "commit_metadata": {},
    }


def test_duplicated_and_out_of_order_deliveries_have_one_effect(
    client: LakeFSClient, lakehook_server: RunningServer
) -> None:
    repo = new_repository(client, "dup")
    install_actions(lakehook_server, repo)
    files = generate_study(patients=40, seed=3)
    first = upload_and_commit(client, repo, "main", files, "delivery 1")
    assert wait_state(lakehook_server, repo, "main", first)["state"] == "synced"

    second_files = generate_study(patients=60, seed=3, delivery=2)
    second = upload_and_commit(client, repo, "main", second_files, "delivery 2")
    # lakeFS delivers its own post-commit; replay it 8 times concurrently, together with 4
    # stale deliveries of the first commit arriving late, in an interleaved order.
    replays = [post_commit_event(repo, "main", second)] * 8 + [
        post_commit_event(repo, "main", first)
    ] * 4
    replays = replays[::2] + replays[1::2]
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda p: post_event(lakehook_server, p), replays))
    assert codes == [202] * len(replays)

    status = wait_state(lakehook_server, repo, "main", second)
    assert status["state"] == "synced", status
    jobs = wait_jobs_settled(lakehook_server, repo)
    assert [j for j in jobs if j["state"] == "failed"] == []
    head = client.branches_api.get_branch(repo, "main").commit_id

    # one write-back per user commit, none for the duplicates or the stale event
    assert lakehook_merges(client, repo, "main") == {first: 1, second: 1}
    # the stale event did not take the branch back to the first delivery
    final = get_json(f"{lakehook_server.url}/api/v1/repos/{repo}/branches/main/status")
    assert final["source_commit"] == second
    assert final["state"] == "synced"
    assert client.branches_api.get_branch(repo, "main").commit_id == head
    rows = {t["table"]: t["rows"] for t in final["tables"]}
    assert rows["patients"] == second_files["raw/patients.csv"].count(b"\n") - 1


def test_reconciler_repairs_a_table_dropped_or_altered_behind_lakehooks_back(
    client: LakeFSClient, lakehook_server: RunningServer, stack_settings: Settings
) -> None:
    repo = new_repository(client, "behind")
    install_actions(lakehook_server, repo)
    commit = upload_and_commit(client, repo, "main", generate_study(30, seed=9), "delivery 1")
    status = wait_state(lakehook_server, repo, "main", commit)
    assert status["state"] == "synced"
    schema, head = status["schema"], client.branches_api.get_branch(repo, "main").commit_id
    columns = [r[0] for r in trino_query(stack_settings, f"SHOW COLUMNS FROM {schema}.patients")]
    rows = trino_query(stack_settings, f"SELECT count(*) FROM {schema}.labs")[0][0]

    # no commit, no webhook: someone drops a table and alters another through Trino
    trino_query(stack_settings, f"DROP TABLE {schema}.labs")
    trino_query(stack_settings, f"ALTER TABLE {schema}.patients ADD COLUMN extra varchar")

    deadline = time.monotonic() + SETTLE
    tables: list[Any] = []
    now: list[Any] = []
    while time.monotonic() < deadline:
        tables = [r[0] for r in trino_query(stack_settings, f"SHOW TABLES FROM {schema}")]
        now = []
        if "patients" in tables:  # the repair re-creates it: it may be gone for a moment
            try:
                now = [
                    r[0]
                    for r in trino_query(stack_settings, f"SHOW COLUMNS FROM {schema}.patients")
                ]
            except TrinoUserError as err:
                if err.error_name != "TABLE_NOT_FOUND":
                    raise
                now = []
        if "labs" in tables and now == columns:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{schema} was not repaired: tables {tables}, patients columns {now}")
    assert trino_query(stack_settings, f"SELECT count(*) FROM {schema}.labs")[0][0] == rows
    # the repair's job ends after it re-verified the schema: poll for it, do not race it
    while True:
        jobs = get_json(f"{lakehook_server.url}/api/v1/repos/{repo}/jobs")
        if any(j["event"] == "reconcile" and j["state"] == "done" for j in jobs):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no reconcile job done: {[(j['event'], j['state']) for j in jobs]}")
        time.sleep(0.5)
    assert client.branches_api.get_branch(repo, "main").commit_id == head  # nothing reprocessed
    final = wait_state(lakehook_server, repo, "main", commit)
    assert final["state"] == "synced"


def test_a_thousand_duplicated_shuffled_deliveries_over_three_branches(
    client: LakeFSClient, lakehook_server: RunningServer
) -> None:
    repo = new_repository(client, "storm")
    install_actions(lakehook_server, repo)
    branches = ["s1", "s2", "s3"]
    for name in branches:
        client.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name=name, source="main"))
    files = {b: generate_study(patients=20 + 5 * i, seed=40 + i) for i, b in enumerate(branches)}
    commits = {
        b: upload_and_commit(client, repo, b, files[b], f"delivery on {b}") for b in branches
    }
    # 1,000 deliveries: the three real ones replayed, plus create-branch events, shuffled
    events = [post_commit_event(repo, b, commits[b]) for b in branches] * 300
    events += [
        {
            "event_type": "post-create-branch",
            "repository_id": repo,
            "branch_id": b,
            "source_ref": "main",
            "commit_id": commits[b],
        }
        for b in branches
    ] * 33 + [post_commit_event(repo, "s1", commits["s1"])]
    random.Random(12).shuffle(events)
    assert len(events) == 1000
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda p: post_event(lakehook_server, p), events))
    assert set(codes) == {202}
    for b in branches:
        status = wait_state(lakehook_server, repo, b, commits[b])
        assert status["state"] == "synced", status
        rows = {t["table"]: t["rows"] for t in status["tables"]}
        assert rows["patients"] == files[b]["raw/patients.csv"].count(b"\n") - 1
        assert lakehook_merges(client, repo, b) == {commits[b]: 1}, b
    jobs = wait_jobs_settled(lakehook_server, repo)
    assert [j for j in jobs if j["state"] == "failed"] == []
    assert len(jobs) < 100  # coalesced, not a thousand jobs


def test_commits_on_two_branches_at_the_same_moment(
    client: LakeFSClient, lakehook_server: RunningServer
) -> None:
    repo = new_repository(client, "twin")
    install_actions(lakehook_server, repo)
    for name in ("left", "right"):
        client.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name=name, source="main"))
    files = {"left": generate_study(25, seed=51), "right": generate_study(35, seed=52)}
    barrier = threading.Barrier(2)

    def deliver(branch: str) -> str:
        for path, data in files[branch].items():
            client.objects_api.upload_object(repo, branch, path, content=data)
        barrier.wait()
        return str(
            client.commits_api.commit(
                repo, branch, lakefs_sdk.CommitCreation(message=f"at once on {branch}")
            ).id
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        commits = dict(zip(["left", "right"], pool.map(deliver, ["left", "right"]), strict=True))
    schemas = set()
    for branch, commit in commits.items():
        status = wait_state(lakehook_server, repo, branch, commit)
        assert status["state"] == "synced", status
        rows = {t["table"]: t["rows"] for t in status["tables"]}
        assert rows["patients"] == files[branch]["raw/patients.csv"].count(b"\n") - 1
        assert lakehook_merges(client, repo, branch) == {commit: 1}
        schemas.add(status["schema"])
    assert len(schemas) == 2


def with_held_dataset(files: dict[str, bytes], dataset: str) -> dict[str, bytes]:
    """``files`` plus a one-column dataset ``dataset``: a fault point narrowed to it holds the
    job of exactly this delivery (``before-dataset:<dataset>=hold``)."""
    held = dict(files)
    held["raw/contents.csv"] = files["raw/contents.csv"] + f"{dataset},NOTE,string,Note\n".encode()
    held[f"raw/{dataset}.csv"] = b"NOTE\nheld\n"
    return held


def test_a_merge_while_its_source_is_processing_is_refused_then_let_through(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    # dev's job is held at a dataset only its delivery has, until the test releases it: the
    # merge is attempted while the source is provably still processing, however fast the
    # machine (a race against the processing time was no proof either way)
    release = tmp_path / "release"
    server = start_server(
        tmp_path / "state",
        free_port(),
        {
            "LAKEHOOK_TESTING": "1",
            "LAKEHOOK_FAULT_POINT": "before-dataset:held=hold",
            "LAKEHOOK_FAULT_RELEASE": str(release),
        },
        ready_timeout=180,
    )
    try:
        _merge_while_processing(client, server, release)
    finally:
        release.touch()
        server.stop()


def _merge_while_processing(client: LakeFSClient, server: RunningServer, release: Path) -> None:
    repo = new_repository(client, "early")
    install_actions(server, repo)
    base = upload_and_commit(client, repo, "main", generate_study(20, seed=61), "delivery 1")
    assert wait_state(server, repo, "main", base)["state"] == "synced"
    client.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="dev", source="main"))
    assert wait_state(server, repo, "dev", base)["state"] == "synced"
    delivery = with_held_dataset(generate_study(40, seed=61, delivery=2), "held")
    dev = upload_and_commit(client, repo, "dev", delivery, "delivery 2")
    # lakehook has not finished dev: its gate says why (lakeFS passes on only the status code)
    pre_merge = {
        "event_type": "pre-merge",
        "repository_id": repo,
        "branch_id": "main",
        "source_ref": dev,
        "merge_source": "dev",
    }
    code, answer = gate_answer(server, pre_merge)
    assert code == 412, answer
    assert "still processing" in " ".join(answer["reasons"]), answer
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        client.refs_api.merge_into_branch(
            repo, "dev", "main", merge=lakefs_sdk.Merge(message="early")
        )
    assert refused.value.status == 412
    assert client.refs_api.log_commits(repo, "main", amount=1).results[0].id != dev
    release.touch()
    assert wait_state(server, repo, "dev", dev)["state"] == "synced"
    merged = client.refs_api.merge_into_branch(
        repo, "dev", "main", merge=lakefs_sdk.Merge(message="promote dev")
    ).reference
    status = wait_state(server, repo, "main", merged)
    assert status["state"] == "synced", status
    assert {t["table"] for t in status["tables"]} >= {"patients", "held"}
    assert lakehook_merges(client, repo, "dev") == {base: 1, dev: 1}  # base: from main
    assert lakehook_merges(client, repo, "main").get(base) == 1
    assert all(n == 1 for n in lakehook_merges(client, repo, "main").values())
