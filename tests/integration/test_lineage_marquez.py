"""Lineage in the local stack's real Marquez, delivered live by ``lakehook serve``.

A commit through the lakeFS API fires lakeFS's real webhooks; the server processes it and its
deliverer (``server/lineage.py``) sends the events; Marquez then shows the seed's graph
(ingestion -> raw CSV -> keying job -> table). A real browser (Debian's headless Chromium)
draws that graph in the Marquez web UI and saves the screenshot the README shows. Marquez
out of lakehook's reach for 60 s while a commit is processed (a relay cut between them,
``partition.py``; the shared Marquez stays up for the other tests): every event arrives once
it is reachable again, none twice.

These tests FAIL, never skip, when Marquez or the stack is missing. Every test has its own
repository, server, port and state dir.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from lakehook.settings import Settings
from lakehook.stack.commands import stack_settings as with_stack_endpoints
from pipeline.lineage import naming
from tests.integration.chromium import BrowserError, Chromium
from tests.integration.conftest import (
    RunningServer,
    free_port,
    install_actions,
    start_server,
)
from tests.integration.partition import Partition
from tests.integration.test_end_to_end import CONTENTS, DM, upload_and_commit, wait_state
from tests.repositories import created

pytestmark = [pytest.mark.stack, pytest.mark.marquez]

BROKEN_SV = b"""STUDYID,USUBJID,VISITNUM,SVSTDTC
CDISCPILOT01,01-701-1015,1,2014-01-02,extra
"""
DELIVERY_WAIT = 90.0  # "within seconds": generous for a loaded 2-core machine
OUTAGE = 60.0
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "lineage.png"


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=15) as response:  # noqa: S310
        return json.loads(response.read())


def q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@pytest.fixture(scope="module")
def marquez_settings(stack_settings: Settings) -> Settings:
    """The stack's settings with its Marquez endpoints (``lakehook stack env`` names them even
    when the environment does not); fails the test when Marquez does not answer."""
    settings = with_stack_endpoints(stack_settings)
    try:
        get(settings.marquez_url, "/api/v1/namespaces")
    except (OSError, urllib.error.URLError, ValueError) as err:
        pytest.fail(
            f"Marquez at {settings.marquez_url} does not answer ({err}): run `lakehook stack up`"
        )
    return settings


def lakefs_client(settings: Settings) -> LakeFSClient:
    return LakeFSClient(
        lakefs_sdk.Configuration(
            host=f"{settings.lakefs_url}/api/v1",
            username=settings.lakefs_access_key_id,
            password=settings.lakefs_secret_access_key,
        )
    )


def short_repository(client: LakeFSClient) -> str:
    """A new repository with a 9-character name: the web UI shows job names of up to 16
    characters in full, so ``<repo>.ingest`` and ``<repo>.dm`` are readable on the graph."""
    repo = created(f"l{uuid.uuid4().hex[:8]}")
    client.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(
            name=repo, storage_namespace=f"local://{repo}", default_branch="main"
        )
    )
    return repo


@dataclass
class Study:
    repo: str
    commits: list[str]
    server: RunningServer
    client: LakeFSClient


def serve_with_marquez(settings: Settings, state: Path) -> RunningServer:
    return start_server(
        state, free_port(), {"LAKEHOOK_MARQUEZ_URL": settings.marquez_url}, ready_timeout=180
    )


@pytest.fixture(scope="module")
def study(marquez_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    """A repository with two commits through lakeFS's webhooks: DM fine, then SV broken.

    Two commits, not one: Marquez 0.51 draws a job whose run has a parent run in the colour of
    the parent's current run (docs/lineage.md), so a commit with a failed table would draw the
    fine table's job red too; here DM's job is green and SV's red, as the README shows.
    """
    client = lakefs_client(marquez_settings)
    server = serve_with_marquez(marquez_settings, tmp_path_factory.mktemp("marquez") / "state")
    try:
        repo = short_repository(client)
        install_actions(server, repo)
        commits = []
        for files, message, state in (
            ({"raw/contents.csv": CONTENTS, "raw/DM.csv": DM}, "delivery 1", "synced"),
            ({"raw/SV.csv": BROKEN_SV}, "delivery 2 (SV cut short)", "failed"),
        ):
            commit = upload_and_commit(client, repo, "main", files, message)
            status = wait_state(server, repo, "main", commit)
            assert status["state"] == state, status
            wait_delivered(server, naming.commit_run_id(repo, commit))
            commits.append(commit)
        yield Study(repo, commits, server, client)
    finally:
        server.stop()


def wait_delivered(server: RunningServer, commit_run: str) -> None:
    """Poll until the commit run has ended in the journal and the server's deliverer has
    nothing pending: Marquez then holds every event of the commit ("within seconds")."""
    deadline = time.monotonic() + DELIVERY_WAIT
    while not (
        {(commit_run, "COMPLETE"), (commit_run, "FAIL")} & set(journal_events(server.state_dir))
        and metric(server, "lakehook_lineage_events_pending") == 0
    ):
        if time.monotonic() > deadline:
            pending = metric(server, "lakehook_lineage_events_pending")
            pytest.fail(f"{pending:.0f} event(s) still pending after {DELIVERY_WAIT:.0f} s")
        time.sleep(0.2)


def table_node(repo: str, table: str) -> str:
    return f"dataset:s3://{repo}:main/tables/{table}"


def raw_node(repo: str, name: str) -> str:
    return f"dataset:s3://{repo}:main/raw/{name}"


def job_node(job: str) -> str:
    return f"job:{naming.JOB_NAMESPACE}:{job}"


def wait_for_graph(marquez: str, node: str, wanted: set[str]) -> dict[str, Any]:
    """Poll Marquez's lineage graph around ``node`` until it holds every ``wanted`` node id,
    and ``node``'s dataset has its fields: the table and its schema come with the COMPLETE
    (make test 00:41: the graph was there, the table's fields not)."""
    deadline = time.monotonic() + DELIVERY_WAIT
    ids: set[str] = set()
    while time.monotonic() < deadline:
        try:
            graph: dict[str, Any] = get(marquez, f"/api/v1/lineage?nodeId={q(node)}&depth=10")
        except urllib.error.HTTPError:  # 404 until the node exists
            graph = {"graph": []}
        ids = {n["id"] for n in graph["graph"]}
        fields = [(n.get("data") or {}).get("fields") for n in graph["graph"] if n["id"] == node]
        if wanted <= ids and fields and fields[0]:
            return graph
        time.sleep(0.5)
    pytest.fail(
        f"Marquez never showed {sorted(wanted - ids)} (or {node}'s fields) around {node}; "
        f"it has {sorted(ids)}"
    )


def seed_graph(repo: str) -> set[str]:
    """The node ids of the seed's graph of table ``dm`` (contract §10 names)."""
    return {
        job_node(naming.ingest_job_name(repo)),
        raw_node(repo, "DM.csv"),
        raw_node(repo, "contents.csv"),
        job_node(naming.table_job_name(repo, "dm")),
        table_node(repo, "dm"),
    }


def test_a_commit_shows_the_seeds_graph_in_marquez(
    marquez_settings: Settings, study: Study
) -> None:
    marquez, repo = marquez_settings.marquez_url, study.repo
    graph = wait_for_graph(marquez, table_node(repo, "dm"), seed_graph(repo))
    nodes = {n["id"]: n for n in graph["graph"]}
    edges = {(e["origin"], e["destination"]) for n in graph["graph"] for e in n["outEdges"]}
    ingest = job_node(naming.ingest_job_name(repo))
    keying = job_node(f"{repo}.dm")  # contract §10: job `<repo>.<table>`, as Marquez names it
    assert (ingest, raw_node(repo, "DM.csv")) in edges  # ingestion -> raw CSV
    assert (raw_node(repo, "DM.csv"), keying) in edges  # raw CSV -> keying job
    assert (raw_node(repo, "contents.csv"), keying) in edges
    assert (keying, table_node(repo, "dm")) in edges  # keying job -> table

    # the table: schema, column lineage and quality facets
    table = nodes[table_node(repo, "dm")]["data"]
    assert [f["name"] for f in table["fields"]][:3] == ["patient_sk", "site_sk", "studyid"]
    dataset = get(marquez, f"/api/v1/namespaces/{q(f's3://{repo}')}/datasets/{q('main/tables/dm')}")
    # no version without fields, which Marquez could make current (a START naming the table
    # made one, and now and then the graph showed dm with no schema: make test, 2026-12-02)
    versions = get(
        marquez, f"/api/v1/namespaces/{q(f's3://{repo}')}/datasets/{q('main/tables/dm')}/versions"
    )["versions"]
    assert versions
    assert all(v["fields"] for v in versions), [(v["version"], v["fields"]) for v in versions]
    metrics = dataset["facets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 3
    assert metrics["columnMetrics"]["age"]["invalidCount"] == 1  # "abc"
    assert metrics["columnMetrics"]["age"]["nullCount"] == 1  # the invalid value became NULL
    lineage = get(
        marquez,
        "/api/v1/column-lineage?depth=1&nodeId="
        + q(f"datasetField:s3://{repo}:main/tables/dm:patient_sk"),
    )
    upstream = {
        n["data"]["field"]
        for n in lineage["graph"]
        if n["type"] == "DATASET_FIELD" and n["data"]["dataset"] == "main/raw/DM.csv"
    }
    assert upstream == {"STUDYID", "USUBJID"}  # patient_sk derives from its natural key
    # the dataSource facet names the source (without it Marquez makes a source with no URL,
    # and its /api/v1/sources answers 500 from then on)
    assert dataset["sourceName"] == f"s3://{repo}"
    assert get(marquez, f"/api/v1/sources/{q(f's3://{repo}')}")["connectionUrl"] == f"s3://{repo}"

    # the keying job is `<repo>.dm` in Marquez too (its parent run's job is `<repo>`)
    job = get(marquez, f"/api/v1/namespaces/lakehook/jobs/{q(f'{repo}.dm')}")
    assert (job["name"], job["parentJobName"]) == (f"{repo}.dm", repo)

    # one ingestion run per commit, with the commit's committer and message
    runs = get(marquez, f"/api/v1/namespaces/lakehook/jobs/{q(f'{repo}.ingest')}/runs")["runs"]
    ingested = {r["id"]: r["facets"]["lakehook_commit"] for r in runs}
    assert set(ingested) == {naming.ingest_run_id(repo, c) for c in study.commits}
    first = ingested[naming.ingest_run_id(repo, study.commits[0])]
    assert (first["commit"], first["message"]) == (study.commits[0], "delivery 1")
    assert first["committer"]

    # the broken dataset: a FAILED run with the error message
    (failed,) = get(marquez, f"/api/v1/namespaces/lakehook/jobs/{q(f'{repo}.sv')}/runs")["runs"]
    assert failed["state"] == "FAILED"
    assert "raw/SV.csv" in failed["facets"]["errorMessage"]["message"]


def ui_label(name: str, limit: int) -> str:
    """A node's label as the Marquez web UI draws it (``truncateText``: datasets 15, jobs 16)."""
    return name if len(name) <= limit else f"{name[:limit]}..."


def test_the_web_ui_draws_the_graph_in_a_real_browser(
    marquez_settings: Settings, study: Study
) -> None:
    repo = study.repo
    wait_for_graph(marquez_settings.marquez_url, table_node(repo, "dm"), seed_graph(repo))
    # the URL `make demo` prints
    url = naming.web_ui_lineage_url(marquez_settings.marquez_web_url, repo, "main", "dm")
    labels = {
        ui_label(naming.ingest_job_name(repo), 16),  # ingestion
        ui_label("main/raw/DM.csv", 15),  # raw CSV
        ui_label("main/raw/contents.csv", 15),  # the contents file: main/raw/conten...
        ui_label(naming.table_job_name(repo, "dm"), 16),  # keying job
        ui_label("main/tables/dm", 15),  # table
    }
    assert f"{repo}.ingest" in labels  # whole names, not cut
    assert f"{repo}.dm" in labels
    try:
        with Chromium.launch(study.server.state_dir / "chromium") as browser:
            browser.open(url)
            # the graph's node labels are lines of the page's text once ELK laid it out
            text = browser.wait_for_text(
                lambda text: labels <= set(text.splitlines()), timeout=DELIVERY_WAIT
            )
            browser.screenshot(SCREENSHOT)
    except BrowserError as err:
        pytest.fail(f"{url}: {err}")
    lines = text.splitlines()
    assert lines.count("JOB") >= 2, lines
    assert lines.count("DATASET") >= 3, lines
    assert f"s3://{repo}" in lines  # the page's header names the table's namespace
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def marquez_events(marquez: str, repo: str, since: datetime) -> Counter[tuple[str, str]]:
    """(run id, event type) of the events Marquez stored for ``repo``'s jobs since ``since``."""
    window = q(since.isoformat())
    data = get(marquez, f"/api/v1/events/lineage?after={window}&limit=5000&sortDirection=asc")
    return Counter(
        (e["run"]["runId"], e["eventType"])
        for e in data["events"]
        if e["job"]["name"] == repo or e["job"]["name"].startswith(f"{repo}.")
    )


def journal_events(state_dir: Path, repo: str | None = None) -> Counter[tuple[str, str]]:
    """(run id, event type) of the events a server journaled (contract §10), of ``repo``'s
    jobs only when given: a test server's reconciler also sweeps the repositories other tests
    make meanwhile, and journals what it records for them (make test, 2026-12-02: 8 events
    where the test's own commit made 5)."""
    path = state_dir / "lineage" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Counter(
        (e["run"]["runId"], e["eventType"])
        for e in map(json.loads, filter(None, lines))
        if repo is None or e["job"]["name"] == repo or e["job"]["name"].startswith(f"{repo}.")
    )


def metric(server: RunningServer, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:  # noqa: S310
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not in {server.url}/metrics")


def test_events_made_while_marquez_is_down_arrive_once_it_is_back(
    marquez_settings: Settings, tmp_path: Path
) -> None:
    marquez = marquez_settings.marquez_url
    client = lakefs_client(marquez_settings)
    since = datetime.now(UTC) - timedelta(minutes=1)
    relay = Partition(marquez, 5000)
    server = start_server(
        tmp_path / "state", free_port(), {"LAKEHOOK_MARQUEZ_URL": relay.url}, ready_timeout=180
    )
    try:
        repo = short_repository(client)
        install_actions(server, repo)
        relay.cut()
        down_since = time.monotonic()
        try:
            commit = upload_and_commit(
                client,
                repo,
                "main",
                {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM},
                "delivery while Marquez is down",
            )
            assert wait_state(server, repo, "main", commit)["state"] == "synced"
            commit_run = naming.commit_run_id(repo, commit)
            # the whole commit is journaled (ingestion, parent, table: 5 events), none delivered
            deadline = time.monotonic() + DELIVERY_WAIT
            while (commit_run, "COMPLETE") not in journal_events(server.state_dir, repo):
                assert time.monotonic() < deadline, "the commit run never ended in the journal"
                time.sleep(0.2)
            journaled = journal_events(server.state_dir, repo)
            assert sum(journaled.values()) == 5, journaled
            # the outage lasts 60 s (more when processing took longer), while which the
            # deliverer keeps failing passes, with backoff, and nothing leaves the journal
            # (the journal may hold other tests' repositories' events too: at least ours)
            while (
                time.monotonic() - down_since < OUTAGE
                or metric(server, "lakehook_lineage_delivery_errors_total") == 0
            ):
                assert metric(server, "lakehook_lineage_events_pending") >= 5
                assert not marquez_events(marquez, repo, since)  # none of ours arrived
                assert time.monotonic() - down_since < OUTAGE + DELIVERY_WAIT, "no failed pass"
                time.sleep(1.0)
        finally:
            relay.heal()

        deadline = time.monotonic() + DELIVERY_WAIT
        seen: Counter[tuple[str, str]] = Counter()
        while time.monotonic() < deadline:
            seen = marquez_events(marquez, repo, since)
            if (
                set(seen) >= set(journaled)
                and metric(server, "lakehook_lineage_events_pending") == 0
            ):
                break
            time.sleep(0.5)
        assert set(seen) == set(journaled), "every journaled event reached Marquez"
        assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]  # none twice
        assert metric(server, "lakehook_lineage_events_delivered_total") >= 5
        (run,) = get(marquez, f"/api/v1/namespaces/lakehook/jobs/{q(f'{repo}.dm')}/runs")["runs"]
        assert run["state"] == "COMPLETED"
        assert relay.connections > 0  # the events went through the relay
    finally:
        server.stop()
        relay.close()
