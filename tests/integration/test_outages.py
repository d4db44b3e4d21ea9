"""Each service of the stack out of lakehook's reach during processing (issue 12).

lakeFS, the Hive Metastore and Trino are each cut off from lakehook for
``LAKEHOOK_OUTAGE_SECONDS`` (default 60) while a delivery is being processed: the server reaches
the service through a relay (``partition.py``) that refuses new connections and resets open
ones for that long, which is what lakehook meets of a stopped or crashed service. Throughout,
lakehook keeps answering ``/healthz`` and webhooks, ``/readyz`` names the service that is down,
and the branch's status reports the service failure and the next try; once the service is back
the branch converges (``synced``, one lakehook commit, no working branch left). The recovery
time (service reachable again -> branch synced) is printed for docs/reliability.md.

The shared services themselves stay up, so these tests run in the parallel phase of
``make test``; stopping and restarting the real components is ``test_zz_stack_restart.py``'s.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lakehook.settings import Settings
from pipeline.generator import generate_study
from tests.integration.conftest import (
    RunningServer,
    free_port,
    install_actions,
    new_repository,
    start_server,
)
from tests.integration.partition import Partition
from tests.integration.test_delivery_semantics import (
    lakehook_merges,
    post_commit_event,
    post_event,
)
from tests.integration.test_end_to_end import upload_and_commit, wait_state
from tests.integration.test_faults import working_branches

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

pytestmark = [pytest.mark.stack, pytest.mark.faults]

OUTAGE = float(os.environ.get("LAKEHOOK_OUTAGE_SECONDS", "60"))
MET_WITHIN = 240.0  # the longest the outage is extended while lakehook has not met it yet
SERVER_ENV = {"LAKEHOOK_RETRY_MAX_DELAY": "10"}  # bounded wait between tries, for the test
CHECK = {"lakefs": "lakefs", "hive-metastore": "metastore", "trino": "trino"}


def partition(component: str, settings: Settings) -> tuple[Partition, dict[str, str]]:
    """A relay to the component, and the server setting that points lakehook at it."""
    if component == "lakefs":
        relay = Partition(settings.lakefs_url, 8000)
        return relay, {"LAKEHOOK_LAKEFS_URL": relay.url}
    if component == "hive-metastore":
        relay = Partition(settings.hms_uri, 9083)
        return relay, {"LAKEHOOK_HMS_URI": relay.url}
    relay = Partition(settings.trino_url, 8080)
    return relay, {"LAKEHOOK_TRINO_URL": relay.url}


def http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null")


def status_of(server: RunningServer, repo: str) -> dict[str, Any]:
    token = server.env.get("LAKEHOOK_WEBHOOK_TOKEN") or Settings.load().webhook_token
    request = urllib.request.Request(
        f"{server.url}/api/v1/repos/{repo}/branches/main/status",
        headers={"X-Lakehook-Token": token},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as err:
        return {"http": err.code}


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("component", ["lakefs", "hive-metastore", "trino"])
def test_service_outage_during_processing_converges_after_it_returns(
    component: str, client: LakeFSClient, stack_settings: Settings, tmp_path: Path
) -> None:
    relay, endpoint = partition(component, stack_settings)
    server = start_server(
        tmp_path / "state", free_port(), {**SERVER_ENV, **endpoint}, ready_timeout=180
    )
    try:
        repo = new_repository(client, f"outage-{component}")
        install_actions(server, repo)
        head = client.branches_api.get_branch(repo, "main").commit_id
        wait_state(server, repo, "main", head)
        files = generate_study(patients=30, seed=21)
        # cut first, so that processing certainly meets the outage (the test's own client and
        # lakeFS's webhooks reach lakeFS directly)
        relay.cut()
        user = upload_and_commit(client, repo, "main", files, "delivery")
        stopped = time.monotonic()
        health, ready, hooks = set(), [], set()
        statuses: list[dict[str, Any]] = []
        # down for OUTAGE seconds, and in any case until lakehook has met the outage (a retry
        # in the status): on a loaded machine the job may reach the stopped service later than
        # OUTAGE, and a service back before it is no outage at all
        while time.monotonic() - stopped < OUTAGE or (
            not any(s.get("retry") for s in statuses)
            and time.monotonic() - stopped < OUTAGE + MET_WITHIN
        ):
            health.add(http(f"{server.url}/healthz")[0])
            code, body = http(f"{server.url}/readyz")
            ready.append((code, body["checks"][CHECK[component]]))
            hooks.add(post_event(server, post_commit_event(repo, "main", user)))
            statuses.append(status_of(server, repo))
            time.sleep(1.0)
        relay.heal()
        back = time.monotonic()
        status = wait_state(server, repo, "main", user)
        recovery = time.monotonic() - back
        ready_after = http(f"{server.url}/readyz")
    finally:
        server.stop()
        relay.close()

    assert relay.connections > 0  # lakehook reached the service through the relay
    assert health == {200}  # the server answered throughout
    assert hooks == {202}  # and kept accepting webhooks
    assert ready
    assert all(code == 503 and not ok for code, ok in ready), ready[:3]
    retries = [s for s in statuses if s.get("state") == "pending" and s.get("retry")]
    assert retries, statuses[-3:]
    named = {"lakefs": "lakefs", "hive-metastore": "metastore", "trino": "trino"}[component]
    assert any(named in s["retry"]["error"].lower() for s in retries), retries[-1]
    assert max(s["retry"]["attempts"] for s in retries) >= 1
    assert status["state"] == "synced", status
    assert status["retry"] is None
    assert ready_after[0] == 200
    assert lakehook_merges(client, repo, "main") == {user: 1}
    assert working_branches(client, repo) == []
    down = back - stopped
    print(f"\n{component}: down {down:.0f}s, synced {recovery:.1f}s after it answered again")
