"""A write-back killed at any step, then retried, ends as an undisturbed run would (issue 12).

The kill is simulated in-process: the armed fault point raises ``Killed`` (a BaseException,
like the SIGKILL it stands for it skips every ``except Exception``). The retry runs on the
same fakes, as a restarted server runs on the same lakeFS and metastore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehook import faults
from lakehook.errors import TerminalError
from lakehook.settings import Settings
from pipeline.lineage.delivery import JournalSink
from pipeline.lineage.journal import Journal
from pipeline.lineage.naming import table_run_id
from pipeline.lineage.recorder import LineageRecorder
from pipeline.model import ORIGIN_KEY, SOURCE_COMMIT_KEY
from pipeline.naming import table_location
from pipeline.processing.plan import WORKING_PREFIX
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore
from tests.unit.test_processing_service import CONTENTS, DM, REPO, SV, deliver, read_table


class Killed(BaseException):
    """The process died at a fault point."""


def _raise(point: str) -> None:
    raise Killed(point)


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(faults.ACTIONS, "raise", _raise)
    yield
    faults.arm("", testing=True)


def build(
    lakefs: FakeLakeFS, metastore: FakeMetastore, store: MemoryStatusStore, tmp: Path
) -> BranchService:
    recorder = LineageRecorder(JournalSink(Journal(tmp / "lineage" / "events.jsonl")))
    return BranchService(
        settings=Settings.load({}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=store,
        recorder=recorder,
        workdir=tmp / "work",
    )


def lakehook_merges(lakefs: FakeLakeFS, branch: str) -> list[str]:
    return [
        c.metadata[SOURCE_COMMIT_KEY]
        for c in lakefs.log(REPO, branch, limit=1000)
        if c.metadata.get(ORIGIN_KEY) == "lakehook" and len(c.parents) == 2
    ]


def journal(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fresh() -> tuple[FakeLakeFS, FakeMetastore, MemoryStatusStore]:
    lakefs = FakeLakeFS()
    lakefs.create_repository(REPO, "local://study")
    metastore = FakeMetastore()
    metastore.set_rows(table_location(REPO, "main", "dm"), 2)
    metastore.set_rows(table_location(REPO, "main", "sv"), 2)
    return lakefs, metastore, MemoryStatusStore()


FILES = {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV}


@pytest.mark.parametrize("point", list(faults.POINTS))
def test_killed_at_each_step_then_retried_ends_synced_with_one_commit(
    point: str, armed: None, tmp_path: Path
) -> None:
    # the undisturbed run, for comparison
    calm_lakefs, calm_ms, calm_store = fresh()
    deliver(calm_lakefs, "main", FILES)
    calm = build(calm_lakefs, calm_ms, calm_store, tmp_path / "calm").sync_branch(REPO, "main")
    assert calm.state == "synced"

    lakefs, metastore, store = fresh()
    user = deliver(lakefs, "main", FILES)
    faults.arm(f"{point}=raise", testing=True)
    with pytest.raises(Killed):
        build(lakefs, metastore, store, tmp_path).sync_branch(REPO, "main")
    faults.arm("", testing=True)

    status = build(lakefs, metastore, store, tmp_path).sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert status.source_commit == user
    assert lakehook_merges(lakefs, "main") == [user]
    assert [b.name for b in lakefs.list_branches(REPO) if b.name.startswith(WORKING_PREFIX)] == []
    for table in ("dm", "sv"):
        assert read_table(lakefs, "main", table) == read_table(calm_lakefs, "main", table)
    assert sorted(metastore.schemas[status.schema]) == sorted(calm_ms.schemas[calm.schema])
    # one COMPLETE per table run, under the run id the interrupted job started
    events = journal(tmp_path)
    for table in ("dm", "sv"):
        run_id = table_run_id(REPO, user, table)
        ends = [e["eventType"] for e in events if e["run"]["runId"] == run_id]  # type: ignore[index]
        assert ends.count("COMPLETE") == 1, (table, ends)
        assert "START" in ends


def test_retry_after_the_merge_is_not_failed_by_no_changes(armed: None, tmp_path: Path) -> None:
    """Issue 12's reproduction: killed after the merge, before the working branch was deleted;
    the retry found the working branch, merged again and lakeFS said "no changes"."""
    lakefs, metastore, store = fresh()
    user = deliver(lakefs, "main", FILES)
    faults.arm("after-merge=raise", testing=True)
    with pytest.raises(Killed):
        build(lakefs, metastore, store, tmp_path).sync_branch(REPO, "main")
    faults.arm("", testing=True)
    work = [b.name for b in lakefs.list_branches(REPO) if b.name.startswith(WORKING_PREFIX)]
    assert len(work) == 1  # the state the retry must cope with
    with pytest.raises(TerminalError, match="no changes"):
        lakefs.merge(REPO, work[0], "main", "again", {})  # what the old retry did

    status = build(lakefs, metastore, store, tmp_path).sync_branch(REPO, "main")
    assert status.state == "synced", status.reason
    assert lakehook_merges(lakefs, "main") == [user]


def test_fault_points_are_refused_outside_tests() -> None:
    from lakehook.errors import ConfigError

    with pytest.raises(ConfigError, match="LAKEHOOK_TESTING=1"):
        Settings.load({"LAKEHOOK_FAULT_POINT": "after-merge"})
    with pytest.raises(ConfigError, match="unknown point"):
        Settings.load({"LAKEHOOK_FAULT_POINT": "after-lunch", "LAKEHOOK_TESTING": "1"})
    settings = Settings.load({"LAKEHOOK_FAULT_POINT": "after-merge", "LAKEHOOK_TESTING": "1"})
    assert settings.fault_point == "after-merge"
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.reached("after-lunch")


def test_hold_waits_for_its_release_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    release = tmp_path / "release"
    monkeypatch.setenv(faults.RELEASE_ENV, str(release))
    faults.arm("after-verify=hold", testing=True)
    try:
        held = threading.Thread(target=faults.reached, args=("after-verify",))
        held.start()
        held.join(0.3)
        assert held.is_alive()  # still holding: nothing released it
        release.touch()
        held.join(5)
        assert not held.is_alive()
    finally:
        faults.arm("", testing=True)


def test_hold_without_a_release_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lakehook.errors import ConfigError

    monkeypatch.delenv(faults.RELEASE_ENV, raising=False)
    faults.arm("after-verify=hold", testing=True)
    try:
        with pytest.raises(ConfigError, match=faults.RELEASE_ENV):
            faults.reached("after-verify")
    finally:
        faults.arm("", testing=True)
