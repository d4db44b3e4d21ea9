"""The intake's HTTP server under connection floods: a real ``lakehook serve`` (no stack needed
for ``/healthz``), in a child process whose open-files limit the test sets."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

FILES = 256  # the child's open-files limit, soft and hard: lakehook cannot raise it


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


def _healthz(port: int, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = dict(
        os.environ,
        LAKEHOOK_LISTEN=f"127.0.0.1:{port}",
        LAKEHOOK_STATE_DIR=str(tmp_path / "state"),
        LAKEHOOK_RECONCILE_INTERVAL="3600",
        LAKEHOOK_WORKERS="1",
        LAKEHOOK_GATE_PROCESSES="0",
        LAKEHOOK_LAKEFS_URL=f"http://127.0.0.1:{free_port()}",  # nothing there: not needed
    )
    process = subprocess.Popen(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_limit_files,  # noqa: PLW1509  # only setrlimit, before exec
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _healthz(port, 2) == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "lakehook serve exited"
            assert time.monotonic() < deadline, "lakehook serve did not answer"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def test_more_silent_connections_than_file_descriptors_never_wedge_the_intake(
    intake: int,
) -> None:
    """Out of descriptors, cheroot's accept failed before it expired idle connections, so it
    failed again on every pass for as long as the client held them: 1,120 silent connections
    against 1,024 descriptors kept /healthz from any answer for 90 s (2026-12-02). Now the
    idle connections are closed and the intake answers while the flood is still open."""
    held: list[socket.socket] = []
    try:
        for _ in range(FILES + 150):
            try:
                held.append(socket.create_connection(("127.0.0.1", intake), timeout=5))
            except OSError:  # the backlog is full: enough
                break
        assert len(held) > FILES
        started = time.monotonic()
        assert _healthz(intake, timeout=10) == 200
        assert time.monotonic() - started < 10
    finally:
        for client in held:
            client.close()


def test_serve_raises_its_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    """Services often start with a soft limit of 1,024 and a far higher hard one."""
    code = (
        "import json, resource; from server.httpserver import raise_open_files_limit; "
        "print(json.dumps([raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE)]))"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard)),  # noqa: PLW1509
    )
    answer, now_soft, now_hard = json.loads(out.stdout)
    assert now_hard == hard
    assert answer == now_soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
