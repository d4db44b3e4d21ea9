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

Needs the local stack. Run: ``.venv/bin/python -m bench.bench_engine [--size-mb 1024]``.
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
    out = [
        {
            "stage": stage.get("stageId", "?"),
            "drivers": stats.get("totalDrivers", 0),
            "cpu_s": _duration(stats.get("totalCpuTime", "0s")),
            "tasks": len(stage.get("tasks", [])),
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


def run(size_mb: int, work: Path) -> list[str]:
    settings = Settings.load()
    lakefs = LakeFSClient.from_settings(settings)
    repo = f"bench-engine-{uuid.uuid4().hex[:8]}"
    lakefs.create_repository(repo, f"local://{repo}")
    csv = work / "labs.csv"
    rows = lab_rows_for_size(size_mb << 20)
    size = write_lab_csv(csv, rows)
    with csv.open("rb") as data:
        lakefs.upload_object(repo, "main", "raw/labs.csv", data)
    lakefs.upload_object(repo, "main", "raw/contents.csv", lab_contents())
    base = lakefs.commit(repo, "main", "lab delivery", {}).id
    csv.unlink()
    results: dict[str, dict[str, Any]] = {}
    for engine in ("pyarrow", "trino"):
        lakefs.create_branch(repo, engine, base)
        lakefs.upload_object(repo, engine, "lakehook.yaml", f"engine: {engine}\n".encode())
        lakefs.commit(repo, engine, f"engine: {engine}", {})
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, repo, engine, str(work / engine)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        results[engine] = json.loads(child.stdout.strip().splitlines()[-1])
        if results[engine]["state"] != "synced":
            raise SystemExit(f"{engine}: {results[engine]['errors']}")
    lines = [
        f"{size / 1e9:.2f} GB lab CSV, {rows:,} rows; machine: {_machine()}; "
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| engine | commit -> synced (s) | engine step (s) | write-back (s) | metastore + verify (s)"
        " | peak RSS of lakehook (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for engine, r in results.items():
        steps = r["steps"]
        lines.append(
            f"| {engine} | {r['seconds']:.1f} | {steps.get('engine', 0):.1f} | "
            f"{steps.get('write-back', 0):.1f} | {steps.get('metastore + verify', 0):.1f} | "
            f"{r['rss_kib'] / 1024:.0f} |"
        )
    lines += [
        "",
        "Trino's own figures per statement (`/v1/query/{id}`):",
        "",
        "| statement | elapsed (s) | planning (s) | CPU (s) | scheduled (s) | input rows "
        "| input (MB) | splits (drivers) | peak memory (MB) | stages: drivers / CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    heavy: list[dict[str, Any]] = []
    for query in results["trino"]["queries"]:
        if query["kind"] not in ("checks", "create"):
            continue
        figures = trino_figures(settings, query["id"])
        heavy.append(figures)
        stages = "; ".join(
            f"{s['stage']}: {s['drivers']} / {s['cpu_s']:.1f}" for s in figures["stages"]
        )
        lines.append(
            f"| {query['kind']} | {figures['elapsed_s']:.1f} | {figures['planning_s']:.2f} | "
            f"{figures['cpu_s']:.1f} | {figures['scheduled_s']:.1f} | {figures['input_rows']:,} | "
            f"{figures['input_bytes'] / 1e6:.0f} | {figures['drivers']} | "
            f"{figures['peak_memory_bytes'] / 1e6:.0f} | {stages} |"
        )
    other = sum(
        q["seconds"] for q in results["trino"]["queries"] if q["kind"] not in ("checks", "create")
    )
    lines += ["", f"DDL statements (scratch schema, tables, drops): {other:.1f} s in total.", ""]
    lines.append(json.dumps({"results": results, "trino": heavy}, default=str))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        for line in run(args.size_mb, Path(tmp)):
            print(line, flush=True)


if __name__ == "__main__":
    main()
