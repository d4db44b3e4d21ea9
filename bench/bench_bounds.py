"""Bounds benchmarks (issue 11): hostile inputs, before and after, seconds and peak RSS.

Four inputs, each run in a fresh child process (seconds and VmHWM, as ``bench_processing``):

* ``quadratic-csv``: ``A\\n"`` followed by 16 MiB of newlines (the record splitter recounted
  quotes from byte 0 at every newline);
* ``yaml-alias-bomb``: a 450-byte ``lakehook.yaml`` of nested aliases under ``gate.protected``;
* ``100k-columns``: a 0.9 MB CSV whose header has 100,000 columns;
* ``300mb-one-line``: a header and one data line of 300 MB (written in pieces, never held).

BEFORE runs the code of ``--before`` (default: main before the bounds work) from a temporary
git worktree; AFTER runs this checkout. A child is killed after ``--timeout`` seconds or when
its resident memory passes ``--max-rss-mib`` (the machine is shared): the table then says
"> N s, killed" or "> N MiB, killed".

Run: ``.venv/bin/python -m bench.bench_bounds [--before 60d3ef6] [--timeout 60]
[--only quadratic-csv,...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "60d3ef6"  # main just before the bounds work (issue 11)

ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "gate: {protected: *i}\n"
)

_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
case, path = sys.argv[2], Path(sys.argv[3])
start = time.perf_counter()
try:
    if case == "yaml-alias-bomb":
        from pipeline.processing.config import parse_config
        parse_config(path.read_bytes())
    else:
        from pipeline.processing.convert import convert_file
        convert_file(path, None, {}, path.parent / ("out-" + path.name))
    outcome = "processed"
except Exception as err:  # the outcome is what we report
    outcome = type(err).__name__ + ": " + str(err).replace("|", "/")[:90]
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
peak = next(x.split()[1] for x in status.splitlines() if x.startswith("VmHWM:"))
print(f"{seconds}|{peak}|{outcome}")
"""


@dataclass(frozen=True)
class Result:
    seconds: str
    peak: str
    outcome: str


def make_input(case: str, work: Path) -> Path:
    path = work / f"{case}.{'yaml' if case == 'yaml-alias-bomb' else 'csv'}"
    if path.exists():
        return path
    with path.open("wb") as out:
        if case == "quadratic-csv":
            out.write(b'A\n"' + b"\n" * (16 << 20))
        elif case == "yaml-alias-bomb":
            out.write(ALIAS_BOMB.encode())
        elif case == "100k-columns":
            header = b",".join(b"C%d" % i for i in range(100_000))
            out.write(header + b"\n" + b"\n".join([b",".join([b"1"] * 100_000)] * 1) + b"\n")
        elif case == "300mb-one-line":
            out.write(b"A,B\n1,")
            piece = b"x" * (1 << 20)
            for _ in range(300):  # written in pieces: the benchmark never holds the line
                out.write(piece)
            out.write(b"\n")
        else:
            raise ValueError(case)
    return path


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(checkout: Path, case: str, path: Path, timeout: float, max_rss_mib: float) -> Result:
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(checkout), case, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=checkout,
    )
    peak_seen = 0.0
    while child.poll() is None:
        peak_seen = max(peak_seen, _rss_mib(child.pid))
        elapsed = time.perf_counter() - start
        if elapsed > timeout or peak_seen > max_rss_mib:
            child.kill()
            child.wait()
            if peak_seen > max_rss_mib:
                return Result(f"{elapsed:.1f}", f"> {max_rss_mib:.0f}", "killed (memory)")
            return Result(f"> {timeout:.0f}", f"{peak_seen:.0f} (at kill)", "killed (time)")
        time.sleep(0.05)
    out = (child.stdout.read() if child.stdout else "").strip().splitlines()
    if child.returncode != 0 or not out:
        return Result(f"{time.perf_counter() - start:.1f}", "?", f"crashed ({child.returncode})")
    seconds, peak, outcome = out[-1].split("|", 2)
    return Result(f"{float(seconds):.2f}", f"{int(peak) / 1024:.0f}", outcome)


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """``ref`` checked out in a temporary git worktree (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="lakehook-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


CASES = ("quadratic-csv", "yaml-alias-bomb", "100k-columns", "300mb-one-line")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git ref of the old code")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--max-rss-mib", type=float, default=2500.0)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--no-before", action="store_true", help="measure this checkout only")
    args = parser.parse_args(argv)
    cases = [c for c in args.only.split(",") if c]
    lines = [
        f"Hostile inputs, one fresh process each (kill after {args.timeout:.0f} s or "
        f"{args.max_rss_mib:.0f} MiB resident)",
        "",
        "| input | when | seconds | peak RSS MiB | outcome |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="lakehook-bounds-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            trees = [("after", ROOT)]
            if not args.no_before:
                trees.insert(
                    0, (f"before ({args.before})", stack.enter_context(worktree(args.before)))
                )
            for case in cases:
                path = make_input(case, work)
                for label, tree in trees:
                    result = run(tree, case, path, args.timeout, args.max_rss_mib)
                    lines.append(
                        f"| {case} | {label} | {result.seconds} | {result.peak} | "
                        f"{result.outcome} |"
                    )
                    print(lines[-1], flush=True)
    print("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
