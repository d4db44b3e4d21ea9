"""Pre-merge decisions made in gate processes (``server.gate_process``), not in the intake."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lakehook.errors import ServiceUnavailable
from lakehook.settings import Settings
from server.gate_process import GateProcesses
from tests.ports import free_port


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[GateProcesses]:
    settings = replace(
        Settings.load({}, None),
        state_dir=tmp_path / "state",
        lakefs_url=f"http://127.0.0.1:{free_port()}",  # lakeFS down: the gate cannot decide
        gate_processes=2,
    )
    pool = GateProcesses(settings)
    pool.start()
    yield pool
    pool.stop()


def test_the_decision_is_made_in_another_process_and_its_failure_comes_back_as_a_503_error(
    gates: GateProcesses,
) -> None:
    pids = gates.pids()
    assert len(pids) == 2
    assert os.getpid() not in pids
    # each process lowers its priority first thing in its initializer (which a process may
    # still be running when the other has answered ``start``'s pings)
    nicer = min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)
    deadline = time.monotonic() + 60
    while {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} != {nicer}:
        assert time.monotonic() < deadline, [os.getpriority(os.PRIO_PROCESS, p) for p in pids]
        time.sleep(0.02)
    with pytest.raises(ServiceUnavailable, match="lakeFS"):
        gates.decide("study", "feature", "main", None)
    assert gates.pids() == pids  # a failed decision does not cost a process


def test_a_gate_process_that_dies_is_replaced_and_the_merge_it_decided_is_refused(
    gates: GateProcesses,
) -> None:
    before = gates.pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ServiceUnavailable, match="gate process ended"):
        gates.decide("study", "feature", "main", None)
    # the next decision gets new processes (it still cannot decide: lakeFS is down)
    with pytest.raises(ServiceUnavailable, match="lakeFS"):
        gates.decide("study", "feature", "main", None)
    deadline = time.monotonic() + 60
    while not gates.pids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not set(gates.pids()) & set(before)


def test_listing_the_processes_while_the_pool_starts_one_never_fails(tmp_path: Path) -> None:
    """``/healthz`` lists the gate processes while the pool may be starting one on another
    thread (a decision's ``submit``): the listing iterated the pool's own dict of processes
    and failed with "dictionary changed size during iteration", a 500 from ``/healthz``
    (seen in make test on 2026-12-02, right after a start). Here the first process checked
    makes the pool start another, as that thread did."""
    processes: dict[int, Any] = {}

    class Process:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def is_alive(self) -> bool:
            if len(processes) == 1:  # meanwhile, another thread starts a second process
                processes[2] = Process(2002)
            return True

    processes[1] = Process(1001)
    gates = GateProcesses(replace(Settings.load({}, None), state_dir=tmp_path))
    gates._pool = SimpleNamespace(_processes=processes)  # type: ignore[assignment]
    assert gates.pids() == [1001]  # the processes as they were when listed
    assert gates.pids() == [1001, 2002]
