"""Where the local stack keeps software, configuration, data, logs and pid files."""

from __future__ import annotations

import os
from pathlib import Path


def stack_dir() -> Path:
    """``$LAKEHOOK_STACK_DIR`` or ``~/.cache/lakehook/stack``."""
    configured = os.environ.get("LAKEHOOK_STACK_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/lakehook/stack"


def dist_dir() -> Path:
    return stack_dir() / "dist"


def data_dir(component: str) -> Path:
    return stack_dir() / "data" / component


def etc_dir(component: str) -> Path:
    return stack_dir() / "etc" / component


def log_file(component: str) -> Path:
    return stack_dir() / "logs" / f"{component}.log"


def pid_file(component: str) -> Path:
    return stack_dir() / "run" / f"{component}.pid"


def lakefs_binary() -> Path:
    return dist_dir() / "lakefs" / "bin" / "lakefs"


def lakectl_binary() -> Path:
    return dist_dir() / "lakefs" / "bin" / "lakectl"


def bin_dir() -> Path:
    """Command wrappers the stack installs (``trino``); ``lakehook stack env`` puts it on PATH."""
    return stack_dir() / "bin"


def trino_cli_jar() -> Path:
    from lakehook.stack import versions

    return dist_dir() / f"trino-cli-{versions.TRINO}" / f"trino-cli-{versions.TRINO}-executable.jar"
