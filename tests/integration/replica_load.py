"""Several ``lakehook serve`` replicas on one PostgreSQL queue, and the load that drives them.

Shared by the real-stack replica test (``test_replicas.py``) and ``bench/bench_replicas.py``:

* ``start_replicas`` starts N servers on free ports, each with its own state dir, all on one
  ``LAKEHOOK_QUEUE_URL`` (the stack's ``lakehook`` database, in a schema of its own) and one
  signing key, behind a ``FrontProxy``: the one URL lakeFS's actions call, as a load balancer
  would be in production (round robin, the next replica when one does not answer). Each
  replica's ``LAKEHOOK_PUBLIC_URL`` is that URL, so every replica's reconciler sweeps the
  repository;
* ``commit_load`` makes the events: real lakeFS commits of a tiny dataset, several branches
  committing at once;
* ``wait_synced`` polls until every branch is ``synced`` at its last user commit.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import lakefs_sdk
import psycopg

from lakehook.settings import Settings
from lakehook.stack.components import stack_queue_url
from tests.integration.conftest import RunningServer, free_port, get_json, start_server

if TYPE_CHECKING:
    from lakefs_sdk.client import LakeFSClient

CONTENTS = b"""dataset,column,type
dm,STUDYID,string
dm,USUBJID,string
dm,SITEID,string
dm,AGE,integer
"""


def dm_csv(branch: str, n: int) -> bytes:
    """Delivery ``n`` of ``branch``: three rows, one value telling the delivery apart."""
    return (
        "STUDYID,USUBJID,SITEID,AGE\n"
        f"S1,{branch}-1,701,{n}\nS1,{branch}-2,701,{n + 1}\nS1,{branch}-3,702,{n + 2}\n"
    ).encode()


class FrontProxy:
    """One URL in front of the replicas: round robin; a replica that refuses the connection
    or drops it is skipped for the next one (a killed replica loses no webhook)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)
        self.dead: set[str] = set()
        self._next = itertools.count()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "x-lakehook-token", "authorization")
                }
                status, reply, kind = proxy.forward(self.command, self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _forward  # noqa: N815 (http.server's names)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        start = next(self._next)
        for i in range(len(self.backends)):
            backend = self.backends[(start + i) % len(self.backends)]
            if backend in self.dead:
                continue
            parsed = urlparse(backend)
            conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=60)
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                return (
                    response.status,
                    response.read(),
                    response.getheader("Content-Type") or "application/json",
                )
            except OSError:
                continue  # refused or dropped: the next replica takes it
            finally:
                conn.close()
        return 502, b'{"error": "no replica answered"}', "application/json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Replicas:
    servers: list[RunningServer]
    proxy: FrontProxy
    queue_url: str
    schema: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proxy.url

    def kill(self, index: int) -> None:
        server = self.servers[index]
        server.stop(kill=True)
        self.proxy.dead.add(server.url)

    def job_counts(self) -> dict[str, int]:
        with psycopg.connect(self.queue_url) as conn:
            rows = conn.execute("SELECT state, count(*) FROM job GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def wait_drained(self, wait: float) -> dict[str, int]:
        """Poll until no job is pending or running (jobs coalesced after a branch was already
        synced still run, and find nothing to do); returns the job counts by state."""
        deadline = time.monotonic() + wait
        counts = self.job_counts()
        while counts.get("pending", 0) + counts.get("running", 0) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the queue did not drain within {wait:.0f} s: {counts}")
            time.sleep(0.2)
            counts = self.job_counts()
        return counts

    def jobs_per_replica(self, line: str = '"job done"') -> list[int]:
        """How many jobs each replica's workers finished (its log's "job done" lines; with
        ``line='"job started"'``, how many they claimed)."""
        counts = []
        for server in self.servers:
            lines = 0
            for log in (server.state_dir / "logs").glob("*"):
                if log.is_file():
                    lines += log.read_text(errors="replace").count(line)
            counts.append(lines)
        return counts


@contextmanager
def start_replicas(
    count: int, root: Path, *, workers: int = 1, lease_seconds: float = 15.0
) -> Iterator[Replicas]:
    """``count`` replicas on one fresh PostgreSQL schema; stopped and dropped afterwards."""
    schema = f"replicas_{uuid.uuid4().hex[:12]}"
    base = stack_queue_url(Settings.load())
    queue_url = f"{base}?options=-csearch_path%3D{schema}"
    ports = [free_port() for _ in range(count)]
    proxy = FrontProxy([f"http://127.0.0.1:{p}" for p in ports])
    env = {
        "LAKEHOOK_QUEUE_URL": queue_url,
        "LAKEHOOK_PUBLIC_URL": proxy.url,
        "LAKEHOOK_WORKERS": str(workers),
        "LAKEHOOK_JOB_LEASE_SECONDS": str(lease_seconds),
    }
    servers: list[RunningServer] = []
    try:
        with ThreadPoolExecutor(count) as pool:  # the replicas start side by side
            futures = [
                pool.submit(start_server, root / f"replica{i}", port, env, 180.0)
                for i, port in enumerate(ports)
            ]
            servers = [f.result() for f in futures]
        yield Replicas(servers, proxy, queue_url, schema, env)
    finally:
        for server in servers:
            server.stop()
        proxy.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def install_actions(url: str, repo: str, env: dict[str, str]) -> None:
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "install-actions"]
        + ["--repo", repo, "--url", url],
        env=env,
        check=True,
    )


def prepare_repository(
    client: LakeFSClient, replicas: Replicas, branches: list[str], wait: float = 300.0
) -> str:
    """A new study repository calling the replicas' front URL, processed once on ``main``,
    with ``branches`` made from it and synced (the load starts from a quiet state)."""
    from tests.integration.conftest import new_repository

    repo = new_repository(client, "replicas")
    install_actions(replicas.url, repo, replicas.servers[0].env)
    for path, data in {"raw/contents.csv": CONTENTS, "raw/dm.csv": dm_csv("main", 0)}.items():
        client.objects_api.upload_object(repo, "main", path, content=data)
    first = client.commits_api.commit(repo, "main", lakefs_sdk.CommitCreation(message="setup"))
    wait_synced(replicas.url, repo, {"main": str(first.id)}, wait)
    for branch in branches:
        client.branches_api.create_branch(
            repo, lakefs_sdk.BranchCreation(name=branch, source="main")
        )
    return repo


def commit_load(
    client: LakeFSClient,
    repo: str,
    branches: list[str],
    per_branch: int,
    progress: Callable[[int], None] = lambda _done: None,
) -> dict[str, list[str]]:
    """``per_branch`` commits on each branch, the branches committing at once: every commit
    is one post-commit event. ``progress(done)`` is called after each commit."""
    lock = threading.Lock()
    done = [0]
    commits: dict[str, list[str]] = {b: [] for b in branches}

    def run(branch: str) -> None:
        for n in range(1, per_branch + 1):
            client.objects_api.upload_object(repo, branch, "raw/dm.csv", content=dm_csv(branch, n))
            commit = client.commits_api.commit(
                repo, branch, lakefs_sdk.CommitCreation(message=f"delivery {n}")
            )
            commits[branch].append(str(commit.id))
            with lock:
                done[0] += 1
                count = done[0]
            progress(count)

    with ThreadPoolExecutor(len(branches)) as pool:
        for future in [pool.submit(run, b) for b in branches]:
            future.result()
    return commits


def wait_synced(url: str, repo: str, finals: dict[str, str], wait: float) -> dict[str, Any]:
    """Poll (through ``url``) until each branch is ``synced`` at its final user commit."""
    deadline = time.monotonic() + wait
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pending = [b for b in finals if not _synced_at(last.get(b), finals[b])]
        if not pending:
            return last
        for branch in pending:
            try:
                last[branch] = get_json(f"{url}/api/v1/repos/{repo}/branches/{branch}/status")
            except (urllib.error.URLError, OSError) as err:
                last[branch] = f"{type(err).__name__}: {err}"
        time.sleep(0.2)
    raise AssertionError(f"not synced within {wait:.0f} s: {last}")


def _synced_at(status: Any, commit: str) -> bool:
    return (
        isinstance(status, dict)
        and status.get("source_commit") == commit
        and status.get("state") == "synced"
    )
