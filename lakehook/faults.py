"""Fault points for tests: make this process fail at a named step, on purpose.

``LAKEHOOK_FAULT_POINT=<point>`` (or ``<point>=<action>``) arms one point; code that reaches it
calls ``reached("<point>")``, which runs the action there: by default ``kill``, a SIGKILL of the
own process (no cleanup, no flush: the harshest crash there is). It is off by default and
refused unless ``LAKEHOOK_TESTING=1`` (``validate``), so a production server never carries it.

Points are declared in ``POINTS`` and actions in ``ACTIONS``; another test hook (say an
``allocate`` or ``hang`` action, or a ``job-start`` point) is one more entry in each, with no
change to the callers.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from lakehook.errors import ConfigError

log = logging.getLogger(__name__)

# where the write-back (pipeline/service.py, pipeline/processing/writeback.py) can be stopped
POINTS: dict[str, str] = {
    "after-upload": "outputs uploaded to the working branch, not committed",
    "after-working-commit": "outputs committed on the working branch, not merged",
    "after-merge": "working branch merged into the user's branch, not deleted",
    "after-working-branch-delete": "working branch deleted, metastore not synced",
    "after-metastore-change": "first metastore change made, the rest not",
    "after-verify": "metastore verified, status not recorded",
    "after-lineage-start": "lineage START sent, the table not processed",
}


def _kill(point: str) -> None:
    log.warning("fault point %s reached: SIGKILL", point)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


ACTIONS: dict[str, Callable[[str], None]] = {"kill": _kill}

_armed: tuple[str, str] | None = None  # (point, action)


def parse(value: str) -> tuple[str, str] | None:
    """``"point"`` or ``"point=action"`` -> (point, action); ``""`` -> None. Raises ConfigError."""
    if not value:
        return None
    point, _, action = value.partition("=")
    action = action or "kill"
    if point not in POINTS:
        raise ConfigError(
            f"LAKEHOOK_FAULT_POINT={value!r}: unknown point {point!r}; known: {', '.join(POINTS)}"
        )
    if action not in ACTIONS:
        raise ConfigError(
            f"LAKEHOOK_FAULT_POINT={value!r}: unknown action {action!r}; "
            f"known: {', '.join(ACTIONS)}"
        )
    return point, action


def validate(value: str, testing: bool) -> None:
    """Refuse a fault point outside tests, and unknown points or actions."""
    if value and not testing:
        raise ConfigError(
            f"LAKEHOOK_FAULT_POINT={value!r} is for tests only: set LAKEHOOK_TESTING=1 "
            "to use it, or unset it"
        )
    parse(value)


def arm(value: str, testing: bool) -> None:
    """Arm the point named by the setting (``""`` disarms)."""
    global _armed
    validate(value, testing)
    _armed = parse(value)
    if _armed is not None:
        log.warning("fault point armed: %s (%s)", _armed[0], _armed[1])


def reached(point: str) -> None:
    """Run the armed action if ``point`` is the armed point; otherwise nothing."""
    if point not in POINTS:  # a typo in a caller is a bug, not a silent no-op
        raise ValueError(f"unknown fault point {point!r}")
    armed = _armed
    if armed is not None and armed[0] == point:
        ACTIONS[armed[1]](point)
