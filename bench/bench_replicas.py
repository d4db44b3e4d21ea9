"""Replicas: events per second to ``synced`` under the 200-event load, two replicas against one.

Each configuration ("R x W": R ``lakehook serve`` replicas with W worker processes each, on
one PostgreSQL queue in a fresh schema, behind one front URL, as in
``tests/integration/test_replicas.py``) gets its own repository with 5 branches made from a
processed ``main``; then 200 real lakeFS commits (40 per branch, the five branches at once)
are made and the clock runs from the first commit until every branch is ``synced`` at its
last commit. Events per second = 200 / that time. The configurations run one after another
in one run, so they share the machine's state; the ratio of two replicas to one comes first.

Needs the local stack (``lakehook stack up``), including its PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lakefs_sdk
from lakefs_sdk.client import LakeFSClient

from lakehook.settings import Settings
from tests.integration.replica_load import (
    commit_load,
    prepare_repository,
    start_replicas,
    wait_synced,
)
from tests.integration.test_delivery_semantics import lakehook_merges

BRANCHES = [f"b{i}" for i in range(5)]


@dataclass(frozen=True)
class Result:
    replicas: int
    workers: int
    events: int
    commit_seconds: float  # making the 200 commits
    synced_seconds: float  # first commit -> every branch synced at its last commit
    jobs_done: int
    lakehook_commits: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.synced_seconds

    @property
    def label(self) -> str:
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''} x {self.workers} worker"


def lakefs_client(settings: Settings) -> LakeFSClient:
    return LakeFSClient(
        lakefs_sdk.Configuration(
            host=f"{settings.lakefs_url}/api/v1",
            username=settings.lakefs_access_key_id,
            password=settings.lakefs_secret_access_key,
        )
    )


def run_one(client: LakeFSClient, replicas: int, workers: int, per_branch: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        with start_replicas(replicas, Path(tmp), workers=workers) as running:
            repo = prepare_repository(client, running, BRANCHES)
            started = time.monotonic()
            commits = commit_load(client, repo, BRANCHES, per_branch)
            committed = time.monotonic()
            wait_synced(running.url, repo, {b: c[-1] for b, c in commits.items()}, wait=600)
            synced = time.monotonic()
            counts = running.job_counts()
        merges = sum(sum(lakehook_merges(client, repo, b).values()) for b in BRANCHES)
    return Result(
        replicas,
        workers,
        len(BRANCHES) * per_branch,
        committed - started,
        synced - started,
        counts.get("done", 0),
        merges,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default="2x1,1x1,1x2",
        help="replicas x workers per replica, comma-separated; the first two are compared",
    )
    parser.add_argument("--per-branch", type=int, default=40, help="commits per branch (5)")
    args = parser.parse_args(argv)
    configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]
    client = lakefs_client(Settings.load())
    results = [run_one(client, r, w, args.per_branch) for r, w in configs]
    if len(results) >= 2:
        a, b = results[0], results[1]
        print(
            f"{a.label} / {b.label}: {a.events_per_second / b.events_per_second:.2f}x events "
            f"per second to synced ({a.events_per_second:.2f} vs {b.events_per_second:.2f})"
        )
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        "\n| configuration | events | commits made in s | all synced after s | of which after "
        "the last commit s | events/s | jobs run | lakehook commits |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.label} | {r.events} | {r.commit_seconds:.1f} | {r.synced_seconds:.1f} | "
            f"{r.synced_seconds - r.commit_seconds:.1f} | {r.events_per_second:.2f} | "
            f"{r.jobs_done} | {r.lakehook_commits} |"
        )


if __name__ == "__main__":
    main()
