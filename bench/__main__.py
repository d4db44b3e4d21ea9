"""``python -m bench``: every benchmark, one after another (``make bench``).

Each module also runs on its own (``python -m bench.bench_processing --help``). Results are
printed as Markdown, ready for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import sys

from bench import (
    bench_bounds,
    bench_branch_create,
    bench_commit,
    bench_isolation,
    bench_processing,
    bench_replicas,
    bench_webhook,
)


def main() -> None:
    print("# lakehook benchmarks\n")
    for name, module in (
        ("processing", bench_processing),
        ("bounds: hostile inputs before and after", bench_bounds),
        ("webhook", bench_webhook),
        ("branch creation (needs the local stack)", bench_branch_create),
        ("commit -> synced, CDISC pilot (needs the local stack)", bench_commit),
        ("intake isolation under a 1 GB CSV (needs the local stack)", bench_isolation),
        (
            "replicas: two against one on one PostgreSQL queue (needs the local stack)",
            bench_replicas,
        ),
    ):
        print(f"\n## {name}\n", flush=True)
        module.main([])
        sys.stdout.flush()


if __name__ == "__main__":
    main()
