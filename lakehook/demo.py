"""``lakehook demo``: the README's main job, end to end on the local stack.

1. ``lakehook stack up`` (installs on first use);
2. starts ``lakehook serve`` in the background unless a server already answers;
3. creates a study repository, installs the lakeFS actions;
4. generates a sample study and pushes it with ``lakectl fs upload`` + ``lakectl commit``;
5. waits until lakehook reports the branch ``synced`` (processing was triggered by lakeFS's
   post-commit webhook, not by the demo);
6. prints the tables and a Trino query joining them through the surrogate keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from lakehook.errors import LakehookError, ServiceUnavailable
from lakehook.settings import Settings

DEMO_REPO = "demo-study"
WAIT_SECONDS = 600.0


def _lakehook(*args: str, env: dict[str, str] | None = None) -> None:
    """Run a lakehook CLI command in a child process, failing loudly."""
    cmd = [sys.executable, "-c", "from lakehook.cli import main; main()", *args]
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        raise LakehookError(
            f"`lakehook {' '.join(args)}` failed with exit code {result.returncode}"
        )


def _get_json(url: str, timeout: float = 5.0, token: str = "") -> Any:
    headers = {"X-Lakehook-Token": token} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our own URL)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def _server_answers(settings: Settings) -> bool:
    try:
        _get_json(f"http://{settings.listen}/healthz", timeout=1.0)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True


def _start_server(settings: Settings) -> subprocess.Popen[bytes] | None:
    if _server_answers(settings):
        click.echo(f"lakehook server already answers on {settings.listen}")
        return None
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = (settings.log_dir / "demo-serve.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not _server_answers(settings):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"lakehook serve did not start; see {settings.log_dir / 'demo-serve.log'}"
            )
        time.sleep(0.2)
    click.echo(f"lakehook server started on {settings.listen} (pid {proc.pid})")
    return proc


def find_lakectl() -> str:
    """The lakectl built by the local stack, or one on PATH."""
    from lakehook.stack import paths

    candidate = paths.lakectl_binary()
    if candidate.exists():
        return str(candidate)
    found = shutil.which("lakectl")
    if found:
        return found
    raise LakehookError("lakectl not found: run `lakehook stack up` first")


def _lakectl_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LAKECTL_SERVER_ENDPOINT_URL=settings.lakefs_url,
        LAKECTL_CREDENTIALS_ACCESS_KEY_ID=settings.lakefs_access_key_id,
        LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY=settings.lakefs_secret_access_key,
    )
    return env


def _lakectl(settings: Settings, *args: str) -> str:
    result = subprocess.run(  # noqa: S603
        [find_lakectl(), *args],
        env=_lakectl_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LakehookError(f"lakectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def push_study(
    settings: Settings, repo: str, branch: str, files: dict[str, bytes], message: str
) -> None:
    """Upload ``files`` ({path: bytes}) with ``lakectl fs upload`` and commit them."""
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in files.items():
            local = Path(tmp) / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            _lakectl(
                settings, "fs", "upload", f"lakefs://{repo}/{branch}/{path}", "--source", str(local)
            )
    _lakectl(settings, "commit", f"lakefs://{repo}/{branch}", "--message", message)


def wait_for_state(
    settings: Settings,
    repo: str,
    branch: str,
    states: tuple[str, ...] = ("synced", "failed"),
    after_head: str | None = None,
    timeout: float = WAIT_SECONDS,
) -> dict[str, Any]:
    """Poll the server's status API until the branch reaches one of ``states``."""
    url = f"http://{settings.listen}/api/v1/repos/{repo}/branches/{branch}/status"
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = _get_json(url, token=settings.webhook_token)
        except (OSError, urllib.error.URLError, ValueError):
            last = {}
        if last.get("state") in states and (
            after_head is None or last.get("source_commit") == after_head
        ):
            return last
        time.sleep(0.5)
    raise LakehookError(
        f"{repo}/{branch} did not reach {states} in {timeout:.0f}s; last status: {last}"
    )


def run_demo(settings: Settings) -> None:
    from pipeline.adapters.lakefs import LakeFSClient
    from pipeline.generator import generate_study

    click.echo("== 1/5 local stack")
    _lakehook("stack", "up")
    click.echo("== 2/5 lakehook server")
    _start_server(settings)
    click.echo(f"== 3/5 repository {DEMO_REPO} with lakehook actions")
    lakefs = LakeFSClient.from_settings(settings)
    lakefs.create_repository(DEMO_REPO, f"local://{DEMO_REPO}")
    _lakehook("install-actions", "--repo", DEMO_REPO, "--branch", "main")
    click.echo("== 4/5 a sample study pushed with lakectl")
    files = generate_study(patients=200, seed=7)
    push_study(settings, DEMO_REPO, "main", files, "delivery 1: sample study")
    head = lakefs.branch_head(DEMO_REPO, "main")
    click.echo(f"   committed {len(files)} files as {head[:12]}; waiting for lakehook ...")
    status = wait_for_state(settings, DEMO_REPO, "main", after_head=head)
    click.echo(f"== 5/5 {DEMO_REPO}/main is {status['state']} (schema {status['schema']})")
    for table in status["tables"]:
        click.echo(
            f"   {table['table']:<16} {table['rows']:>7} rows  {len(table['columns'])} columns"
            f"  drift {table['drift']['class']}"
        )
    for error in status.get("errors", []):
        click.echo(f"   error: {error}")
    _print_query(settings, status["schema"])


def _print_query(settings: Settings, schema: str) -> None:
    import trino

    host, port = settings.trino_host_port
    conn = trino.dbapi.connect(  # type: ignore[no-untyped-call]
        host=host, port=port, user=settings.trino_user, catalog=settings.trino_catalog
    )
    cur = conn.cursor()
    from pipeline.metastore.ddl import quoted

    schema = quoted(schema, "schema")  # lakehook's own sanitised name, checked and quoted
    # only the checked, double-quoted schema name is interpolated
    sql = (
        f"SELECT s.siteid, count(DISTINCT p.patient_sk) AS patients, count(v.visit_sk) AS visits "  # noqa: S608
        f"FROM {schema}.patients p JOIN {schema}.sites s ON p.site_sk = s.site_sk "
        f"LEFT JOIN {schema}.visits v ON v.patient_sk = p.patient_sk "
        f"GROUP BY s.siteid ORDER BY s.siteid LIMIT 10"
    )
    click.echo(f"   trino> {sql}")
    cur.execute(sql)
    for row in cur.fetchall():
        click.echo(f"   {row}")


def register(main: click.Group) -> None:
    @main.command()
    @click.pass_obj
    def demo(settings: Settings) -> None:
        """Stack up, server, a sample study pushed with lakectl, processed, queried."""
        try:
            run_demo(settings)
        except LakehookError as err:
            click.echo(f"lakehook demo: {err}", err=True)
            sys.exit(1)
