"""Webhooks are hints, part two: a server killed with jobs pending, and a server that was down.

A ``kill -9`` while jobs run and a commit made while no server listens (lakeFS drops that
webhook and never retries it) both end in the same state as an undisturbed run: every job done
once, one lakehook commit per user commit, no working branch left. Split from
``test_delivery_semantics.py`` (whose helpers it uses) so that ``make test``'s parallel phase
runs the two restart tests beside the rest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pytest

from lakehook.settings import Settings
from pipeline.generator import generate_study
from pipeline.processing.plan import WORKING_PREFIX
from tests.integration.conftest import (
    free_port,
    get_json,
    install_actions,
    new_repository,
    start_server,
)
from tests.integration.test_delivery_semantics import lakehook_merges, wait_jobs_settled
from tests.integration.test_end_to_end import upload_and_commit, wait_state

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack


def test_kill_9_with_pending_jobs_then_restart_completes_each_job_once(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    port = free_port()
    one_worker = {"LAKEHOOK_WORKERS": "1"}
    server = start_server(state, port, one_worker)
    try:
        repo = new_repository(client, "kill")
        install_actions(server, repo)
        branches = ["b1", "b2", "b3"]
        for name in branches:
            client.branches_api.create_branch(
                repo, lakefs_sdk.BranchCreation(name=name, source="main")
            )
        commits = {}
        for i, name in enumerate(branches):
            files = generate_study(patients=400 + 10 * i, seed=11 + i)
            commits[name] = upload_and_commit(client, repo, name, files, f"delivery on {name}")

        # wait until lakeFS has delivered the three post-commit webhooks (their action runs
        # ended), then kill -9 while jobs are still pending or running. Not "until a sync job
        # per branch is listed": a commit's event joins a job already queued for its branch
        # (its create_branch, or a sweep's sync), so a branch may never get one of its own
        # (make test 23:51: b3's commit joined its pending create_branch job)
        deadline = time.monotonic() + 60
        while not _post_commits_delivered(client, repo, set(commits.values())):
            assert time.monotonic() < deadline, "lakeFS did not deliver the post-commit hooks"
            time.sleep(0.05)
        jobs: list[dict[str, Any]] = get_json(f"{server.url}/api/v1/repos/{repo}/jobs")
        unfinished = [j for j in jobs if j["state"] not in {"done", "failed"}]
        assert unfinished, f"every job finished before the kill; nothing was tested: {jobs}"
        server.stop(kill=True)
        assert server.process.returncode == -9

        restarted = start_server(state, port, one_worker)
        try:
            for name in branches:
                status = wait_state(restarted, repo, name, commits[name])
                assert status["state"] == "synced", status
            settled = wait_jobs_settled(restarted, repo)
        finally:
            restarted.stop()
    finally:
        server.stop()

    assert [j for j in settled if j["state"] == "failed"] == []
    interrupted_ids = {j["id"] for j in unfinished}
    finished = {j["id"]: j for j in settled}
    # the interrupted jobs themselves were taken up again and completed (not re-created)
    assert all(finished[i]["state"] == "done" for i in interrupted_ids), settled
    for name in branches:
        assert lakehook_merges(client, repo, name) == {commits[name]: 1}, name
    leftovers = [
        b.id
        for b in client.branches_api.list_branches(repo, amount=1000).results
        if b.id.startswith(WORKING_PREFIX)
    ]
    assert leftovers == []


def _post_commits_delivered(client: LakeFSClient, repo: str, commits: set[str]) -> bool:
    """Whether lakeFS ran the post-commit hooks of all ``commits`` to their end."""
    runs = client.actions_api.list_repository_runs(repo, amount=1000).results
    ended = {
        r.commit_id
        for r in runs
        if r.event_type == "post-commit" and r.status in ("completed", "failed")
    }
    return commits <= ended


def test_commit_made_while_the_server_is_down_is_picked_up_by_the_reconciler(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    port = free_port()
    server = start_server(state, port)
    repo = new_repository(client, "down")
    try:
        install_actions(server, repo)
        first = upload_and_commit(client, repo, "main", generate_study(30, seed=5), "delivery 1")
        assert wait_state(server, repo, "main", first)["state"] == "synced"
    finally:
        server.stop()

    # the server is down: lakeFS's post-commit webhook fails and is never retried
    missed = upload_and_commit(
        client, repo, "main", generate_study(50, seed=5, delivery=2), "delivery 2 (missed)"
    )
    restarted = start_server(state, port)
    try:
        status = wait_state(restarted, repo, "main", missed)
        # a sweep that ran while the job processed may have queued one more (a no-op) behind it
        jobs = wait_jobs_settled(restarted, repo)
    finally:
        restarted.stop()
    assert status["state"] == "synced", status
    found = [j for j in jobs if j["ref"] == "main" and j["event"] == "reconcile"]
    assert found, jobs
    assert all(j["state"] == "done" for j in found), jobs
    assert lakehook_merges(client, repo, "main") == {first: 1, missed: 1}
