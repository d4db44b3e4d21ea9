"""The intake builds its lakeFS and metastore adapters on first use (``pipeline.adapters.lazy``):
importing lakefs_sdk alone costs ~2 CPU s, which every server start paid in the intake although
it only answers webhooks, health checks and statuses (measured: the intake's start 3.9 -> 1.8
CPU s, a whole server's 8.9 -> 5.9 CPU s, ready 7.3 -> 4.8 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.adapters.lazy import Lazy, warm


def test_the_intakes_context_imports_no_client_library_until_one_is_used(tmp_path: Path) -> None:
    code = f"""
import json, sys
from lakehook.settings import Settings
from server.app import build_context
settings = Settings.load({{"LAKEHOOK_STATE_DIR": {str(tmp_path)!r}}}, None)
ctx = build_context(settings, intake_only=True)
before = [m for m in ("lakefs_sdk", "pymetastore") if m in sys.modules]
ctx.lakefs.list_repositories  # first use: the adapter is built (no call is made)
print(json.dumps([before, "lakefs_sdk" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == []
    assert after is True


def test_a_lazy_adapter_is_built_once_and_then_is_the_adapter() -> None:
    built: list[int] = []

    class Adapter:
        def answer(self) -> int:
            return 42

    def build() -> Adapter:
        built.append(1)
        return Adapter()

    lazy = Lazy(build, "test")
    assert not lazy.built
    assert built == []
    assert lazy.answer() == 42
    assert lazy.answer() == 42
    assert built == [1]
    assert lazy.built


def test_warm_builds_only_the_lazy_adapters() -> None:
    built: list[str] = []

    def build() -> object:
        built.append("lazy")
        return object()

    lazy = Lazy(build, "test")
    warm(lazy, object(), None)
    assert built == ["lazy"]
    assert lazy.built
