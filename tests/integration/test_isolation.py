"""The intake survives its jobs (issue 16): memory ceiling and kill -9 of a worker.

A real ``lakehook serve`` with two worker processes and test-only fault points
(``lakehook/faults.py``): processing the dataset ``LB_BOOM`` allocates until the worker's 3 GiB
ceiling, and the write-back of branch ``pause`` pauses 5 s right after its merge. Three branches
are committed at once: ``boom`` must exhaust two workers and end quarantined with the reason in
its status; ``pause`` has its worker killed with SIGKILL while it pauses after the merge and
must complete on another worker with exactly one lakehook commit; ``good`` is processed as
usual. Throughout, ``/healthz`` and a webhook are polled, and every answer must come back, fast.

The wall-clock limit has its own file (``test_isolation_time_limit.py``), so that pytest-xdist
(``--dist loadfile``) runs the two servers side by side. The helpers here serve both.
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
from server.worker_main import autogroup
from tests.integration.conftest import (
    RunningServer,
    free_port,
    get_json,
    install_actions,
    new_repository,
    start_server,
    unique_name,
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
        self.noise = unique_name("iso-noise")  # the polled webhook's repository: nobody's
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
            {"event_type": "post-delete-tag", "repository_id": self.noise, "tag_id": "t"}
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


def _group_nice(pid: int) -> int:
    """The niceness of ``pid``'s autogroup, which it must have."""
    group = autogroup(pid)
    assert group is not None, f"process {pid} is in no autogroup, but the intake is"
    return group[1]


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


def _serve(tmp_path: Path, env: dict[str, str]) -> RunningServer:
    return start_server(
        tmp_path / "state",
        free_port(),
        {"LAKEHOOK_WORKERS": "2", "LAKEHOOK_TESTING": "1", **env},
    )


def _synced(server: RunningServer, repo: str, branch: str, commit: str) -> Any:
    """The branch's status once ``commit`` is processed and verified, else None."""
    status = _status(server, repo, branch)
    return status if status.get("state") == "synced" and status["source_commit"] == commit else None


def _failed(server: RunningServer, repo: str, branch: str, commit: str) -> Any:
    """The branch's status once its head ``commit`` is recorded as failed, else None."""
    status = _status(server, repo, branch)
    return status if status.get("state") == "failed" and status["head_commit"] == commit else None


def _workers_ready(server: RunningServer) -> Any:
    """/healthz once every worker process is up and taking jobs (the dead ones replaced)."""
    health = get_json(f"{server.url}/healthz")
    return health if all(w["ready"] for w in health["workers"]) else None


def _assert_intake_answered(poller: Poller) -> None:
    """Every health check and webhook of the run was answered, none slower than ``FAST``."""
    assert len(poller.answers) >= 20, poller.answers
    failed = [a for a in poller.answers if a[1] not in (200, 202)]
    slow = [a for a in poller.answers if a[2] > FAST]
    assert failed == [], failed[:10]
    assert slow == [], slow[:10]


def _assert_quarantined(status: dict[str, Any], limit: str, setting: str, dataset: str) -> None:
    (error,) = status["errors"]
    assert error["stage"] == "quarantine", status
    assert error["limit"] == limit
    assert error["file"] == f"raw/{dataset}.csv"
    assert f"raw/{dataset}.csv" in error["message"]
    assert "twice" in error["message"]
    assert setting in error["hint"]
    assert error["commit"] == status["head_commit"]


def _with_dataset(study: dict[str, bytes], dataset: str) -> dict[str, bytes]:
    """``study``'s contents file declaring a lab dataset ``dataset``, and that dataset alone."""
    declared = study["raw/contents.csv"] + lab_contents(dataset).split(b"\n", 1)[1]
    return {"raw/contents.csv": declared, f"raw/{dataset}.csv": lab_csv(2000)}


def test_a_job_that_eats_memory_or_loses_its_worker_never_touches_the_intake(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    server = _serve(
        tmp_path,
        {
            "LAKEHOOK_WORKER_MEMORY_LIMIT_MB": "3072",
            "LAKEHOOK_FAULT_POINT": "before-dataset:LB_BOOM=allocate,after-merge:pause=pause",
        },
    )
    try:
        repo = new_repository(client, "iso")
        install_actions(server, repo)
        for name in ("boom", "pause", "good"):
            client.branches_api.create_branch(
                repo, lakefs_sdk.BranchCreation(name=name, source="main")
            )
        study = generate_study(patients=30, seed=4)
        files = {"boom": _with_dataset(study, "LB_BOOM"), "pause": study, "good": study}
        log = server.state_dir / "serve.log"
        with Poller(server) as poller:
            commits = {
                name: upload_and_commit(client, repo, name, data, f"delivery on {name}")
                for name, data in files.items()
            }
            # kill -9 the worker that holds the pause job while it pauses after its merge
            _wait(
                "the pause job pausing after its merge",
                lambda: "fault point after-merge:pause reached" in log.read_text(errors="replace"),
            )
            job = next(
                j
                for j in _api(server, f"/api/v1/repos/{repo}/jobs")
                if j["ref"] == "pause" and j["state"] == "running"
            )
            os.kill(int(job["worker"].split(":")[0]), signal.SIGKILL)

            good = _wait("good synced", lambda: _synced(server, repo, "good", commits["good"]))
            paused = _wait("pause synced", lambda: _synced(server, repo, "pause", commits["pause"]))
            boom = _wait("boom quarantined", lambda: _failed(server, repo, "boom", commits["boom"]))
            jobs = {j["id"]: j for j in _api(server, f"/api/v1/repos/{repo}/jobs")}
            health = _wait("the workers replaced", lambda: _workers_ready(server))

        _assert_intake_answered(poller)

        # good was processed; pause completed on another worker, its merge made once
        assert jobs[job["id"]]["state"] == "done"
        assert jobs[job["id"]]["attempts"] >= 2
        assert lakehook_merges(client, repo, "pause") == {commits["pause"]: 1}
        assert {t["table"] for t in paused["tables"]} == {t["table"] for t in good["tables"]}

        # boom was quarantined after its second try, the reason in the status
        _assert_quarantined(boom, "memory", "LAKEHOOK_WORKER_MEMORY_LIMIT_MB", "LB_BOOM")
        assert any(j["ref"] == "boom" and j["state"] == "quarantined" for j in jobs.values())
        assert sum(w["restarts"] for w in health["workers"] if w["role"] == "worker") == 3
        # the jobs run 10 nicer than the intake, so that the intake gets the cores first when
        # a request comes in (LAKEHOOK_WORKER_NICE): the reconciler process as a whole, a
        # worker process only in its job threads; a worker's main thread, which claims and
        # ends jobs in the database the intake writes too, keeps the intake's priority (a nice
        # lock holder would make the intake wait: tests/unit/test_leases_and_failures.py)
        intake = os.getpriority(os.PRIO_PROCESS, server.process.pid)
        nicer = min(intake + 10, 19)
        assert {
            (w["role"], os.getpriority(os.PRIO_PROCESS, w["pid"])) for w in health["workers"]
        } == {("worker", intake), ("reconciler", nicer)}
        # the pre-merge decisions are made in gate processes of their own, never in the
        # intake, 5 nicer than it (LAKEHOOK_GATE_NICE; server/gate_process.py)
        gates = health["gate_processes"]
        assert len(gates) == 2
        assert server.process.pid not in gates
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in gates} == {min(intake + 5, 19)}
        # each in a session, so a scheduling group, of its own: the kernel shares the cores
        # between groups first, and the intake's stays idle until a request comes
        sessions = {os.getsid(pid) for pid in [*gates, *(w["pid"] for w in health["workers"])]}
        assert os.getsid(server.process.pid) not in sessions
        assert len(sessions) == len(gates) + len(health["workers"])
        # and that group is 10 (a gate's 5) nicer than the intake's, or than 0 where the intake
        # is in the kernel's root group (as on the CI machine); where the kernel makes no
        # autogroups, the processes' own niceness above is all there is
        intake_group = autogroup(server.process.pid)
        if intake_group is None:
            assert {autogroup(pid) for pid in [*gates, *(w["pid"] for w in health["workers"])]} == {
                None
            }
        else:
            nice = intake_group[1]
            assert {_group_nice(w["pid"]) for w in health["workers"]} == {min(nice + 10, 19)}
            assert {_group_nice(pid) for pid in gates} == {min(nice + 5, 19)}
        assert _metric(server, "lakehook_quarantined_jobs_total", limit="memory") == 1
        assert _metric(server, "lakehook_worker_restarts_total", reason="memory") == 2
        assert _metric(server, "lakehook_worker_restarts_total", reason="killed") == 1
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
