"""Background processes started by the stack: pid files, process groups, readiness polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lakehook.errors import ServiceUnavailable
from lakehook.stack import paths


def read_pid(component: str) -> int | None:
    try:
        return int(paths.pid_file(component).read_text().strip())
    except (OSError, ValueError):
        return None


def is_running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def running_pid(component: str) -> int | None:
    pid = read_pid(component)
    return pid if is_running(pid) else None


def spawn(
    component: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` in its own session, output to the component's log, pid to its pid file.

    ``user``: run as that system user (root only; PostgreSQL refuses to run as root).
    """
    log = paths.log_file(component)
    log.parent.mkdir(parents=True, exist_ok=True)
    paths.pid_file(component).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=_primary_group(user),
            extra_groups=[] if user is not None else None,
        )
    paths.pid_file(component).write_text(f"{proc.pid}\n")
    return proc.pid


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


def stop(component: str, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the component's process group with ``sig`` (then SIGKILL after ``timeout``).

    Returns:
        True when something was stopped.
    """
    pid = read_pid(component)
    stopped = False
    if is_running(pid):
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while is_running(pid):
                time.sleep(0.05)
        stopped = True
    with contextlib.suppress(FileNotFoundError):
        paths.pid_file(component).unlink()
    return stopped


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return bool(200 <= response.status < 300)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def http_body(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], component: str, timeout: float, pid: int | None = None
) -> float:
    """Poll ``check`` until true; fail naming the log when the process dies or time runs out."""
    start = time.monotonic()
    while not check():
        if pid is not None and not is_running(pid):
            raise ServiceUnavailable(
                f"{component} exited during start-up; see {paths.log_file(component)}"
            )
        if time.monotonic() - start > timeout:
            raise ServiceUnavailable(
                f"{component} not ready after {timeout:.0f}s; see {paths.log_file(component)}"
            )
        time.sleep(0.25)
    return time.monotonic() - start


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (PostgreSQL's backends, a launcher's JVM)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def memory_kib(pid: int | None) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` and its descendants, in KiB ((0, 0) when not running).

    RSS counts a page shared by several processes once per process (PostgreSQL's shared
    buffers in every backend); PSS divides it among them, so PSS adds up across components.
    """
    if pid is None:
        return 0, 0
    rss = pss = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def rss_kib(pid: int | None) -> int:
    """Resident set size of ``pid`` and its descendants, in KiB (0 when not running)."""
    return memory_kib(pid)[0]
