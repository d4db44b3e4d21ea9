"""``lakehook serve | install-actions | status | reconcile`` (contract §2)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from lakehook.cli import fails_cleanly, pass_settings
from lakehook.errors import ConfigError, ServiceUnavailable
from lakehook.settings import Settings


def _call(settings: Settings, path: str, method: str = "GET") -> Any:
    from server.auth import JSON, TOKEN_HEADER

    url = f"http://{settings.listen}{path}"
    headers = {TOKEN_HEADER: settings.webhook_token, "Accept": JSON}
    data = None
    if method == "POST":
        headers["Content-Type"] = JSON
        data = b"{}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        if err.code == 404:
            return None
        if err.code == 401:
            raise ConfigError(
                f"the lakehook server at {settings.listen} refused the token; set "
                "LAKEHOOK_WEBHOOK_TOKEN to the server's token"
            ) from None
        raise ServiceUnavailable(f"{url} answered {err.code}: {body}") from None
    except OSError as err:
        raise ServiceUnavailable(
            f"the lakehook server at {settings.listen} does not answer ({err}); "
            "start it with `lakehook serve`"
        ) from None


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: LAKEHOOK_WORKERS, else one per core).",
)
@pass_settings
@fails_cleanly
def serve(settings: Settings, workers: int | None) -> None:
    """Run the webhook server in the foreground: the intake here, jobs in worker processes."""
    from dataclasses import replace

    from server.app import serve as run
    from server.logs import configure

    if workers is not None:
        settings = replace(settings, workers=workers)
    configure(settings.log_level, settings.log_dir)
    run(settings)


@click.command("install-actions")
@click.option("--repo", required=True, help="lakeFS repository of the study.")
@click.option("--branch", default="main", show_default=True, help="Branch to commit them to.")
@click.option("--url", default=None, help="URL lakeFS calls (default: the server's URL).")
@pass_settings
@fails_cleanly
def install_actions(settings: Settings, repo: str, branch: str, url: str | None) -> None:
    """Validate and commit lakehook's action files to _lakefs_actions/."""
    from pipeline.adapters.lakefs import LakeFSClient
    from server.actions import install

    target = url or settings.server_url
    commit = install(LakeFSClient.from_settings(settings), repo, branch, target)
    if commit is None:
        click.echo(f"actions already installed on {repo}/{branch}, calling {target}")
    else:
        click.echo(
            f"installed lakehook actions on {repo}/{branch} (commit {commit[:12]}), "
            f"calling {target}"
        )


def _local_statuses(settings: Settings, repo: str) -> list[dict[str, Any]]:
    from server.state import open_state

    if not settings.queue_url and not settings.jobs_db.exists():
        return []
    state = open_state(settings, "cli")
    try:
        return [s.to_dict() for s in state.store.list_statuses(repo)]
    finally:
        state.close()


def _print_status(status: dict[str, Any]) -> None:
    ref = status.get("branch") or status.get("tag")
    kind = "tag" if "tag" in status else "branch"
    source = (status.get("source_commit") or "-")[:12]
    click.echo(
        f"{status['repository']} {kind} {ref}: {status['state'].upper()}"
        f"  schema {status.get('schema') or '-'}  source {source}"
    )
    if status.get("reason") and status["state"] != "synced":
        click.echo(f"  why: {status['reason']}")
    for t in status.get("tables", []):
        invalid = sum(t.get("invalid_values", {}).values())
        nulls = sum(t.get("null_keys", {}).values())
        click.echo(
            f"  {t['table']:<24} {t['rows']:>10} rows  {len(t['columns']):>3} cols  "
            f"drift {t['drift']['class']:<13} invalid {invalid:<6} null keys {nulls}"
        )
        for change in t["drift"].get("changes", []):
            click.echo(f"      {_describe_change(change)}")
    for r in status.get("removed_tables", []):
        click.echo(
            f"  {r['table']:<24} {'removed':>10}                 drift {r['drift']['class']}"
        )
        for change in r["drift"].get("changes", []):
            click.echo(f"      {_describe_change(change)}")
    if status.get("drift_base"):
        click.echo(f"  drift measured against {status['drift_base'][:12]}")
    for w in status.get("warnings", []):
        click.echo(f"  warning: {w}")
    for e in status.get("errors", []):
        where = ":".join(str(e[k]) for k in ("file", "line", "column") if e.get(k))
        click.echo(f"  error: {where + ' ' if where else ''}{e.get('message', e)}")
        if e.get("hint"):
            click.echo(f"         -> {e['hint']}")


def _describe_change(change: dict[str, Any]) -> str:
    """One line per drift change, e.g. ``column age: type changed integer -> double (WIDENING)``."""
    from pipeline.drift import describe_dict

    return describe_dict(change)


@click.command()
@click.option("--repo", required=True)
@click.option("--branch", default=None)
@click.option("--tag", default=None)
@click.option("--json", "as_json", is_flag=True, help="Contract §9 JSON (a list for a repo).")
@click.option(
    "--wait",
    is_flag=True,
    help="First wait until lakehook has finished the branch's head (exit 1 if it failed).",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --wait waits.")
@pass_settings
@fails_cleanly
def status(
    settings: Settings,
    repo: str,
    branch: str | None,
    tag: str | None,
    as_json: bool,
    wait: bool,
    timeout: float,
) -> None:
    """State of one branch or tag, or of every branch and tag of the repository."""
    if branch and tag:
        raise click.UsageError("give --branch or --tag, not both")
    if wait:
        if not branch:
            raise click.UsageError("--wait needs --branch")
        _wait_for_branch(settings, repo, branch, timeout)
    try:
        statuses = _call(settings, f"/api/v1/repos/{repo}/status") or []
    except ServiceUnavailable:
        statuses = _local_statuses(settings, repo)
    if branch or tag:
        kind, ref = ("tag", tag) if tag else ("branch", branch)
        statuses = [s for s in statuses if s.get(kind) == ref]
        if not statuses:
            click.echo(
                f"lakehook: no status for {kind} {ref} of {repo} yet; "
                "has lakehook seen it? try `lakehook reconcile`",
                err=True,
            )
            sys.exit(1)
        if as_json:
            click.echo(json.dumps(statuses[0], indent=2))
        else:
            _print_status(statuses[0])
        if wait and statuses[0].get("state") == "failed":
            sys.exit(1)
        return
    if as_json:
        click.echo(json.dumps(statuses, indent=2))
        return
    if not statuses:
        click.echo(f"no status recorded for {repo}")
    for s in statuses:
        _print_status(s)


WAIT_REPORT_EVERY = 10.0  # seconds between progress lines of a wait


def _wait_for_branch(settings: Settings, repo: str, branch: str, timeout: float) -> None:
    """Poll until the recorded status is at the branch's current head, synced or failed.

    Prints on stderr what it waits for, with the elapsed time, at once and every 10 s.
    """
    from pipeline.adapters.lakefs import LakeFSClient

    lakefs = LakeFSClient.from_settings(settings)
    began = time.monotonic()
    reported = began - WAIT_REPORT_EVERY
    while True:
        head = lakefs.branch_head(repo, branch)
        current = _call(settings, f"/api/v1/repos/{repo}/branches/{branch}/status")
        if (
            current
            and current.get("head_commit") == head
            and current.get("state") in ("synced", "failed")
        ):
            return
        now = time.monotonic()
        state = current.get("state", "no status yet") if current else "no status yet"
        if now - began > timeout:
            raise ServiceUnavailable(
                f"{repo}/{branch} is still {state} at {head[:12]} after {timeout:.0f} s; "
                f"see `lakehook status --repo {repo} --branch {branch}` and the server's log"
            )
        if now - reported >= WAIT_REPORT_EVERY:
            click.echo(
                f"waiting for lakehook to finish {repo}/{branch} at {head[:12]} "
                f"(recorded: {state}) ... {now - began:.0f} s",
                err=True,
            )
            reported = now
        time.sleep(0.5)


@click.command()
@click.option("--repo", required=True)
@click.option("--branch", default=None)
@click.option("--wait", is_flag=True, help="Wait until the jobs have finished.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait.")
@pass_settings
@fails_cleanly
def reconcile(
    settings: Settings, repo: str, branch: str | None, wait: bool, timeout: float
) -> None:
    """Re-derive outputs and metastore state of a branch (or all) from its head."""
    query = f"?branch={branch}" if branch else ""
    answer = _call(settings, f"/api/v1/repos/{repo}/reconcile{query}", method="POST")
    if answer is None:
        click.echo(f"lakehook: repository {repo} not found", err=True)
        sys.exit(1)
    jobs: list[int] = answer.get("jobs", [])
    click.echo(f"queued {len(jobs)} job(s): {', '.join(map(str, jobs)) or 'nothing differs'}")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    failed = []
    for job_id in jobs:
        while True:
            job = _call(settings, f"/api/v1/jobs/{job_id}")
            if job and job["state"] in ("done", "failed", "superseded"):
                if job["state"] == "failed":
                    failed.append(f"job {job_id} ({job['ref']}): {job['error']}")
                break
            if time.monotonic() > deadline:
                click.echo(
                    f"lakehook: job {job_id} still {job and job['state']} after "
                    f"{timeout:.0f}s; see `lakehook status --repo {repo}`",
                    err=True,
                )
                sys.exit(1)
            time.sleep(0.5)
    if failed:
        click.echo("lakehook: " + "; ".join(failed), err=True)
        sys.exit(1)
    click.echo("done")


def register(main: click.Group) -> None:
    for command in (serve, install_actions, status, reconcile):
        main.add_command(command)
