"""Processing benchmarks (issue 5), contenders side by side in one run, ratios first.

* ``throughput``: one lab-like CSV -> Parquet, interleaved rounds of
  - ``floor``: bare ``pyarrow.csv.read_csv`` + ``pq.write_table`` (no typing, no keys);
  - ``lakehook``: ``convert_file`` (declared types, invalid-value counts, 2 surrogate keys);
  - ``pandas``: what the proof of concept did: ``read_csv``, keys from a Python dict, ``to_parquet``.
  Goals: lakehook >= 4x pandas, <= 1.25x the floor (issue 15).
* ``incremental``: a 30-dataset study through ``BranchService`` on in-memory lakeFS: the full
  first processing against a delivery changing one dataset. Goal: <= 20 %.
* ``memory``: peak RSS of ``convert_file`` in a fresh process on growing files. Goal: <= 1 GB
  and flat as the file grows.

Run: ``.venv/bin/python -m bench.bench_processing [--rows 1000000] [--rounds 3]
[--memory-mb 256,1024]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.generator import generate_wide_study, lab_contents, lab_rows_for_size, write_lab_csv
from pipeline.processing.config import DEFAULT_KEYS
from pipeline.processing.contents import parse_contents
from pipeline.processing.convert import convert_file


def floor(csv: Path, out: Path) -> None:
    pq.write_table(pacsv.read_csv(csv), out / "floor.parquet")


def lakehook(csv: Path, out: Path) -> None:
    declared = parse_contents(lab_contents(), "raw/contents.csv").for_dataset("labs")
    convert_file(csv, declared, DEFAULT_KEYS, out / "lakehook")


def pandas_poc(csv: Path, out: Path) -> None:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    keys: dict[tuple[str, ...], int] = {}
    for name, cols in (
        ("patient", ["STUDYID", "USUBJID"]),
        ("visit", ["STUDYID", "USUBJID", "VISITNUM"]),
    ):
        values = []
        for row in frame[cols].itertuples(index=False, name=None):
            key = (name, *row)
            if key not in keys:
                keys[key] = len(keys) + 1
            values.append(keys[key])
        frame[f"{name}_sk"] = values
    frame.to_parquet(out / "pandas.parquet")


def _time(func: Callable[[Path, Path], None], csv: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (every thread of this process) of one run."""
    start, cpu = time.perf_counter(), time.process_time()
    func(csv, out)
    return time.perf_counter() - start, time.process_time() - cpu


def throughput(rows: int, rounds: int, work: Path) -> list[str]:
    csv = work / "labs.csv"
    size = write_lab_csv(csv, rows)
    contenders = {"floor": floor, "lakehook": lakehook, "pandas": pandas_poc}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, func in contenders.items():
            out = work / f"out-{name}"
            out.mkdir(exist_ok=True)
            wall, used = _time(func, csv, out)
            times[name].append(wall)
            cpu[name].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    load = os.getloadavg()
    lines = [
        f"CSV -> Parquet, {rows:,} rows, {size / 1e6:.0f} MB, median of {rounds} interleaved rounds "
        f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end)",
        "",
        f"- lakehook vs pandas PoC: **{med['pandas'] / med['lakehook']:.1f}x faster** (goal >= 4x)",
        f"- lakehook vs bare pyarrow floor: **{med['lakehook'] / med['floor']:.2f}x the floor** "
        "(goal <= 1.25x)",
        f"- CPU seconds (all threads), lakehook vs the floor: "
        f"**{med_cpu['lakehook'] / med_cpu['floor']:.2f}x** (what the cores did, whatever else "
        "ran on the machine)",
        "",
        "| contender | median s | CPU s | MB/s | rows/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, t in med.items():
        lines.append(
            f"| {name} | {t:.2f} | {med_cpu[name]:.2f} | {size / 1e6 / t:.0f} | {rows / t:,.0f} |"
        )
    return lines


def incremental(rows: int, work: Path) -> list[str]:
    from lakehook.settings import Settings
    from pipeline.service import BranchService
    from tests.fakes.lakefs import FakeLakeFS
    from tests.fakes.metastore import FakeMetastore
    from tests.fakes.status import MemoryStatusStore

    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    files = generate_wide_study(30, rows)
    for path, data in files.items():
        lakefs.upload_object("s", "main", path, data)
    lakefs.commit("s", "main", "delivery 1", {})
    service = BranchService(
        Settings.load({"LAKEHOOK_STATE_DIR": str(work / "state")}, None),
        lakefs,
        FakeMetastore(),
        MemoryStatusStore(),
        workdir=work,
    )
    start = time.perf_counter()
    service.sync_branch("s", "main")
    full = time.perf_counter() - start
    target = sorted(p for p in files if p != "raw/contents.csv")[6]
    lakefs.upload_object(
        "s", "main", target, files[target] + files[target].split(b"\n", 2)[1] + b"\n"
    )
    lakefs.commit("s", "main", "delivery 2: one dataset changed", {})
    start = time.perf_counter()
    status = service.sync_branch("s", "main")
    one = time.perf_counter() - start
    assert len(status.tables) == 30
    return [
        f"Incremental: 30 datasets x {rows:,} rows on in-memory lakeFS",
        "",
        f"- one dataset changed: **{one / full:.0%} of the full study** (goal <= 20 %)",
        "",
        "| run | s |",
        "| --- | ---: |",
        f"| full study (30 datasets) | {full:.2f} |",
        f"| one dataset changed | {one:.2f} |",
    ]


_CHILD = """
import resource, sys
from pathlib import Path
from pipeline.generator import lab_contents
from pipeline.processing.config import DEFAULT_KEYS
from pipeline.processing.contents import parse_contents
from pipeline.processing.convert import convert_file
declared = parse_contents(lab_contents(), "c").for_dataset("labs")
convert_file(Path(sys.argv[1]), declared, DEFAULT_KEYS, Path(sys.argv[2]))
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its
# parent's peak; VmHWM belongs to this process image alone
status = Path("/proc/self/status").read_text()
print(next(x.split()[1] for x in status.splitlines() if x.startswith("VmHWM:")))
"""


def memory(sizes_mb: list[int], work: Path) -> list[str]:
    lines = [
        "Peak RSS of `convert_file` in a fresh process (VmHWM)",
        "",
        "| CSV MB | rows | peak RSS MiB | seconds |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for mb in sizes_mb:
        csv = work / f"mem-{mb}.csv"
        rows = lab_rows_for_size(mb * 1_000_000)
        size = write_lab_csv(csv, rows)
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(csv), str(work / f"mem-out-{mb}")],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        peak_mib = int(result.stdout.strip().splitlines()[-1]) / 1024
        lines.append(f"| {size / 1e6:.0f} | {rows:,} | {peak_mib:.0f} | {seconds:.1f} |")
        csv.unlink()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wide-rows", type=int, default=20_000)
    parser.add_argument("--memory-mb", default="128,512")
    parser.add_argument("--only", choices=["throughput", "incremental", "memory"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lakehook-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "throughput"):
            print("\n".join(throughput(args.rows, args.rounds, work)) + "\n", flush=True)
        if args.only in (None, "incremental"):
            print("\n".join(incremental(args.wide_rows, work)) + "\n", flush=True)
        if args.only in (None, "memory"):
            mem = memory([int(m) for m in args.memory_mb.split(",")], work)
            print("\n".join(mem) + "\n", flush=True)
    print(
        f"\n(python {sys.version.split()[0]}, peak RSS of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
