"""Lineage in a real Marquez (the local stack's, ``lakehook stack up``).

These tests FAIL, never skip, when Marquez does not answer. Each test uses a fresh repository
name, so its jobs, runs and datasets are its own.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lakehook.settings import Settings
from pipeline.lineage import naming
from pipeline.lineage.delivery import Deliverer, JournalSink, MarquezEndpoint
from pipeline.lineage.journal import Journal
from pipeline.lineage.recorder import LineageRecorder
from tests.unit.test_lineage_events import sample_run

pytestmark = [pytest.mark.stack, pytest.mark.marquez]

DEFAULT_MARQUEZ = "http://127.0.0.1:5000"


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@pytest.fixture(scope="module")
def marquez() -> str:
    """The Marquez base URL; fails the test when it does not answer."""
    url = Settings.load().marquez_url or DEFAULT_MARQUEZ
    try:
        get(url, "/api/v1/namespaces")
    except (OSError, urllib.error.URLError, ValueError) as err:
        pytest.fail(f"Marquez at {url} does not answer ({err}): run `lakehook stack up`")
    return url


@pytest.fixture
def repo() -> str:
    return f"lin{uuid.uuid4().hex[:10]}"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "lineage" / "events.jsonl")


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def emit_commit(journal: Journal, repo: str, commit: str = "c0ffee") -> None:
    """dm completes, ae fails: 6 events in the journal."""
    recorder = LineageRecorder(JournalSink(journal))
    with recorder.commit_run(repo, "main", commit) as parent:
        with parent.table_run("dm", "DM") as dm:
            dm.finish(sample_run(repository=repo, source_commit=commit))
        with parent.table_run("ae", "AE") as ae:
            ae.finish(
                sample_run(
                    repository=repo,
                    source_commit=commit,
                    table="ae",
                    dataset="AE",
                    raw_path="raw/AE.csv",
                    manifest=None,
                    output_commit=None,
                    error="raw/AE.csv, line 7: 12 fields, the header has 11",
                )
            )
    assert recorder.failures == 0


def runs(marquez: str, job: str) -> list[dict[str, Any]]:
    data = get(marquez, f"/api/v1/namespaces/lakehook/jobs/{quote(job)}/runs?limit=100")
    result: list[dict[str, Any]] = data["runs"]
    return result


def events_of(marquez: str, repo: str, since: datetime) -> list[tuple[str, str]]:
    after = quote(since.isoformat())
    data = get(marquez, f"/api/v1/events/lineage?after={after}&limit=5000&sortDirection=asc")
    return [
        (e["job"]["name"], e["eventType"])
        for e in data["events"]
        if e["job"]["name"].startswith(f"{repo}.")
    ]


def test_marquez_shows_complete_and_failed_table_runs(
    marquez: str, repo: str, journal: Journal
) -> None:
    emit_commit(journal, repo)
    report = Deliverer(journal, MarquezEndpoint(marquez)).resend_pending()
    assert (report.delivered, report.remaining, report.error) == (6, 0, None)

    (dm_run,) = runs(marquez, f"{repo}.dm")
    assert dm_run["id"] == naming.table_run_id(repo, "c0ffee", "dm")
    assert dm_run["state"] == "COMPLETED"

    name = quote("main/tables/dm")
    dataset = get(marquez, f"/api/v1/namespaces/{quote(f's3://{repo}')}/datasets/{name}")
    assert [f["name"] for f in dataset["fields"]][:3] == ["patient_sk", "studyid", "usubjid"]
    assert dataset["facets"]["version"]["datasetVersion"] == "beef01"
    assert dataset["facets"]["symlinks"]["identifiers"][0]["name"] == "hive.study_main.dm"
    assert dataset["facets"]["lakehook_quality"]["invalidValues"]["age"] == 2

    lineage = get(
        marquez,
        "/api/v1/column-lineage?nodeId="
        + quote(f"datasetField:s3://{repo}:main/tables/dm:patient_sk")
        + "&depth=1",
    )
    upstream = {
        node["data"]["field"]
        for node in lineage["graph"]
        if node["type"] == "DATASET_FIELD" and node["data"]["name"] == "main/raw/DM.csv"
    }
    assert upstream == {"STUDYID", "USUBJID"}

    (ae_run,) = runs(marquez, f"{repo}.ae")
    assert ae_run["state"] == "FAILED"
    facets = get(marquez, f"/api/v1/jobs/runs/{ae_run['id']}/facets?type=run")
    assert "line 7" in facets["facets"]["errorMessage"]["message"]

    (commit_run,) = runs(marquez, f"{repo}.process-commit")
    assert commit_run["state"] == "FAILED"


def test_outage_then_recovery_delivers_every_event_exactly_once(
    marquez: str, repo: str, journal: Journal
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    emit_commit(journal, repo)

    down = Deliverer(journal, MarquezEndpoint(closed_url(), timeout=2)).resend_pending(1.0)
    assert (down.delivered, down.remaining) == (0, 6)
    assert down.error is not None

    up = Deliverer(journal, MarquezEndpoint(marquez)).resend_pending()
    assert (up.delivered, up.remaining, up.error) == (6, 0, None)

    for job in (f"{repo}.dm", f"{repo}.ae", f"{repo}.process-commit"):
        assert len(runs(marquez, job)) == 1, job
    assert events_of(marquez, repo, since) == [
        (f"{repo}.process-commit", "START"),
        (f"{repo}.dm", "START"),
        (f"{repo}.dm", "COMPLETE"),
        (f"{repo}.ae", "START"),
        (f"{repo}.ae", "FAIL"),
        (f"{repo}.process-commit", "FAIL"),
    ]


def test_a_resent_or_retried_run_stays_one_run(marquez: str, repo: str, journal: Journal) -> None:
    emit_commit(journal, repo)
    deliverer = Deliverer(journal, MarquezEndpoint(marquez))
    assert deliverer.resend_pending().delivered == 6
    journal.set_delivered_offset(0)  # as after a crash between the 2xx and the cursor write
    assert deliverer.resend_pending().delivered == 6
    emit_commit(journal, repo)  # a retry of the same commit: same run ids
    assert deliverer.resend_pending().delivered == 6

    for job in (f"{repo}.dm", f"{repo}.ae", f"{repo}.process-commit"):
        assert len(runs(marquez, job)) == 1, job
    assert runs(marquez, f"{repo}.dm")[0]["state"] == "COMPLETED"
