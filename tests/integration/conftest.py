"""Fixtures for tests against the real local stack (``lakehook stack up``).

These tests FAIL, never skip, when the stack is not running: a CI run without the stack must
not pass quietly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lakefs_sdk
import pytest
import trino
from lakefs_sdk.client import LakeFSClient

from lakehook.settings import Settings
from tests.ports import free_port as free_port  # re-exported: the stack tests import it here
from tests.repositories import created


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except (OSError, urllib.error.URLError):
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Settings of the running local stack; fails the test when a component is down."""
    settings = Settings.load()
    problems = []
    if not _answers(f"{settings.lakefs_url}/api/v1/healthcheck"):
        problems.append(f"lakeFS at {settings.lakefs_url}")
    if not _answers(f"{settings.trino_url}/v1/info"):
        problems.append(f"Trino at {settings.trino_url}")
    if not _port_open(*settings.hms_host_port):
        problems.append(f"Hive Metastore at {settings.hms_uri}")
    if problems:
        pytest.fail(
            "the local stack is not running (" + ", ".join(problems) + "): run `lakehook stack up`"
        )
    return settings


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunningServer:
    url: str
    listen: str
    state_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a loaded machine: do not fail the test on exit
                self.process.kill()
                self.process.wait(timeout=30)


TEST_SIGNING_KEY = "lakehook-integration-tests-" + "0" * 40


def start_server(
    state_dir: Path,
    port: int,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,  # an upper bound: a loaded 2-core machine starts slowly
) -> RunningServer:
    """Start ``lakehook serve`` in a child process and wait until /healthz answers."""
    listen = f"127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        LAKEHOOK_LISTEN=listen,
        LAKEHOOK_STATE_DIR=str(state_dir),
        LAKEHOOK_RECONCILE_INTERVAL="5",
        # one installation: every test server signs with one key, as docs/security.md asks of
        # every lakehook process of an installation; with a key per state dir, two servers
        # that both reach a repository would each distrust the other's outputs and rebuild
        LAKEHOOK_SIGNING_KEY=TEST_SIGNING_KEY,
    )
    env.update(extra_env or {})
    state_dir.mkdir(parents=True, exist_ok=True)
    log = (state_dir / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{listen}"
    deadline = time.monotonic() + ready_timeout
    while not _answers(f"{url}/healthz"):
        if process.poll() is not None:
            pytest.fail(
                f"lakehook serve exited with {process.returncode}; log: {state_dir / 'serve.log'}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"lakehook serve did not answer within {ready_timeout:.0f} s; "
                f"log: {state_dir / 'serve.log'}"
            )
        time.sleep(0.1)
    # the intake answers at once; wait until its worker processes take jobs too (their fork
    # server imports lakehook once: slow on a busy machine)
    deadline = time.monotonic() + 180
    while not all(w["ready"] for w in get_json(f"{url}/healthz")["workers"]):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"lakehook's workers were not ready in time; log: {state_dir / 'serve.log'}"
            )
        time.sleep(0.1)
    return RunningServer(url, listen, state_dir, env, process)


@pytest.fixture
def lakehook_server(stack_settings: Settings, tmp_path: Path) -> Iterator[RunningServer]:
    """A real ``lakehook serve`` with the real processor, on a free port, own state dir."""
    server = start_server(tmp_path / "state", free_port(), ready_timeout=180)
    yield server
    server.stop()


def api_headers(token: str | None = None) -> dict[str, str]:
    """Headers of a call to lakehook's API: the token (contract §9 v1.1) and JSON."""
    return {
        "X-Lakehook-Token": token or Settings.load().webhook_token,
        "Content-Type": "application/json",
    }


def get_json(url: str, token: str | None = None) -> Any:
    """GET a lakehook API URL with the token."""
    request = urllib.request.Request(url, headers=api_headers(token))
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def post_json(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """POST JSON to a lakehook URL with the token; (status, decoded body)."""
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), headers=api_headers(token), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"null")


def trino_query(settings: Settings, sql: str) -> list[Any]:
    """Rows of one statement through the stack's Trino."""
    host, port = settings.trino_host_port
    cur = trino.dbapi.connect(
        host=host, port=port, user=settings.trino_user, catalog=settings.trino_catalog
    ).cursor()
    cur.execute(sql)
    return list(cur.fetchall())


@pytest.fixture
def client(stack_settings: Settings) -> LakeFSClient:
    """The lakeFS SDK client of the stack."""
    cfg = lakefs_sdk.Configuration(
        host=f"{stack_settings.lakefs_url}/api/v1",
        username=stack_settings.lakefs_access_key_id,
        password=stack_settings.lakefs_secret_access_key,
    )
    return LakeFSClient(cfg)


def new_repository(client: LakeFSClient, prefix: str) -> str:
    repo = created(unique_name(prefix))  # deleted when the test module ends
    client.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(
            name=repo, storage_namespace=f"local://{repo}", default_branch="main"
        )
    )
    return repo


def install_actions(server: RunningServer, repo: str) -> None:
    """``lakehook install-actions`` on ``repo``, pointing the hooks at ``server``."""
    subprocess.run(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "install-actions"]
        + ["--repo", repo, "--url", server.url],
        env=server.env,
        check=True,
    )
