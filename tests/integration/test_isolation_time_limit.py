"""The intake survives its jobs (issue 16): a job that hangs meets its wall-clock limit.

A real ``lakehook serve`` with two worker processes, a 15 s limit per job and a test-only fault
point (``lakehook/faults.py``): processing the dataset ``LB_SLOW`` hangs. Its worker is killed at
the limit, the job retried once on a fresh worker, killed again and quarantined, with the limit,
the file and what to do in the branch's status; ``/healthz`` and a webhook are polled throughout
and every answer must come back, fast. (Its own file so that pytest-xdist runs it beside
``test_isolation.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lakehook.settings import Settings
from pipeline.generator import generate_study
from tests.integration.conftest import install_actions, new_repository
from tests.integration.test_end_to_end import upload_and_commit
from tests.integration.test_isolation import (
    Poller,
    _api,
    _assert_intake_answered,
    _assert_quarantined,
    _failed,
    _metric,
    _serve,
    _wait,
    _with_dataset,
    _workers_ready,
)

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack


def test_a_job_that_hangs_is_killed_at_its_time_limit_twice_then_quarantined(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    server = _serve(
        tmp_path,
        {
            "LAKEHOOK_JOB_TIME_LIMIT_SECONDS": "15",
            "LAKEHOOK_FAULT_POINT": "before-dataset:LB_SLOW=hang",
        },
    )
    try:
        repo = new_repository(client, "iso")
        install_actions(server, repo)
        files = _with_dataset(generate_study(patients=30, seed=4), "LB_SLOW")
        with Poller(server) as poller:
            commit = upload_and_commit(client, repo, "main", files, "a delivery that hangs")
            slow = _wait("main quarantined", lambda: _failed(server, repo, "main", commit))
            jobs = _api(server, f"/api/v1/repos/{repo}/jobs")
            health = _wait("the workers replaced", lambda: _workers_ready(server))

        _assert_intake_answered(poller)
        _assert_quarantined(slow, "time", "LAKEHOOK_JOB_TIME_LIMIT_SECONDS", "LB_SLOW")
        assert "15 s" in slow["errors"][0]["message"]
        assert any(j["state"] == "quarantined" for j in jobs), jobs
        assert sum(w["restarts"] for w in health["workers"] if w["role"] == "worker") >= 2
        assert _metric(server, "lakehook_quarantined_jobs_total", limit="time") == 1
        assert _metric(server, "lakehook_worker_restarts_total", reason="time") >= 2
    finally:
        server.stop()
