"""Processing engines side by side (issue 15): one lab CSV through pyarrow and through Trino.

One lakeFS repository holds the CSV once (``raw/labs.csv`` + ``raw/contents.csv``); a branch
per engine adds ``lakehook.yaml`` with ``engine: pyarrow`` or ``engine: trino``. Each branch is
processed by the real ``BranchService`` (real lakeFS, HMS and Trino: write-back, metastore sync
and verification included) in a fresh process, so the figures are:

* seconds from "process this commit" to ``synced`` (and the engine step alone);
* peak RSS of that lakehook process (``VmHWM``);
* for Trino, its own statistics per statement from ``/v1/query/{id}``: CPU and scheduled time,
  input rows and bytes, splits (drivers) per stage, peak memory; from them a scaling estimate
  for N workers (work that parallelises by split vs. what stays on one node).

With ``--trino-worker`` the Trino engine runs twice: on the stack's Trino alone (coordinator =
worker) and with a second Trino process from the stack's install joined as a worker on other
ports (``TrinoWorker``: its own etc and data dirs in a temporary directory, the stack's catalog,
1 GiB heap); the worker leaves by Trino's graceful shutdown, so a query of anyone else that it
took part in finishes first. Trino's per-stage figures then say which node ran which splits.

A file above 1 GB is made as a 1 GB lab CSV followed by copies of its rows whose subjects are
renamed per copy (``SYNTH01-701-0001`` -> ``SYNTH01-2701-0001``): every key stays distinct,
and writing 5 GB takes minutes instead of the generator's half hour.

Needs the local stack. Run: ``nice -n 10 .venv/bin/python -m bench.bench_engine [--size-mb 1024]
[--engines pyarrow,trino] [--trino-worker] [--csv PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from lakehook.settings import Settings
from pipeline.adapters.lakefs import LakeFSClient
from pipeline.generator import lab_contents, lab_rows_for_size, write_lab_csv

_CHILD = r"""
import json, sys, time
from pathlib import Path
from lakehook.settings import Settings
from pipeline.adapters.hive_metastore import HiveMetastore
from pipeline.adapters.lakefs import LakeFSClient
from pipeline.processing import engines, trino_engine
from pipeline.service import BranchService
from tests.fakes.status import MemoryStatusStore

repo, branch, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
settings = Settings.load()
steps = {}

def timed(name, func):
    def wrapper(*args, **kwargs):
        started = time.monotonic()
        try:
            return func(*args, **kwargs)
        finally:
            steps[name] = steps.get(name, 0.0) + time.monotonic() - started
    return wrapper

import pipeline.service as service_module
engines.process_table = timed("engine", engines.process_table)
trino_engine.TrinoEngine.process_table = timed("engine", trino_engine.TrinoEngine.process_table)
service_module.write_back = timed("write-back", service_module.write_back)
service_module.sync_and_verify = timed("metastore + verify", service_module.sync_and_verify)
service = BranchService(
    settings=settings,
    lakefs=LakeFSClient.from_settings(settings),
    metastore=HiveMetastore.from_settings(settings),
    store=MemoryStatusStore(),
    workdir=workdir,
)
started = time.monotonic()
status = service.sync_branch(repo, branch)
seconds = time.monotonic() - started
hwm = next(x.split()[1] for x in open("/proc/self/status") if x.startswith("VmHWM:"))
queries = []
if service.trino_engine is not None:
    queries = [
        {"id": q.query_id, "kind": q.kind, "seconds": q.seconds}
        for q in service.trino_engine.session.queries
    ]
print(json.dumps({
    "state": status.state, "errors": list(status.errors), "seconds": seconds,
    "steps": steps, "rss_kib": int(hwm), "rows": [t.rows for t in status.tables],
    "queries": queries,
}))
"""


def _query_info(settings: Settings, query_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{settings.trino_url}/v1/query/{query_id}", headers={"X-Trino-User": settings.trino_user}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def _duration(text: str) -> float:
    """Seconds of an airlift duration such as ``1.52m`` or ``350.00ms``."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def _size(text: str) -> float:
    """Bytes of an airlift data size such as ``1.2GB``."""
    units = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def _stages(stage: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not stage:
        return []
    stats = stage.get("stageStats", {})
    nodes: dict[str, int] = {}
    for task in stage.get("tasks", []):
        node = str(task.get("taskStatus", {}).get("nodeId", "?"))
        nodes[node] = nodes.get(node, 0) + int(task.get("stats", {}).get("totalDrivers", 0))
    out = [
        {
            "stage": str(stage.get("stageId", "?")).rsplit(".", 1)[-1],
            "drivers": stats.get("totalDrivers", 0),
            "cpu_s": _duration(stats.get("totalCpuTime", "0s")),
            "scheduled_s": _duration(stats.get("totalScheduledTime", "0s")),
            "tasks": len(stage.get("tasks", [])),
            "drivers_per_node": nodes,
        }
    ]
    for sub in stage.get("subStages", []):
        out += _stages(sub)
    return out


def trino_figures(settings: Settings, query_id: str) -> dict[str, Any]:
    info = _query_info(settings, query_id)
    stats = info.get("queryStats", {})
    return {
        "elapsed_s": _duration(stats.get("elapsedTime", "0s")),
        "planning_s": _duration(stats.get("planningTime", "0s")),
        "cpu_s": _duration(stats.get("totalCpuTime", "0s")),
        "scheduled_s": _duration(stats.get("totalScheduledTime", "0s")),
        "input_rows": stats.get("rawInputPositions", 0),
        "input_bytes": _size(stats.get("rawInputDataSize", "0B")),
        "drivers": stats.get("totalDrivers", 0),
        "peak_memory_bytes": _size(stats.get("peakUserMemoryReservation", "0B")),
        "stages": _stages(info.get("outputStage")),
    }


def _machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}"


class TrinoWorker:
    """A second Trino process, from the stack's install, joined to the stack's coordinator."""

    def __init__(self, settings: Settings, work: Path, heap: str = "1G") -> None:
        from bench.bench_webhook import _free_port

        self.settings, self.work, self.heap = settings, work, heap
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300) -> None:
        from lakehook.stack import paths, versions
        from lakehook.stack.components import JAVA_CANDIDATES, java_home

        etc, data = self.work / "etc", self.work / "data"
        (etc / "catalog").mkdir(parents=True)
        (data / "tmp").mkdir(parents=True)
        coordinator = paths.etc_dir("trino")
        (etc / "node.properties").write_text(
            f"node.environment=lakehook\nnode.id=bench-worker-{self.port}\nnode.data-dir={data}\n"
        )
        (etc / "config.properties").write_text(
            "coordinator=false\n"
            f"http-server.http.port={self.port}\n"
            f"discovery.uri={self.settings.trino_url}\n"
            "query.max-memory-per-node=512MB\n"
            "memory.heap-headroom-per-node=256MB\n"
            "task.concurrency=2\n"
        )
        catalog = f"catalog/{self.settings.trino_catalog}.properties"
        (etc / catalog).write_text((coordinator / catalog).read_text())
        jvm = (coordinator / "jvm.config").read_text().splitlines()
        jvm = [
            f"-Xmx{self.heap}"
            if line.startswith("-Xmx")
            else f"-Djava.io.tmpdir={data / 'tmp'}"
            if line.startswith("-Djava.io.tmpdir")
            else line
            for line in jvm
        ]
        (etc / "jvm.config").write_text("\n".join(jvm) + "\n")
        home = java_home(JAVA_CANDIDATES, versions.TRINO_JAVA_MIN)
        launcher = paths.dist_dir() / f"trino-server-{versions.TRINO}" / "bin" / "launcher"
        self.log = (self.work / "worker.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - the stack's own Trino launcher
            [str(launcher), "run", f"--etc-dir={etc}", f"--data-dir={data}"],
            env={**os.environ, "JAVA_HOME": home, "PATH": f"{home}/bin:{os.environ['PATH']}"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the Trino worker exited; see {self.work / 'worker.log'}")
            if any(f":{self.port}" in str(n.get("uri", "")) for n in self._nodes()):
                return
            time.sleep(1)
        raise SystemExit(f"the Trino worker did not join within {timeout:.0f} s")

    def _nodes(self) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.settings.trino_url}/v1/node",
            headers={"X-Trino-User": self.settings.trino_user},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return list(json.loads(response.read()))

    def stop(self, timeout: float = 600) -> None:
        """Graceful shutdown: the worker takes no new tasks, finishes its own, then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/info/state",
            data=b'"SHUTTING_DOWN"',
            method="PUT",
            headers={"Content-Type": "application/json", "X-Trino-User": "admin"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.log.close()


def make_csv(path: Path, size_mb: int, base_mb: int = 1024) -> tuple[int, int]:
    """A lab CSV of about ``size_mb`` MiB: (bytes, rows). Up to ``base_mb`` from the generator;
    beyond, copies of that file's rows with the subjects renamed per copy (keys distinct)."""
    base_mb = min(size_mb, base_mb)
    rows = lab_rows_for_size(base_mb << 20)
    size = write_lab_csv(path, rows)
    copies = -(-size_mb // base_mb) - 1
    if copies <= 0:
        return size, rows
    with path.open("rb") as source:
        header = source.readline()
        body_start = len(header)
    with path.open("ab") as out:
        for copy in range(2, copies + 2):
            renamed = f",SYNTH01-{copy}".encode()
            with path.open("rb") as source:
                source.seek(body_start)
                carry = b""
                remaining = size - body_start
                while remaining > 0:
                    block = source.read(min(64 << 20, remaining))
                    remaining -= len(block)
                    block = carry + block
                    cut = block.rfind(b"\n") + 1
                    carry = block[cut:]
                    out.write(block[:cut].replace(b",SYNTH01-", renamed))
        rows *= copies + 1
    return path.stat().st_size, rows


def _engine_run(repo: str, branch: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    child = subprocess.run(  # noqa: S603 - this interpreter, the script above
        [sys.executable, "-c", _CHILD, repo, branch, str(work / branch)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    if child.returncode != 0:
        raise SystemExit(f"{branch}: exit {child.returncode}: {child.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    if result["state"] != "synced":
        raise SystemExit(f"{branch}: {result['errors']}")
    return result


def run(
    size_mb: int,
    work: Path,
    engines: list[str] | None = None,
    trino_worker: bool = False,
    csv: Path | None = None,
) -> list[str]:
    settings = Settings.load()
    lakefs = LakeFSClient.from_settings(settings)
    engines = engines or ["pyarrow", "trino"]
    repo = f"bench-engine-{uuid.uuid4().hex[:8]}"
    lakefs.create_repository(repo, f"local://{repo}")
    if csv is None:
        csv = work / "labs.csv"
        size, rows = make_csv(csv, size_mb)
    else:
        size = csv.stat().st_size
        with csv.open("rb") as handle:
            rows = sum(block.count(b"\n") for block in iter(lambda: handle.read(64 << 20), b""))
        rows -= 1
    print(f"{size / 1e9:.2f} GB lab CSV, {rows:,} rows; uploading", flush=True)
    with csv.open("rb") as data:
        lakefs.upload_object(repo, "main", "raw/labs.csv", data)
    lakefs.upload_object(repo, "main", "raw/contents.csv", lab_contents())
    base = lakefs.commit(repo, "main", "lab delivery", {}).id
    runs = [(e, e) for e in engines]
    if trino_worker and "trino" in engines:
        runs.append(("trino", "trino-1-worker"))
    results: dict[str, dict[str, Any]] = {}
    for engine, branch in runs:
        lakefs.create_branch(repo, branch, base)
        lakefs.upload_object(repo, branch, "lakehook.yaml", f"engine: {engine}\n".encode())
        lakefs.commit(repo, branch, f"engine: {engine}", {})
        load = os.getloadavg()[0]
        started = time.strftime("%H:%M UTC", time.gmtime())
        worker = TrinoWorker(settings, work / "trino-worker") if branch != engine else None
        if worker is not None:
            worker.start()
        try:
            results[branch] = _engine_run(repo, branch, work, dict(os.environ))
        finally:
            if worker is not None:
                worker.stop()
        results[branch]["load"] = f"{load:.0f} -> {os.getloadavg()[0]:.0f}"
        results[branch]["started"] = started
        print(f"{branch}: {results[branch]['seconds']:.1f} s", flush=True)
    lines = [
        f"{size / 1e9:.2f} GB lab CSV, {rows:,} rows; machine: {_machine()}; "
        f"date {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        "| run | started | load avg (1 min) start -> end | commit -> synced (s) | engine step (s) "
        "| write-back (s) | metastore + verify (s) | peak RSS of lakehook (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for branch, r in results.items():
        steps = r["steps"]
        lines.append(
            f"| {branch} | {r['started']} | {r['load']} | {r['seconds']:.1f} | "
            f"{steps.get('engine', 0):.1f} | {steps.get('write-back', 0):.1f} | "
            f"{steps.get('metastore + verify', 0):.1f} | {r['rss_kib'] / 1024:.0f} |"
        )
    heavy: dict[str, list[dict[str, Any]]] = {}
    for branch, r in results.items():
        if not r["queries"]:
            continue
        lines += [
            "",
            f"Trino's own figures per statement, {branch} (`/v1/query/{{id}}`):",
            "",
            "| statement | elapsed (s) | planning (s) | CPU (s) | scheduled (s) | input rows "
            "| input (MB) | splits (drivers) | peak memory (MB) "
            "| stages: drivers / CPU s / drivers per node |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        heavy[branch] = []
        for query in r["queries"]:
            if query["kind"] not in ("checks", "create"):
                continue
            figures = trino_figures(settings, query["id"])
            heavy[branch].append(figures)
            stages = "; ".join(
                f"{s['stage']}: {s['drivers']} / {s['cpu_s']:.1f} / "
                + ", ".join(f"{n}={d}" for n, d in sorted(s["drivers_per_node"].items()))
                for s in figures["stages"]
            )
            lines.append(
                f"| {query['kind']} | {figures['elapsed_s']:.1f} | {figures['planning_s']:.2f} | "
                f"{figures['cpu_s']:.1f} | {figures['scheduled_s']:.1f} | "
                f"{figures['input_rows']:,} | {figures['input_bytes'] / 1e6:.0f} | "
                f"{figures['drivers']} | {figures['peak_memory_bytes'] / 1e6:.0f} | {stages} |"
            )
        other = sum(q["seconds"] for q in r["queries"] if q["kind"] not in ("checks", "create"))
        lines += ["", f"DDL statements (scratch schema, tables, drops): {other:.1f} s in total."]
    lines += ["", json.dumps({"results": results, "trino": heavy}, default=str)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--engines", default="pyarrow,trino")
    parser.add_argument(
        "--trino-worker",
        action="store_true",
        help="run the Trino engine once more with a second Trino process joined as a worker",
    )
    parser.add_argument("--csv", type=Path, help="a lab CSV made before (reused)")
    parser.add_argument("--keep-csv", type=Path, help="write the generated CSV here and keep it")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        csv = args.csv
        if csv is None and args.keep_csv is not None:
            make_csv(args.keep_csv, args.size_mb)
            csv = args.keep_csv
        for line in run(args.size_mb, Path(tmp), engines, args.trino_worker, csv):
            print(line, flush=True)


if __name__ == "__main__":
    main()
