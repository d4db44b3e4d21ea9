"""``stack down`` leaves no process behind and ``stack up`` keeps the data.

Named to run last: it restarts the whole stack and leaves it running.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from lakehook.settings import Settings
from lakehook.stack import process
from lakehook.stack.components import core_components
from pipeline.adapters.lakefs import LakeFSClient
from tests.integration.conftest import unique_name
from tests.repositories import created

pytestmark = [pytest.mark.stack, pytest.mark.disruptive]


def lakehook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from lakehook.cli import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def test_down_stops_everything_and_up_keeps_the_data(stack_settings: Settings) -> None:
    lakefs = LakeFSClient.from_settings(stack_settings)
    repo = unique_name("persist")
    lakefs.create_repository(created(repo), f"local://{repo}")
    lakefs.upload_object(repo, "main", "kept.txt", io.BytesIO(b"still here"))
    commit = lakefs.commit(repo, "main", "before restart", {})
    pids = {c.name: c.pid() for c in core_components(stack_settings)}
    assert all(pids.values()), pids

    down = lakehook("stack", "down")
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not process.is_running(pid), f"{name} (pid {pid}) still runs after `stack down`"
    assert not process.http_ok(f"{stack_settings.lakefs_url}/api/v1/healthcheck")

    up = lakehook("stack", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert lakefs.branch_head(repo, "main") == commit.id
    assert lakefs.read_object(repo, "main", "kept.txt") == b"still here"
    status = lakehook("stack", "status")
    assert status.returncode == 0, status.stdout
