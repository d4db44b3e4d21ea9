"""The stack's memory bounds as its components are configured (docs/operations.md), and
Trino's start-up files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lakehook.settings import Settings
from lakehook.stack import components, paths, versions


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LAKEHOOK_STACK_DIR", str(tmp_path / "stack"))
    return Settings.load({})


def size_mib(text: str) -> int:
    """``2G``, ``768MB``, ``512m``, ``512MiB`` -> MiB."""
    match = re.fullmatch(r"(\d+)\s*([GgMm])(?:i?B)?", text)
    assert match, text
    return int(match[1]) * (1024 if match[2] in "Gg" else 1)


def flag(argv: list[str], prefix: str) -> str:
    (value,) = [a.removeprefix(prefix) for a in argv if a.startswith(prefix)]
    return value


def test_trino_heap_fits_its_query_memory_and_the_engine_benchmark(settings: Settings) -> None:
    trino = components.Trino(settings)
    trino.configure()
    etc = paths.etc_dir("trino")
    jvm = (etc / "jvm.config").read_text().splitlines()
    config = dict(
        line.split("=", 1) for line in (etc / "config.properties").read_text().splitlines()
    )
    heap = size_mib(flag(jvm, "-Xmx"))
    query = size_mib(config["query.max-memory-per-node"])
    headroom = size_mib(config["memory.heap-headroom-per-node"])
    assert query + headroom <= heap  # else Trino refuses to start
    # the Trino engine's checks of a 5.38 GB lab CSV outgrew 1 GB of query memory (its key
    # collision check holds the distinct keys; docs/benchmarks.md): 3 GB of query memory
    assert query >= 3072
    assert heap <= 4096  # idle, G1 gives the unused heap back (below): the stack stays small
    assert "-XX:G1PeriodicGCInterval=60000" in jvm  # idle heap goes back to the system
    assert "-XX:MaxHeapFreeRatio=30" in jvm
    assert trino.env()["MALLOC_ARENA_MAX"] == "2"


def test_jvms_and_lakefs_are_bounded(settings: Settings) -> None:
    hms = components.HiveMetastore(settings).argv()
    marquez = components.Marquez(settings).argv()
    assert size_mib(flag(hms, "-Xmx")) <= 512
    assert size_mib(flag(marquez, "-Xmx")) <= 256
    assert flag(marquez, "-Xmx") == versions.MARQUEZ_HEAP
    for argv in (hms, marquez):
        assert "-XX:MaxHeapFreeRatio=30" in argv
    lakefs = components.LakeFS(settings)
    assert size_mib(lakefs.env()["GOMEMLIMIT"]) <= 512
    lakefs.configure()
    config = json.loads((paths.etc_dir("lakefs") / "config.yaml").read_text())
    assert config["committed"]["sstable"]["memory"]["cache_size_bytes"] <= 64_000_000


def test_postgresql_and_marquezs_pool_stay_small(settings: Settings) -> None:
    argv = components.PostgreSQL(settings).argv()
    assert "shared_buffers=64MB" in argv
    template = Path(components.__file__).parent / "templates" / "marquez" / "marquez.yml"
    text = template.read_text()
    assert "minSize: 2" in text
    assert "initialSize: 2" in text


def test_a_stale_launcher_pid_file_does_not_stop_trino_from_starting(settings: Settings) -> None:
    # the launcher refused with "already running as 6412" when that pid had been reused
    stale = paths.data_dir("trino") / "var" / "run" / "launcher.pid"
    stale.parent.mkdir(parents=True)
    stale.write_text("1\n")  # pid 1 is always alive
    components.Trino(settings).configure()
    assert not stale.exists()


def test_memory_counts_a_component_and_its_children() -> None:
    import os
    import subprocess
    import sys
    import time

    from lakehook.stack import process

    alone_rss, alone_pss = process.memory_kib(os.getpid())
    assert 0 < alone_pss <= alone_rss
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while child.pid not in process.process_tree(os.getpid()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert process.memory_kib(os.getpid())[0] > alone_rss  # the child's pages count
    finally:
        child.kill()
        child.wait()
    assert process.memory_kib(None) == (0, 0)
