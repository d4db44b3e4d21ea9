"""The intake survives its jobs (issue 16): memory ceiling, wall-clock limit, kill -9 of a worker.

One real ``lakehook serve`` with two worker processes, a 3 GiB memory ceiling per worker, a
45 s limit per job and three test-only fault points (``lakehook/faults.py``): processing the
dataset ``LB_BOOM`` allocates until the ceiling, ``LB_SLOW`` hangs, ``LB_PAUSE`` pauses 5 s.
Four branches are committed at once: ``boom`` and ``slow`` must each kill or exhaust two
workers and end quarantined with the reason in their status, ``pause`` has its worker killed
with SIGKILL mid-job and must complete on another worker with exactly one lakehook commit,
``good`` is processed as usual. Throughout, ``/healthz`` and a webhook are polled, and every
answer must come back, fast.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lakefs_sdk
import pytest

from lakehook.settings import Settings
from pipeline.generator import generate_study, lab_contents, lab_csv
from tests.integration.conftest import (
    RunningServer,
    free_port,
    get_json,
    install_actions,
    new_repository,
    start_server,
)
from tests.integration.test_delivery_semantics import lakehook_merges
from tests.integration.test_end_to_end import upload_and_commit

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = pytest.mark.stack

SETTLE = 300.0
FAST = 2.0  # seconds: the slowest answer the intake may give while its workers die (2 busy cores)


class Poller:
    """Polls ``/healthz`` and posts a webhook every 50 ms; records (what, status, seconds)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.answers: list[tuple[str, int, float]] = []
        self.token = server.env.get("LAKEHOOK_WEBHOOK_TOKEN") or Settings.load().webhook_token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _timed(self, what: str, request: urllib.request.Request) -> None:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as err:
            status = int(err.code)
        except OSError:
            status = 0
        self.answers.append((what, status, time.perf_counter() - started))

    def _run(self) -> None:
        body = json.dumps(
            {"event_type": "post-delete-tag", "repository_id": "iso-noise", "tag_id": "t"}
        ).encode()
        while not self._stop.wait(0.05):
            self._timed("healthz", urllib.request.Request(f"{self.server.url}/healthz"))
            self._timed(
                "webhook",
                urllib.request.Request(
                    f"{self.server.url}/webhooks/lakefs",
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json", "X-Lakehook-Token": self.token},
                ),
            )


def _status(server: RunningServer, repo: str, branch: str) -> dict[str, Any]:
    try:
        return dict(get_json(f"{server.url}/api/v1/repos/{repo}/branches/{branch}/status"))
    except urllib.error.HTTPError:
        return {}


def _api(server: RunningServer, path: str) -> Any:
    token = server.env.get("LAKEHOOK_WEBHOOK_TOKEN") or Settings.load().webhook_token
    request = urllib.request.Request(f"{server.url}{path}", headers={"X-Lakehook-Token": token})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _wait(what: str, check: Any, timeout: float = SETTLE) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s; last: {last}")


def _metric(server: RunningServer, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()  # noqa: S310
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_job_that_eats_memory_hangs_or_loses_its_worker_never_touches_the_intake(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path / "state",
        free_port(),
        {
            "LAKEHOOK_WORKERS": "2",
            "LAKEHOOK_WORKER_MEMORY_LIMIT_MB": "3072",
            "LAKEHOOK_JOB_TIME_LIMIT_SECONDS": "45",
            "LAKEHOOK_TESTING": "1",
            "LAKEHOOK_FAULT_POINT": (
                "before-dataset:LB_BOOM=allocate,before-dataset:LB_SLOW=hang,"
                "before-dataset:LB_PAUSE=pause"
            ),
        },
    )
    try:
        _api(server, "/api/v1/repos/none/jobs")  # the token works
        repo = new_repository(client, "iso")
        install_actions(server, repo)
        for name in ("boom", "slow", "pause", "good"):
            client.branches_api.create_branch(
                repo, lakefs_sdk.BranchCreation(name=name, source="main")
            )
        study = generate_study(patients=30, seed=4)
        contents = study["raw/contents.csv"]
        extra = {
            name: {"raw/contents.csv": contents + lab_contents(dataset).split(b"\n", 1)[1]}
            for name, dataset in (("boom", "LB_BOOM"), ("slow", "LB_SLOW"), ("pause", "LB_PAUSE"))
        }
        lab = lab_csv(2000)
        files = {
            "boom": {**study, **extra["boom"], "raw/LB_BOOM.csv": lab},
            "slow": {**study, **extra["slow"], "raw/LB_SLOW.csv": lab},
            "pause": {**study, **extra["pause"], "raw/LB_PAUSE.csv": lab},
            "good": study,
        }
        with Poller(server) as poller:
            commits = {
                name: upload_and_commit(client, repo, name, data, f"delivery on {name}")
                for name, data in files.items()
            }
            # kill -9 the worker that holds the pause job, while it pauses in the job
            job = _wait(
                "the pause job running",
                lambda: next(
                    (
                        j
                        for j in _api(server, f"/api/v1/repos/{repo}/jobs")
                        if j["ref"] == "pause" and j["state"] == "running" and j["worker"]
                    ),
                    None,
                ),
            )
            os.kill(int(job["worker"].split(":")[0]), signal.SIGKILL)

            def settled(name: str, state: str) -> Any:
                status = _status(server, repo, name)
                done = status.get("state") == state and status.get("head_commit")
                return status if done else None

            good = _wait("good synced", lambda: settled("good", "synced"))
            paused = _wait("pause synced", lambda: settled("pause", "synced"))
            boom = _wait("boom quarantined", lambda: settled("boom", "failed"))
            slow = _wait("slow quarantined", lambda: settled("slow", "failed"))
            jobs = _api(server, f"/api/v1/repos/{repo}/jobs")
            health = get_json(f"{server.url}/healthz")

        # the intake answered every poll, fast, while four workers died under it
        assert poller.answers, "nothing was polled"
        slow_answers = [a for a in poller.answers if a[2] > FAST]
        failed = [a for a in poller.answers if a[1] not in (200, 202)]
        assert failed == [], failed[:10]
        assert slow_answers == [], slow_answers[:10]

        # good and pause were processed; pause completed on another worker with one commit
        assert good["source_commit"] == commits["good"]
        assert paused["source_commit"] == commits["pause"]
        assert lakehook_merges(client, repo, "pause") == {commits["pause"]: 1}
        assert any(t["table"] == "lb_pause" for t in paused["tables"])

        # boom and slow were quarantined after their second try, the reason in the status
        for status, limit, setting, dataset in (
            (boom, "memory", "LAKEHOOK_WORKER_MEMORY_LIMIT_MB", "LB_BOOM"),
            (slow, "time", "LAKEHOOK_JOB_TIME_LIMIT_SECONDS", "LB_SLOW"),
        ):
            (error,) = status["errors"]
            assert error["stage"] == "quarantine", status
            assert error["limit"] == limit
            assert error["file"] == f"raw/{dataset}.csv"
            assert f"raw/{dataset}.csv" in error["message"]
            assert "twice" in error["message"]
            assert setting in error["hint"]
            assert error["commit"] == status["head_commit"]
        quarantined = {j["ref"] for j in jobs if j["state"] == "quarantined"}
        assert {"boom", "slow"} <= quarantined
        restarts = {w["role"]: 0 for w in health["workers"]}
        for w in health["workers"]:
            restarts[w["role"]] += w["restarts"]
        assert restarts["worker"] >= 5  # 2 memory + 2 time + 1 kill -9
        assert _metric(server, "lakehook_quarantined_jobs_total", limit="memory") >= 1
        assert _metric(server, "lakehook_quarantined_jobs_total", limit="time") >= 1
        assert _metric(server, "lakehook_worker_restarts_total", reason="memory") >= 2
        assert _metric(server, "lakehook_worker_restarts_total", reason="time") >= 2
        assert _metric(server, "lakehook_job_duration_seconds_count") >= 2  # from the workers

        # a quarantined head is never run again: a replayed webhook ends at once
        before = _metric(server, "lakehook_worker_restarts_total")
        token = server.env.get("LAKEHOOK_WEBHOOK_TOKEN") or Settings.load().webhook_token
        replay = urllib.request.Request(
            f"{server.url}/webhooks/lakefs",
            data=json.dumps(
                {
                    "event_type": "post-commit",
                    "repository_id": repo,
                    "branch_id": "boom",
                    "commit_id": boom["head_commit"],
                }
            ).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Lakehook-Token": token},
        )
        with urllib.request.urlopen(replay, timeout=10) as response:  # noqa: S310
            job_id = json.loads(response.read())["job_id"]
        refused = _wait(
            "the replayed job refused",
            lambda: (j := _api(server, f"/api/v1/jobs/{job_id}"))["state"] == "quarantined" and j,
            timeout=60,
        )
        assert "quarantined" in refused["error"]
        assert _metric(server, "lakehook_worker_restarts_total") == before
        assert _status(server, repo, "boom")["errors"][0]["stage"] == "quarantine"
    finally:
        server.stop()
