"""The demo's pure parts, the tour's helpers and the stack's Trino CLI wrapper (no stack)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from lakehook import demo

if TYPE_CHECKING:
    import pytest


def test_format_table_aligns_numbers_right_and_text_left() -> None:
    lines = demo.format_table(
        ["arm", "subjects", "mean"], [["Placebo", 86, 17.6], ["High", 4, None]]
    )
    assert lines == [
        "arm      subjects   mean",
        "-------  --------  -----",
        "Placebo        86  17.60",
        "High            4   NULL",
    ]


def test_age_group_is_appended_and_every_value_kept() -> None:
    dm = b'STUDYID,USUBJID,AGE,ARM\nP1,01-1,63.0,"Placebo, low"\nP1,01-2,81.0,X\nP1,01-3,,X\n'
    out = demo.with_age_group(dm)
    rows = list(csv.reader(io.StringIO(out.decode())))
    before = list(csv.reader(io.StringIO(dm.decode())))
    assert rows[0] == [*before[0], "AGEGR1"]
    assert [r[:-1] for r in rows[1:]] == before[1:]
    assert [r[-1] for r in rows[1:]] == ["<65", ">80", ""]


def test_contents_declare_agegr1_and_the_age_type() -> None:
    contents = b"dataset,column,type,label\nDM,AGE,double,Age\nDM,AGEU,string,Age Units\n"
    changed = demo.contents_with(contents, age_type="string")
    assert demo.declared_type(changed, "dm", "age") == "string"
    assert demo.declared_type(changed, "DM", "AGEGR1") == "string"
    assert demo.declared_type(contents, "DM", "AGE") == "double"


def test_progress_reports_what_it_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "REPORT_EVERY", 0.05)
    lines: list[str] = []
    with demo.progress(lines.append, "waiting for X"):
        import time

        time.sleep(0.18)
    assert lines[0] == "   ... waiting for X"
    assert any(line.startswith("   ... still waiting for X (") for line in lines[1:])


def test_trino_cli_wrapper_runs_the_pinned_jar_with_the_stack_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehook.stack import install, paths

    monkeypatch.setenv("LAKEHOOK_STACK_DIR", str(tmp_path))
    jar = paths.trino_cli_jar()
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"jar")  # already fetched: nothing is downloaded
    wrapper = install.install_trino_cli("/opt/java")
    assert wrapper == tmp_path / "bin" / "trino"
    assert jar.name == "trino-cli-476-executable.jar"
    text = wrapper.read_text()
    assert text.startswith('#!/bin/sh\nexec "/opt/java/bin/java"')
    assert f'-jar "{jar}" "$@"' in text
    assert wrapper.stat().st_mode & 0o111


def test_stack_env_puts_lakehook_lakectl_and_trino_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from lakehook.stack import paths
    from lakehook.stack.commands import path_prefix

    monkeypatch.setenv("LAKEHOOK_STACK_DIR", str(tmp_path))
    parts = path_prefix().split(":")
    assert parts == [
        str(Path(sys.executable).parent),
        str(paths.lakectl_binary().parent),
        str(paths.bin_dir()),
    ]


def test_each_act_names_the_lineage_graph_when_marquez_is_set() -> None:
    from lakehook.settings import Settings

    assert demo._lineage_hint(Settings.load({}), "study", "dm") == ""
    hint = demo._lineage_hint(
        Settings.load({"LAKEHOOK_MARQUEZ_URL": "http://127.0.0.1:5000"}), "study", "dm"
    )
    assert hint.startswith("; lineage of dm: http")
    assert "study" in hint


def test_make_demo_uses_the_stacks_marquez_and_names_the_lineage_graph() -> None:
    from lakehook.settings import Settings

    bare = Settings.load({})  # `make demo`: no LAKEHOOK_MARQUEZ_URL in the environment
    on_stack = demo.demo_settings(bare, start_stack=True)
    assert on_stack.marquez_url == "http://127.0.0.1:5000"
    assert demo.settings_env(on_stack)["LAKEHOOK_MARQUEZ_URL"] == "http://127.0.0.1:5000"
    assert demo._lineage_hint(on_stack, "study", "dm") == (
        "; lineage of dm: http://127.0.0.1:3000/lineage/dataset/s3%3A%2F%2Fstudy/main%2Ftables%2Fdm"
    )
    assert demo.demo_settings(bare, start_stack=False) is bare


def test_the_last_lineage_url_names_the_branch_that_processed_the_table() -> None:
    from lakehook.settings import Settings

    on_stack = demo.demo_settings(Settings.load({}), start_stack=True)
    hint = demo._lineage_hint(on_stack, "study", "dm", demo.BRANCH)
    assert hint == (
        "; lineage of dm as last processed, on delivery-2: "
        "http://127.0.0.1:3000/lineage/dataset/s3%3A%2F%2Fstudy/delivery-2%2Ftables%2Fdm"
    )
