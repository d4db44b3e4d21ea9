"""The server killed (SIGKILL) at each step of the write-back, then restarted (issue 12).

For every fault point of ``lakehook/faults.py``, on its own repository and its own servers (four
at a time): a server armed with ``LAKEHOOK_FAULT_POINT`` kills itself there while
processing a delivery; a server without it is started on the same state dir; the branch must
end ``synced`` with exactly one lakehook commit for the delivery, no ``_lakehook-*`` branch
left, tables equal to an undisturbed run's (row counts and per-column checksums through Trino)
and one COMPLETE lineage run per table, under the run id the killed server started.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lakehook import faults
from lakehook.settings import Settings
from pipeline.generator import generate_study
from pipeline.lineage.naming import table_run_id
from pipeline.processing.plan import WORKING_PREFIX
from tests.integration.conftest import (
    free_port,
    new_repository,
    start_server,
    trino_query,
)
from tests.integration.test_delivery_semantics import lakehook_merges
from tests.integration.test_end_to_end import upload_and_commit, wait_state

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = [pytest.mark.stack, pytest.mark.faults]  # part of make test

FILES = generate_study(patients=30, seed=12)
ARMED = {"LAKEHOOK_TESTING": "1", "LAKEHOOK_WORKERS": "1"}
STARTUP = 300.0  # servers start several at once on a shared machine
PARALLEL = 4  # scenarios at once: the 2-core machine, not lakehook, limits this


@dataclass
class Outcome:
    point: str
    repo: str
    user_commit: str
    status: dict[str, Any]
    recovery_seconds: float
    killed_log: str
    journal: list[dict[str, Any]]
    journal_before_restart: int
    merges: dict[str, int]
    leftovers: list[str]
    tables: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def table_fingerprints(
    settings: Settings, schema: str, tables: list[str]
) -> dict[str, tuple[Any, ...]]:
    """Row count and a checksum per column of each table, through Trino: two statements for
    the whole schema (its columns, then one row per table), not two per table."""
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for table, column in trino_query(
        settings,
        "SELECT table_name, column_name FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' ORDER BY table_name, ordinal_position",
    ):
        if table in columns:
            columns[table].append(column)
    selects = []
    for table in tables:
        sums = ", ".join(f'checksum("{c}")' for c in columns[table])
        selects.append(f"SELECT '{table}', count(*), ARRAY[{sums}] FROM {schema}.\"{table}\"")
    return {
        table: (tuple(columns[table]), count, *sums)
        for table, count, sums in trino_query(settings, " UNION ALL ".join(selects))
    }


def journal(state: Path) -> list[dict[str, Any]]:
    path = state / "lineage" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def working_branches(client: LakeFSClient, repo: str) -> list[str]:
    return [
        b.id
        for b in client.branches_api.list_branches(repo, amount=1000).results
        if b.id.startswith(WORKING_PREFIX)
    ]


def run_point(client: LakeFSClient, settings: Settings, tmp: Path, point: str | None) -> Outcome:
    """One scenario on its own repository; ``point`` None: the undisturbed run."""
    name = point or "calm"
    state, port = tmp / name, free_port()
    repo = new_repository(client, f"fault-{name}")
    url = f"http://127.0.0.1:{port}"
    subprocess.run(  # the actions call the server about to start; no server needed for this
        [sys.executable, "-c", "from lakehook.cli import main; main()", "install-actions"]
        + ["--repo", repo, "--url", url],
        check=True,
        capture_output=True,
    )
    env = {**ARMED, "LAKEHOOK_FAULT_POINT": point} if point else {}
    armed = start_server(state, port, env, ready_timeout=STARTUP)
    # the post-commit webhook of this commit makes the job; the job works from the head
    user = upload_and_commit(client, repo, "main", FILES, f"delivery ({name})")
    killed_log = ""
    if point:
        try:
            armed.process.wait(timeout=300)
        except Exception:
            armed.stop(kill=True)
            pytest.fail(f"{point}: the armed server did not kill itself")
        assert armed.process.returncode == -9, (point, armed.process.returncode)
        killed_log = "".join(
            f.read_text(errors="replace") for f in (state / "serve.log", *state.glob("logs/*"))
        )
    before = len(journal(state))
    restarted_at = time.monotonic()
    server = start_server(state, port, ready_timeout=STARTUP) if point else armed
    try:
        status = wait_state(server, repo, "main", user)
        recovery = time.monotonic() - restarted_at
    finally:
        server.stop()
    return Outcome(
        point=name,
        repo=repo,
        user_commit=user,
        status=status,
        recovery_seconds=recovery,
        killed_log=killed_log,
        journal=journal(state),
        journal_before_restart=before,
        merges=lakehook_merges(client, repo, "main"),
        leftovers=working_branches(client, repo),
        tables=table_fingerprints(
            settings, status["schema"], sorted(t["table"] for t in status["tables"])
        )
        if status.get("state") == "synced"
        else {},
    )


@pytest.mark.timeout(1800)  # 15 server starts; on a loaded 2-core machine they take minutes
def test_killed_at_each_fault_point_then_restarted_converges(
    client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    points: list[str | None] = [None, *faults.POINTS]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {p: pool.submit(run_point, client, stack_settings, tmp_path, p) for p in points}
        outcomes = {p: f.result() for p, f in futures.items()}
    calm = outcomes.pop(None)
    assert calm.status["state"] == "synced", calm.status
    assert len(calm.tables) == 5
    report = []
    for point, got in outcomes.items():
        assert point is not None
        # a point may be narrowed to one dataset in the log: "before-dataset:ae reached"
        assert re.search(rf"fault point {re.escape(point)}(:\w+)? reached", got.killed_log), point
        assert got.status["state"] == "synced", (point, got.status)
        assert got.merges == {got.user_commit: 1}, (point, got.merges)
        assert got.leftovers == [], (point, got.leftovers)
        assert got.tables == calm.tables, point
        for table in got.tables:
            run_id = table_run_id(got.repo, got.user_commit, table)
            events = [e["eventType"] for e in got.journal if e["run"]["runId"] == run_id]
            assert events.count("COMPLETE") == 1, (point, table, events)
        started = {
            e["run"]["runId"]
            for e in got.journal[: got.journal_before_restart]
            if e["eventType"] == "START"
        }
        first = table_run_id(got.repo, got.user_commit, sorted(got.tables)[0])
        assert first in started, (point, "the killed server did not start the run it resumed")
        report.append(f"{point}: recovered in {got.recovery_seconds:.1f}s")
    print("\n" + "\n".join(report))
