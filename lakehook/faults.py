"""Fault points for tests: make this process fail at a named step, on purpose.

``LAKEHOOK_FAULT_POINT=<point>`` (or ``<point>=<action>``, several separated by commas) arms a
point; code that reaches it calls ``reached("<point>")``, which runs the action there: by
default ``kill``, a SIGKILL of the own process (no cleanup, no flush: the harshest crash there
is). It is off by default and
refused unless ``LAKEHOOK_TESTING=1`` (``validate``), so a production server never carries it.

Points are declared in ``POINTS`` and actions in ``ACTIONS``; another test hook is one more
entry in each, with no change to the callers. A point may be narrowed to one subject:
``before-dataset:LB_BIG=allocate`` fires only when the dataset ``LB_BIG`` is about to be
processed (``reached("before-dataset", "LB_BIG")``). The worker-process actions of issue 16:

* ``allocate``: allocate memory in 64 MiB pieces until the process's address-space ceiling
  (``RLIMIT_AS``, the worker memory limit) makes it fail with ``MemoryError``; refused (a
  ``MemoryError`` at once) in a process without a ceiling, so it never eats the machine;
* ``hang``: never return (the job's wall-clock limit must end it);
* ``pause``: sleep ``PAUSE_SECONDS``, then go on (a job slow enough to be killed mid-way);
* ``hold``: wait until the file named by ``LAKEHOOK_FAULT_RELEASE`` exists (polled every 50 ms,
  at most ``HOLD_SECONDS``), then go on: a job that is "still processing" for exactly as long
  as a test needs, with no race against a clock.

``kill`` in a worker process of ``lakehook serve`` takes the intake with it
(``kill_together_with``), so that the whole server dies at that instant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable

from lakehook.errors import ConfigError

log = logging.getLogger(__name__)

# where the write-back (pipeline/service.py, pipeline/processing/writeback.py) can be stopped
POINTS: dict[str, str] = {
    "after-upload": "outputs uploaded to the working branch, not committed",
    "after-working-commit": "outputs committed on the working branch, not merged",
    "after-merge": "working branch merged into the user's branch, not deleted (narrow it: after-merge:<branch>)",
    "after-working-branch-delete": "working branch deleted, metastore not synced",
    "after-metastore-change": "first metastore change made, the rest not",
    "after-verify": "metastore verified, status not recorded",
    "after-lineage-start": "lineage START sent, the table not processed",
    "before-dataset": "a dataset is about to be processed (narrow it: before-dataset:<name>)",
}
PAUSE_SECONDS = 5.0
HOLD_SECONDS = 600.0
RELEASE_ENV = "LAKEHOOK_FAULT_RELEASE"
_together: list[int] = []  # other processes of this server that die at a kill point


def kill_together_with(pid: int) -> None:
    """At a ``kill`` point, SIGKILL ``pid`` as well (a worker process takes its intake along)."""
    _together.append(pid)


def _kill(point: str) -> None:
    log.warning("fault point %s reached: SIGKILL", point)
    for handler in logging.getLogger().handlers:
        handler.flush()
    for pid in _together:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _allocate(point: str) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        raise MemoryError(f"fault point {point}: no memory ceiling here, not allocating")
    log.warning("fault point %s reached: allocating until the memory ceiling", point)
    pieces = []
    while True:  # ends with MemoryError at the ceiling; calloc'd pages, never touched
        pieces.append(bytes(64 << 20))


def _hang(point: str) -> None:
    log.warning("fault point %s reached: hanging", point)
    while True:
        time.sleep(3600)


def _pause(point: str) -> None:
    log.warning("fault point %s reached: pausing %.0f s", point, PAUSE_SECONDS)
    time.sleep(PAUSE_SECONDS)


def _hold(point: str) -> None:
    release = os.environ.get(RELEASE_ENV, "")
    if not release:
        raise ConfigError(f"fault point {point}: hold needs {RELEASE_ENV}=<file> to wait for")
    log.warning("fault point %s reached: holding until %s exists", point, release)
    deadline = time.monotonic() + HOLD_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


ACTIONS: dict[str, Callable[[str], None]] = {
    "kill": _kill,
    "allocate": _allocate,
    "hang": _hang,
    "pause": _pause,
    "hold": _hold,
}

_armed: list[tuple[str, str]] = []  # (point, action); point may be "<point>:<subject>"


def parse(value: str) -> list[tuple[str, str]]:
    """``"point"``, ``"point=action"`` or several of them separated by commas ->
    [(point, action), ...]; ``""`` -> []. Raises ConfigError."""
    armed = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        point, _, action = item.partition("=")
        action = action or "kill"
        if point.partition(":")[0] not in POINTS:
            raise ConfigError(
                f"LAKEHOOK_FAULT_POINT={value!r}: unknown point {point!r}; "
                f"known: {', '.join(POINTS)}"
            )
        if action not in ACTIONS:
            raise ConfigError(
                f"LAKEHOOK_FAULT_POINT={value!r}: unknown action {action!r}; "
                f"known: {', '.join(ACTIONS)}"
            )
        armed.append((point, action))
    return armed


def validate(value: str, testing: bool) -> None:
    """Refuse a fault point outside tests, and unknown points or actions."""
    if value and not testing:
        raise ConfigError(
            f"LAKEHOOK_FAULT_POINT={value!r} is for tests only: set LAKEHOOK_TESTING=1 "
            "to use it, or unset it"
        )
    parse(value)


def arm(value: str, testing: bool) -> None:
    """Arm the points named by the setting (``""`` disarms)."""
    global _armed
    validate(value, testing)
    _armed = parse(value)
    for point, action in _armed:
        log.warning("fault point armed: %s (%s)", point, action)


def reached(point: str, subject: str = "") -> None:
    """Run the armed action if ``point`` is an armed point (and ``subject`` its subject, when
    one is named); otherwise nothing."""
    if point not in POINTS:  # a typo in a caller is a bug, not a silent no-op
        raise ValueError(f"unknown fault point {point!r}")
    for armed, action in _armed:
        name, _, only = armed.partition(":")
        if name == point and (not only or only == subject):
            ACTIONS[action](f"{point}:{subject}" if subject else point)
