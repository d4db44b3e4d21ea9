"""The intake stays fast while a worker processes a 1 GB CSV (issue 16), side by side in one run.

Starts ``lakehook serve`` on the local stack (own port and state dir), then twice measures the
webhook acknowledgement (signed ``post-delete-tag`` events, durably queued, at ``--rate`` per
second from 4 keep-alive connections, as ``bench_webhook``) and the pre-merge gate's answer
time (one request every 0.5 s):

* **idle**: for ``--seconds`` with nothing being processed;
* **under load**: while a worker process processes a ``--size-mb`` lab CSV committed to a study
  repository (``pipeline.generator.write_lab_csv``) with ``engine: pyarrow`` in its
  ``lakehook.yaml`` (the worker itself does the work; ``--engine auto`` leaves it to the size);
  only the requests sent between the job's start and end (from the job API) count.

It also reports the job's worker process's peak address space (``VmPeak``, what ``RLIMIT_AS``
= ``LAKEHOOK_WORKER_MEMORY_LIMIT_MB`` limits) and peak resident memory (``VmHWM``), so that the
memory ceiling can be sized from a real run, and the machine and its load average.

Goal: webhook p99 <= 20 ms under load. Needs the stack (``lakehook stack up``).

Run: ``nice -n 5 .venv/bin/python -m bench.bench_isolation [--size-mb 1024] [--rate 100]
[--seconds 20] [--csv PATH]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_webhook import _free_port
from lakehook.settings import Settings
from pipeline.generator import lab_contents, lab_rows_for_size, write_lab_csv

# the token is the installation's (lakeFS's actions send it): set in ``run``
HEADERS = {"Content-Type": "application/json"}


@dataclass
class Samples:
    """(sent at, seconds, ok) per request, by kind."""

    webhook: list[tuple[float, float, bool]] = field(default_factory=list)
    gate: list[tuple[float, float, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, sent: float, seconds: float, ok: bool) -> None:
        with self.lock:
            getattr(self, kind).append((sent, seconds, ok))


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, bytes]:
    conn.request(method, path, json.dumps(body) if body is not None else None, HEADERS)
    response = conn.getresponse()
    return response.status, response.read()


def _get(port: int, path: str, missing: Any = SystemExit) -> Any:
    """GET ``path`` as JSON; a 404 returns ``missing`` when one is given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, body = _request(conn, "GET", path)
    finally:
        conn.close()
    if status == 404 and missing is not SystemExit:
        return missing
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}: {body[:200]!r}")
    return json.loads(body)


def _senders(
    port: int,
    rate: float,
    stop: threading.Event,
    samples: Samples,
    repo: str,
    connections: int = 4,
    gate_every: float = 0.5,
    source_commit: str = "feature",
) -> list[threading.Thread]:
    def webhooks(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start, i = time.perf_counter(), worker
        while not stop.is_set():
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            event = {
                "event_type": "post-delete-tag",
                "repository_id": "bench-noise",
                "tag_id": f"t{i % 50}",
                "commit_id": "c",
            }
            sent, wall = time.perf_counter(), time.time()
            try:
                ok = _request(conn, "POST", "/webhooks/lakefs", event)[0] == 202
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            samples.add("webhook", wall, time.perf_counter() - sent, ok)
            i += connections

    def gate() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        event = {
            "event_type": "pre-merge",
            "repository_id": repo,
            "branch_id": "main",
            "source_ref": source_commit,  # as lakeFS sends it: the source's commit id
            "merge_source": "feature",
        }
        while not stop.wait(gate_every):
            sent, wall = time.perf_counter(), time.time()
            try:
                ok = _request(conn, "POST", "/webhooks/lakefs", event)[0] in (200, 412)
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            samples.add("gate", wall, time.perf_counter() - sent, ok)

    threads = [threading.Thread(target=webhooks, args=(w,)) for w in range(connections)]
    if gate_every > 0:
        threads.append(threading.Thread(target=gate))
    for t in threads:
        t.start()
    return threads


def _summary(rows: list[tuple[float, float, bool]]) -> dict[str, float]:
    ordered = sorted(seconds for _, seconds, _ in rows)
    if not ordered:
        return {"requests": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "failed": 0}
    return {
        "requests": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000,
        "max_ms": ordered[-1] * 1000,
        "failed": sum(1 for *_, ok in rows if not ok),
    }


def _gate_overlap(samples: Samples, slow: float = 0.020) -> dict[str, float]:
    """How many of the webhooks slower than ``slow`` were in flight while a pre-merge was, and
    the share of the time a pre-merge was in flight at all: if the first share is far above
    the second, the gate's work in the intake is what slows them."""
    gates = sorted((sent, sent + seconds) for sent, seconds, _ in samples.gate)
    slow_hooks = [(sent, sent + seconds) for sent, seconds, _ in samples.webhook if seconds > slow]
    overlapping = sum(1 for a, b in slow_hooks if any(g0 < b and a < g1 for g0, g1 in gates))
    span = 0.0
    if samples.webhook:
        first = min(s[0] for s in samples.webhook)
        last = max(s[0] + s[1] for s in samples.webhook)
        span = last - first
    covered = sum(g1 - g0 for g0, g1 in gates)
    return {
        "slow": len(slow_hooks),
        "overlapping": overlapping,
        "gate_share": covered / span if span else 0.0,
    }


def _server_buckets(port: int, route: str = "webhook") -> dict[float, float]:
    """The intake's own ``lakehook_http_request_seconds`` buckets (cumulative) for ``route``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[float, float] = {}
    prefix = "lakehook_http_request_seconds_bucket{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Between two scrapes: requests, the bucket bound under which 99 % were answered, and the
    share answered within 20 ms, as the intake itself timed them (no client, no network)."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return {"requests": 0, "p99_bound_ms": 0.0, "within_20ms": 0.0}
    bound = min(le for le, n in delta.items() if n >= 0.99 * total)
    return {
        "requests": total,
        "p99_bound_ms": bound * 1000,
        "within_20ms": delta.get(0.02, 0.0) / total,
    }


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lakehook serve exited with {proc.returncode}")
        try:
            workers = _get(port, "/healthz")["workers"]
            if workers and all(w["ready"] for w in workers):
                return
        except (OSError, SystemExit):
            pass
        time.sleep(0.2)
    raise SystemExit("lakehook serve's workers were not ready within 300 s")


def _memory(pids: list[int]) -> dict[str, float]:
    """Peak address space and peak resident set (MiB) of the largest of ``pids``."""
    peak = {"vm_peak_mb": 0.0, "rss_peak_mb": 0.0}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        vm = int(fields.get("VmPeak", "0 kB").split()[0]) / 1024
        rss = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
        if vm > peak["vm_peak_mb"]:
            peak = {"vm_peak_mb": vm, "rss_peak_mb": rss}
    return peak


def machine() -> str:
    """CPU model, cores, memory and the load average now (for the figures' context)."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; load average {load}"


def _wait_job(port: int, repo: str, commit: str, timeout: float = 1800) -> dict[str, Any]:
    """The sync job that processed ``commit`` (once its status names it), with its times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _get(port, f"/api/v1/repos/{repo}/branches/main/status", missing={})
        if status.get("source_commit") == commit and status["state"] in ("synced", "failed"):
            jobs = [
                j
                for j in _get(port, f"/api/v1/repos/{repo}/jobs")
                if j["ref"] == "main" and j["state"] == "done" and j["started_at"]
            ]
            return {"status": status, "job": max(jobs, key=lambda j: j["finished_at"])}
        time.sleep(0.5)
    raise SystemExit(f"{repo}/main did not finish {commit} within {timeout:.0f} s")


def run(
    size_mb: int,
    rate: float,
    seconds: float,
    work: Path,
    csv: Path | None = None,
    engine: str = "pyarrow",
    gate_every: float = 0.5,
    server_session: str = "own",
) -> dict[str, Any]:
    from pipeline.adapters.lakefs import LakeFSClient
    from server.actions import install

    settings = Settings.load()
    HEADERS["X-Lakehook-Token"] = settings.webhook_token
    lakefs = LakeFSClient.from_settings(settings)
    port = _free_port()
    state = work / "state"
    env = dict(
        os.environ,
        LAKEHOOK_LISTEN=f"127.0.0.1:{port}",
        LAKEHOOK_STATE_DIR=str(state),
        LAKEHOOK_RECONCILE_INTERVAL="3600",
        LAKEHOOK_LOG_LEVEL="WARNING",
    )
    state.mkdir(parents=True)
    log = (state / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # as a service runs, and as lakeFS, whose webhooks this client stands for, runs: in a
        # session (so a scheduling group) of its own, not sharing the client's (see --help)
        start_new_session=server_session == "own",
    )
    try:
        _wait_ready(port, proc)
        repo = f"bench-iso-{uuid.uuid4().hex[:8]}"
        lakefs.create_repository(repo, f"local://{repo}")
        install(lakefs, repo, "main", f"http://127.0.0.1:{port}")
        lakefs.upload_object(repo, "main", "raw/contents.csv", lab_contents("labs"))
        lakefs.upload_object(repo, "main", "lakehook.yaml", f"engine: {engine}\n".encode())
        small = work / "small.csv"
        write_lab_csv(small, 1000)
        with small.open("rb") as handle:
            lakefs.upload_object(repo, "main", "raw/labs.csv", handle)
        first = lakefs.commit(repo, "main", "small delivery", {}).id
        _wait_job(port, repo, first)
        lakefs.create_branch(repo, "feature", "main")
        feature = lakefs.branch_head(repo, "feature")

        # idle: nothing processed
        samples = Samples()
        stop = threading.Event()
        scraped = _server_buckets(port)
        threads = _senders(
            port, rate, stop, samples, repo, gate_every=gate_every, source_commit=feature
        )
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        idle = {"webhook": _summary(samples.webhook), "gate": _summary(samples.gate)}
        idle_overlap = _gate_overlap(samples)
        idle_server = _server_side(scraped, _server_buckets(port))

        # under load: a worker processes the big CSV
        started_load = machine()
        big = csv or work / "big.csv"
        if csv is None:
            write_lab_csv(big, lab_rows_for_size(size_mb * 1024 * 1024))
        size = big.stat().st_size
        with big.open("rb") as handle:
            lakefs.upload_object(repo, "main", "raw/labs.csv", handle)
        samples = Samples()
        stop = threading.Event()
        scraped = _server_buckets(port)
        threads = _senders(
            port, rate, stop, samples, repo, gate_every=gate_every, source_commit=feature
        )
        commit = lakefs.commit(repo, "main", "big delivery", {}).id
        done = _wait_job(port, repo, commit)
        stop.set()
        for t in threads:
            t.join()
        load_server = _server_side(scraped, _server_buckets(port))
        job = done["job"]
        workers = [w["pid"] for w in _get(port, "/healthz")["workers"] if w["role"] == "worker"]
        memory = _memory([int(p) for p in workers if p])
        gate_memory = _memory([int(p) for p in _get(port, "/healthz").get("gate_processes", [])])
        window = (job["started_at"], job["finished_at"])
        inside = Samples()
        inside.webhook = [s for s in samples.webhook if window[0] <= s[0] <= window[1]]
        inside.gate = [s for s in samples.gate if window[0] <= s[0] <= window[1]]
        timeline = []  # webhook acks under load, per 5 s from the job's start
        for start in range(0, int(window[1] - window[0]) + 1, 5):
            rows = [x for x in inside.webhook if start <= x[0] - window[0] < start + 5]
            if rows:
                timeline.append((start, _summary(rows)))
        settings = Settings.load(env)  # what the server was started with
        return {
            "timeline": timeline,
            "size_mb": size / 1024 / 1024,
            "processing_s": window[1] - window[0],
            "state": done["status"]["state"],
            "workers": len(workers),
            "engine": done["status"]["tables"][0].get("engine", "?")
            if done["status"].get("tables")
            else "?",
            "memory_limit_mb": settings.worker_memory_limit_mb,
            "worker_nice": settings.worker_nice,
            "worker_scheduling": settings.worker_scheduling,
            "server_session": server_session,
            "memory": memory,
            "gate_memory": gate_memory,
            "gate_processes": settings.gate_processes,
            "machine_start": started_load,
            "machine_end": machine(),
            "idle": idle,
            "load": {"webhook": _summary(inside.webhook), "gate": _summary(inside.gate)},
            "server": {"idle": idle_server, "load": load_server},
            "overlap": {"idle": idle_overlap, "load": _gate_overlap(inside)},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--csv", type=Path, default=None, help="a lab CSV made before (reused)")
    parser.add_argument("--engine", choices=("pyarrow", "trino", "auto"), default="pyarrow")
    parser.add_argument(
        "--gate-every", type=float, default=0.5, help="seconds between pre-merges (0: none)"
    )
    parser.add_argument(
        "--timeline", action="store_true", help="webhook p50/p99/max per 5 s of the job too"
    )
    parser.add_argument(
        "--server-session",
        choices=("own", "client"),
        default="own",
        help="own: the server in a session of its own, as a service (and lakeFS) runs; client: "
        "in this client's session, as until 2026-12-02, so that Linux's autogroup scheduling "
        "puts the client's threads and the intake in one group",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    with tempfile.TemporaryDirectory(prefix="lakehook-bench-iso-") as work:
        r = run(
            args.size_mb,
            args.rate,
            args.seconds,
            Path(work),
            args.csv,
            args.engine,
            args.gate_every,
            args.server_session,
        )
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {r['machine_start']}")
    print(f"(after the run: {r['machine_end']})")
    print(
        f"Intake while a worker processes a {r['size_mb']:.0f} MB CSV "
        f"({r['processing_s']:.1f} s, {r['state']}, engine {r['engine']}, "
        f"{r['workers']} worker processes, jobs at nice +{r['worker_nice']}"
        f"{' and SCHED_IDLE' if r['worker_scheduling'] == 'idle' else ''}; the server in "
        f"{'a session of its own' if r['server_session'] == 'own' else 'the client session'}), "
        f"webhooks at {args.rate:.0f}/s, "
        + (f"a pre-merge every {args.gate_every:g} s:" if args.gate_every else "no pre-merge:")
    )
    print("\n| phase | request | requests | p50 ms | p99 ms | max ms | failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for phase in ("idle", "load"):
        for kind in ("webhook", "gate"):
            s = r[phase][kind]
            print(
                f"| {phase} | {'webhook ack' if kind == 'webhook' else 'pre-merge'} | "
                f"{s['requests']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                f"{s['max_ms']:.1f} | {s['failed']:.0f} |"
            )
    print(
        "\nthe intake's own timing of the webhooks (lakehook_http_request_seconds: handler "
        "start to response sent; no client, no network), by histogram bucket:"
    )
    print("\n| phase | webhooks | 99 % answered within ms | share within 20 ms |")
    print("| --- | ---: | ---: | ---: |")
    for phase in ("idle", "load"):
        v = r["server"][phase]
        print(
            f"| {phase} | {v['requests']:.0f} | {v['p99_bound_ms']:g} | "
            f"{100 * v['within_20ms']:.2f} % |"
        )
    if args.timeline:
        print("\n| s into the job | webhooks | p50 ms | p99 ms | max ms |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for start, w in r["timeline"]:
            print(
                f"| {start} | {w['requests']:.0f} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} | "
                f"{w['max_ms']:.1f} |"
            )
    if args.gate_every:
        print("\nwebhooks over 20 ms (client side) in flight while a pre-merge was:")
        for phase in ("idle", "load"):
            o = r["overlap"][phase]
            print(
                f"- {phase}: {o['overlapping']:.0f} of {o['slow']:.0f}; a pre-merge was in "
                f"flight {100 * o['gate_share']:.0f} % of the time"
            )
    m = r["memory"]
    print(
        f"\nthe job's worker: peak address space {m['vm_peak_mb']:.0f} MiB (VmPeak; the ceiling "
        f"LAKEHOOK_WORKER_MEMORY_LIMIT_MB is {r['memory_limit_mb']}), "
        f"peak resident {m['rss_peak_mb']:.0f} MiB (VmHWM)"
    )
    g = r["gate_memory"]
    print(
        f"gate processes: {r['gate_processes']}"
        + (
            f", the largest {g['rss_peak_mb']:.0f} MiB resident at its peak"
            if g["rss_peak_mb"]
            else ""
        )
        + (" (0: the intake decides)" if not r["gate_processes"] else "")
    )
    goal = r["load"]["webhook"]["p99_ms"] <= 20
    print(f"\nwebhook p99 under load {'meets' if goal else 'misses'} the goal (<= 20 ms)")


if __name__ == "__main__":
    main()
