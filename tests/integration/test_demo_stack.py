"""``lakehook demo``'s four acts on the real stack (a unique repository, a test server).

The pilot is limited to the datasets the acts use (dm, sv, lbch) to keep ``make test`` short;
``make demo`` runs the whole study through the same function.
"""

from __future__ import annotations

import pytest

from lakehook.demo import run_demo
from lakehook.settings import Settings
from tests.integration.conftest import RunningServer, unique_name

pytestmark = pytest.mark.stack


def test_demo_acts_gate_refuses_then_main_shows_the_merge(
    stack_settings: Settings, lakehook_server: RunningServer
) -> None:
    settings = Settings.load(lakehook_server.env)
    lines: list[str] = []
    result = run_demo(
        settings,
        unique_name("demo"),
        start_stack=False,
        datasets=["dm", "sv", "lbch"],
        echo=lines.append,
    )
    out = "\n".join(lines)
    for act in ("Act 1", "Act 2", "Act 3", "Act 4"):
        assert f"=== {act}:" in out
    # act 1: the join through the surrogate keys printed as an aligned table, three arms
    assert "arm                   subjects  visits  lab_results  mean_alt" in out
    assert "Placebo" in out
    # act 2: the branch's schema came without reprocessing
    assert "no dataset reprocessed" in out
    # act 3: the branch shows the drift per column and the gate refused, with lakehook's reason
    dm = next(t for t in result.branch_status["tables"] if t["table"] == "dm")
    assert dm["drift"]["class"] == "BREAKING"
    assert {(c["column"], c["class"]) for c in dm["drift"]["changes"]} == {
        ("age", "BREAKING"),
        ("agegr1", "ADDITIVE"),
    }
    assert "412" in result.refused
    assert "table dm: BREAKING drift into protected branch main (columns: age)" in result.refused
    # act 4: main shows what the merge brought
    final = result.main_status
    assert final["state"] == "synced"
    classes = {t["table"]: t["drift"]["class"] for t in final["tables"]}
    assert classes == {"dm": "ADDITIVE", "sv": "NONE", "lbch": "NONE"}
    changes = next(t for t in final["tables"] if t["table"] == "dm")["drift"]["changes"]
    assert [(c["column"], c["change"]) for c in changes] == [("agegr1", "column added")]
