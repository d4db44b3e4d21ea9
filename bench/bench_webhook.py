"""Webhook acknowledgement latency (issue 4): 200 requests/s for 30 s against ``lakehook serve``.

The server runs as its own process (``lakehook serve`` on a free port, its own state dir);
this process sends signed ``post-delete-tag`` events (durably queued, then a cheap job) at a
fixed rate from 4 keep-alive connections and records each request's latency until the 202.
Every request must be answered 202 (``lost`` counts anything else). Goal: p99 <= 20 ms.

Run: ``.venv/bin/python -m bench.bench_webhook [--rate 200] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a local benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lakehook serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("lakehook serve did not answer /healthz within 60 s")


def run(rate: float, seconds: float, connections: int = 4) -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="lakehook-bench-") as state:
        env = dict(
            os.environ,
            LAKEHOOK_LISTEN=f"127.0.0.1:{port}",
            LAKEHOOK_STATE_DIR=state,
            LAKEHOOK_WEBHOOK_TOKEN=TOKEN,
            LAKEHOOK_RECONCILE_INTERVAL="3600",
            LAKEHOOK_LOG_LEVEL="WARNING",
        )
        log = (Path(state) / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from lakehook.cli import main; main()", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(port, proc)
            return _load(port, rate, seconds, connections)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def _load(port: int, rate: float, seconds: float, connections: int) -> dict[str, float]:
    total = int(rate * seconds)
    latencies: list[float] = []
    lost = 0
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def sender(worker: int) -> None:
        nonlocal lost
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(worker, total, connections):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps(
                {
                    "event_type": "post-delete-tag",
                    "repository_id": "bench",
                    "tag_id": f"t{i % 50}",
                    "commit_id": "c",
                }
            )
            sent = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    "/webhooks/lakefs",
                    body,
                    {"X-Lakehook-Token": TOKEN, "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                ok = response.status == 202
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            elapsed = time.perf_counter() - sent
            with lock:
                latencies.append(elapsed)
                if not ok:
                    lost += 1

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "achieved_rate": len(ordered) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max_ms": ordered[-1] * 1000,
        "lost": lost,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)
    r = run(args.rate, args.seconds)
    print(
        f"Webhook acknowledgement at {args.rate:.0f} req/s for {args.seconds:.0f} s: "
        f"p99 {r['p99_ms']:.1f} ms (goal <= 20 ms), lost {r['lost']:.0f}"
    )
    print("\n| requests | achieved req/s | p50 ms | p99 ms | max ms | lost |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {r['requests']:.0f} | {r['achieved_rate']:.0f} | {r['p50_ms']:.1f} | "
        f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['lost']:.0f} |"
    )


if __name__ == "__main__":
    main()
