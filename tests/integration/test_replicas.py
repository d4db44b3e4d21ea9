"""Two ``lakehook serve`` replicas on one PostgreSQL queue (issue 15, "Several replicas").

Both replicas (own ports, own state dirs, one ``LAKEHOOK_QUEUE_URL``) stand behind one front
URL that lakeFS's actions call. 200 real lakeFS commits over 5 branches (five at a time) are
the events; half-way, one replica is killed with SIGKILL while it works. In the end every
branch is ``synced`` at its last commit, no source commit got two lakehook commits (commits
that arrived while their branch's job waited were coalesced into it: processed with it, once),
no job failed or is left over, and both replicas did work.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lakehook.settings import Settings
from tests.integration.replica_load import (
    commit_load,
    prepare_repository,
    start_replicas,
    wait_synced,
)
from tests.integration.test_delivery_semantics import lakehook_merges

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack

BRANCHES = [f"b{i}" for i in range(5)]
PER_BRANCH = 40  # 5 x 40 = 200 events


def test_two_replicas_process_200_events_once_and_a_killed_one_loses_nothing(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    with start_replicas(2, tmp_path, workers=1, lease_seconds=15) as replicas:
        repo = prepare_repository(client, replicas, BRANCHES)
        killed = threading.Event()
        at_kill: dict[str, int] = {}

        def kill_half_way(done: int) -> None:
            if done >= len(BRANCHES) * PER_BRANCH // 2 and not killed.is_set():
                killed.set()
                at_kill.update(replicas.job_counts())
                replicas.kill(1)

        commits = commit_load(client, repo, BRANCHES, PER_BRANCH, kill_half_way)
        assert killed.is_set()
        assert replicas.servers[1].process.returncode == -9
        finals = {b: c[-1] for b, c in commits.items()}
        statuses = wait_synced(replicas.url, repo, finals, wait=240)
        counts = replicas.wait_drained(wait=120)
        # claimed, not finished: the killed replica may be killed in its first job, which the
        # other replica then does (seen under load: it had started one job, finished none)
        claimed_per_replica = replicas.jobs_per_replica('"job started"')

    assert sum(len(c) for c in commits.values()) == 200
    # the kill came while there was work: jobs waiting or running in the shared queue
    assert at_kill.get("pending", 0) + at_kill.get("running", 0) > 0, at_kill
    for branch in BRANCHES:
        assert statuses[branch]["state"] == "synced", statuses[branch]
        merges = lakehook_merges(client, repo, branch)
        # one lakehook commit per processed source commit, never two; the last one processed
        assert set(merges.values()) == {1}, (branch, merges)
        assert finals[branch] in merges, (branch, merges)
        assert set(merges) <= set(commits[branch]) | {_main_setup(client, repo)}
        rows = {t["table"]: t["rows"] for t in statuses[branch]["tables"]}
        assert rows == {"dm": 3}
    # nothing left over or failed; both replicas' workers took jobs from the one queue
    assert set(counts) <= {"done", "superseded"}, counts
    assert all(n > 0 for n in claimed_per_replica), claimed_per_replica


def _main_setup(client: LakeFSClient, repo: str) -> str:
    """The setup commit on main, whose write-back every branch inherits."""
    log = client.refs_api.log_commits(repo, "main", amount=100).results
    return next(str(c.id) for c in log if c.message == "setup")
