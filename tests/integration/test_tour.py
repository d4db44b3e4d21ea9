"""The README's tour, verbatim, in bash on the real stack.

The commands are read from the first ``sh`` block under "## A short tour" of ``README.md`` and
run in order in one bash process, each one's exit code recorded. Three things differ from a
user's shell, and only these: the repository is a unique name instead of ``study`` (the schema
name follows), the server listens on a free port with its own state directory (an ``export``
right after the ``eval`` line), and the first two commands (``make install``, ``lakehook stack
up``) are not run: the test runs inside that environment already, and ``stack up`` on the
shared stack must not restart components other tests have stopped on purpose.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lakehook.settings import Settings
from tests.integration.conftest import free_port, unique_name

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
ALREADY_DONE = ("make install", ".venv/bin/lakehook stack up")


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A short tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_tour_has_the_commands_a_user_needs() -> None:
    commands = tour_commands()
    assert commands[0].startswith(ALREADY_DONE[0])
    assert commands[1].startswith(ALREADY_DONE[1])
    assert any(c.startswith('eval "$(.venv/bin/lakehook stack env)"') for c in commands)
    assert commands[-1].startswith("trino --execute")


def test_readme_tour_runs_verbatim(stack_settings: Settings, tmp_path: Path) -> None:
    repo = unique_name("tour")
    schema = repo.replace("-", "_") + "_main"
    venv_bin = str(Path(sys.executable).parent)
    port = free_port()
    script = ["set -u"]
    commands: list[str] = []
    for command in tour_commands():
        if command.startswith(ALREADY_DONE):
            continue
        line = command.replace(".venv/bin/", f"{venv_bin}/")
        line = re.sub(r"\b(lakefs|local)://study\b", rf"\1://{repo}", line)
        line = re.sub(r"--repo study\b", f"--repo {repo}", line)
        line = line.replace("hive.study_main.", f"hive.{schema}.")
        assert not re.search(r"(?<![\w-])study(?![\w-])", line.split("#", 1)[0]), line
        index = len(commands)
        commands.append(line)
        script.append(line)
        script.append(f'echo "__RC__ {index} $?" >&2')
        if line.startswith("eval "):
            script.append(
                f"export LAKEHOOK_LISTEN=127.0.0.1:{port} "
                f"LAKEHOOK_STATE_DIR={tmp_path / 'state'} LAKEHOOK_RECONCILE_INTERVAL=5"
            )
        if line.rstrip().split("#", 1)[0].rstrip().endswith("&"):
            script.append(f"echo $! > {tmp_path / 'serve.pid'}")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LAKEHOOK_") or k == "LAKEHOOK_STACK_DIR"
    }
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # lakehook, lakectl, trino come from the tour
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        pid_file = tmp_path / "serve.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    codes = {int(m[1]): int(m[2]) for m in re.finditer(r"__RC__ (\d+) (\d+)", err)}
    report = f"stdout:\n{out}\nstderr:\n{err}"
    for index, command in enumerate(commands):
        assert codes.get(index) == 0, f"`{command}` exited {codes.get(index)}\n{report}"
    counts = re.findall(r'^"(\d+)"$', out, re.MULTILINE)
    assert counts, report
    assert int(counts[-1]) == 306, report  # DM of the CDISC pilot: 306 subjects
    assert "SYNCED" in out, report
