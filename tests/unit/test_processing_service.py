"""Processing through ``BranchService`` on the hand-written fakes: plan, convert, write-back."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakehook.settings import Settings
from pipeline.model import ORIGIN_KEY, SOURCE_COMMIT_KEY, TableManifest, TableRun
from pipeline.naming import table_location
from pipeline.processing.plan import BranchPlan, TableTask
from pipeline.processing.table import local_dir, process_table
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore

CONTENTS = b"""dataset,column,type,label
dm,STUDYID,string,Study Identifier
dm,USUBJID,string,Unique Subject Identifier
dm,SITEID,string,Study Site Identifier
dm,AGE,integer,Age
sv,STUDYID,string,Study Identifier
sv,USUBJID,string,Unique Subject Identifier
sv,VISITNUM,double,Visit Number
sv,SVSTDTC,date,Start Date
"""
DM = (
    b"STUDYID,USUBJID,SITEID,AGE\nCDISCPILOT01,01-701-1015,701,63\nCDISCPILOT01,01-701-1023,701,x\n"
)
SV = (
    b"STUDYID,USUBJID,VISITNUM,SVSTDTC\n"
    b"CDISCPILOT01,01-701-1015,1,2014-01-02\n"
    b"CDISCPILOT01,01-701-1015,1.2000000000000002,2014-01-16\n"
)
REPO = "study"


@pytest.fixture
def lakefs() -> FakeLakeFS:
    fake = FakeLakeFS()
    fake.create_repository(REPO, "local://study")
    return fake


@pytest.fixture
def service(lakefs: FakeLakeFS, tmp_path: Path) -> BranchService:
    metastore = FakeMetastore()
    for branch in ("main", "v2"):
        metastore.set_rows(table_location(REPO, branch, "dm"), 2)
        metastore.set_rows(table_location(REPO, branch, "sv"), 2)
    return BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=MemoryStatusStore(),
        workdir=tmp_path / "work",
    )


def deliver(lakefs: FakeLakeFS, branch: str, files: dict[str, bytes], message: str = "d") -> str:
    for path, data in files.items():
        lakefs.upload_object(REPO, branch, path, data)
    return lakefs.commit(REPO, branch, message, {}).id


def read_table(lakefs: FakeLakeFS, ref: str, table: str) -> list[dict[str, object]]:
    manifest = TableManifest.from_json(
        lakefs.read_object(REPO, ref, f"_lakehook/manifests/{table}.json")
    )
    rows: list[dict[str, object]] = []
    for path in manifest.files:
        rows += pq.read_table(io.BytesIO(lakefs.read_object(REPO, ref, path))).to_pylist()
    return rows


def test_commit_is_processed_keyed_and_committed_back_once(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    user = deliver(
        lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV}
    )
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert status.source_commit == user
    head = lakefs.branch_head(REPO, "main")
    meta = lakefs.get_commit(REPO, head).metadata
    assert meta[ORIGIN_KEY] == "lakehook"
    assert meta[SOURCE_COMMIT_KEY] == user
    dm = read_table(lakefs, "main", "dm")
    assert dm[0]["patient_sk"] == -882300288707882733
    assert dm[0]["site_sk"] == 4093393086466076036
    assert dm[1]["age"] is None
    assert {t.table: t.invalid_values["age"] for t in status.tables if t.table == "dm"} == {"dm": 1}
    sv = read_table(lakefs, "main", "sv")
    assert sv[1]["visit_sk"] == 1535226055626573821
    # no working branch left behind
    assert [b.name for b in lakefs.list_branches(REPO)] == ["main"]

    again = service.sync_branch(REPO, "main")
    assert again.state == "synced"
    assert lakefs.branch_head(REPO, "main") == head  # nothing new to commit


def test_second_delivery_rewrites_only_what_changed(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV})
    service.sync_branch(REPO, "main")
    dm_before = lakefs.stat_object(REPO, "main", "_lakehook/manifests/dm.json")
    lakefs.create_branch(REPO, "v2", "main")
    second = deliver(lakefs, "v2", {"raw/SV.csv": SV + b"CDISCPILOT01,01-701-1023,1,2014-07-02\n"})
    service.metastore.set_rows(table_location(REPO, "v2", "sv"), 3)  # type: ignore[attr-defined]
    status = service.sync_branch(REPO, "v2")
    assert status.state == "synced", status.errors
    assert status.source_commit == second
    assert lakefs.stat_object(REPO, "v2", "_lakehook/manifests/dm.json") == dm_before
    sv = {t.table: t for t in status.tables}["sv"]
    assert sv.rows == 3
    # keys are the same on both branches
    main_keys = {r["patient_sk"] for r in read_table(lakefs, "main", "sv")}
    assert main_keys <= {r["patient_sk"] for r in read_table(lakefs, "v2", "sv")}


def test_dirty_branch_waits_pending_then_merges(lakefs: FakeLakeFS, service: BranchService) -> None:
    user = deliver(
        lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV}
    )
    lakefs.upload_object(REPO, "main", "notes/wip.txt", b"uncommitted work")
    status = service.sync_branch(REPO, "main")
    assert status.state == "pending"
    assert "uncommitted" in status.reason
    assert lakefs.branch_head(REPO, "main") == user
    assert lakefs.stat_object(REPO, "main", "notes/wip.txt") is not None
    lakefs.delete_object(REPO, "main", "notes/wip.txt")  # the user cleans up
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced"
    head = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "main"))
    assert head.metadata[SOURCE_COMMIT_KEY] == user
    assert "notes/wip.txt" not in {o.path for o in lakefs.list_objects(REPO, "main")}
    assert [b.name for b in lakefs.list_branches(REPO)] == ["main"]


def test_bad_dataset_fails_alone_and_removed_dataset_removes_table(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(
        lakefs,
        "main",
        {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM + b"A,B\n", "raw/SV.csv": SV},
    )
    status = service.sync_branch(REPO, "main")
    assert status.state == "failed"
    error = next(e for e in status.errors if e.get("file") == "raw/DM.csv")
    assert error["line"] == 4
    assert {t.table for t in status.tables} == {"sv"}

    lakefs.delete_object(REPO, "main", "raw/SV.csv")
    lakefs.upload_object(REPO, "main", "raw/DM.csv", DM)
    lakefs.commit(REPO, "main", "fix dm, drop sv", {})
    status = service.sync_branch(REPO, "main")
    assert {t.table for t in status.tables} == {"dm"}
    assert lakefs.list_objects(REPO, "main", "tables/sv/") == []
    # contents still declare sv: a warning, not an error (contract §5 v1.1)
    assert status.state == "synced"
    assert not status.errors
    assert any("'sv'" in w and "does not exist" in w for w in status.warnings)


def test_unknown_type_fails_that_dataset(lakefs: FakeLakeFS, service: BranchService) -> None:
    contents = CONTENTS.replace(b"dm,AGE,integer", b"dm,AGE,int8")
    deliver(lakefs, "main", {"raw/contents.csv": contents, "raw/DM.csv": DM, "raw/SV.csv": SV})
    status = service.sync_branch(REPO, "main")
    error = next(e for e in status.errors if e.get("table") == "dm")
    assert error["line"] == 5
    assert "int8" in error["message"]
    assert {t.table for t in status.tables} == {"sv"}


class StagingEngine:
    """Stands in for the Trino engine: writes the outputs onto the working branch itself."""

    def __init__(self, lakefs: FakeLakeFS) -> None:
        self.lakefs = lakefs
        self.tables: list[str] = []

    def prepare(self, plan: BranchPlan) -> None:
        self.lakefs.create_branch(plan.repository, plan.working_branch, plan.head_commit)

    def process_table(
        self, plan: BranchPlan, task: TableTask, scratch: Path, max_columns: int
    ) -> TableRun:
        run = process_table(self.lakefs, plan, task, scratch, max_columns)
        assert run.manifest is not None
        for path in run.manifest.files:
            data = (local_dir(scratch, task.table) / Path(path).name).read_bytes()
            self.lakefs.upload_object(plan.repository, plan.working_branch, path, data)
        shutil.rmtree(local_dir(scratch, task.table))  # nothing left to upload from
        self.tables.append(task.table)
        manifest = replace(run.manifest, engine="trino")
        return replace(run, manifest=manifest, in_place=True)


def test_files_already_on_the_working_branch_are_committed_where_they_are(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    engine = StagingEngine(lakefs)
    service.trino_engine = engine  # type: ignore[assignment]
    service.settings = Settings.load({"LAKEHOOK_TRINO_ENGINE_THRESHOLD": str(len(DM) + 1)})
    service.metastore.set_rows(table_location(REPO, "main", "sv"), 12)  # type: ignore[attr-defined]
    deliver(lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/dm.csv": DM, "raw/sv.csv": SV})
    sv_big = SV + b"CDISCPILOT01,01-701-1015,2,2014-02-01\n" * 10
    deliver(lakefs, "main", {"raw/sv.csv": sv_big})
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert engine.tables == ["sv"]  # auto: only the CSV above the threshold went to Trino
    assert {t.table: t.engine for t in status.tables} == {"dm": "pyarrow", "sv": "trino"}
    assert len(read_table(lakefs, "main", "sv")) == 12
    assert status.to_dict()["tables"][1]["engine"] == "trino"
    assert not [b for b in lakefs.list_branches(REPO) if b.name.startswith("_lakehook")]


def test_engine_trino_in_lakehook_yaml_sends_every_dataset_to_trino(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    engine = StagingEngine(lakefs)
    service.trino_engine = engine  # type: ignore[assignment]
    files = {"raw/contents.csv": CONTENTS, "raw/dm.csv": DM, "raw/sv.csv": SV}
    deliver(lakefs, "main", {**files, "lakehook.yaml": b"engine: trino\n"})
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert sorted(engine.tables) == ["dm", "sv"]  # concurrent queries: any order
    assert [t.engine for t in status.tables] == ["trino", "trino"]


def test_a_sync_records_the_seconds_of_every_step(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    from pipeline import steps

    deliver(lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV})
    with steps.recording() as times:
        assert service.sync_branch(REPO, "main").state == "synced"
    assert set(times.seconds) == set(steps.STEPS)
    assert all(s >= 0 for s in times.seconds.values())


def test_a_delivery_changing_one_dataset_probes_only_its_table(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    """Each probe is an engine statement (~0.3-0.5 Trino CPU s): a delivery that changes one
    dataset of many must not probe them all again; a table whose probe failed is probed on
    every sync until it passes."""
    metastore = service.metastore
    assert isinstance(metastore, FakeMetastore)

    def probes() -> list[str]:
        found = sorted(c[2] for c in metastore.calls if c[0] == "probe")
        metastore.calls.clear()
        return found

    deliver(lakefs, "main", {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/SV.csv": SV})
    first = service.sync_branch(REPO, "main")
    assert first.state == "synced", first.errors
    assert probes() == ["dm", "sv"]
    assert all(t.probed for t in first.tables)

    deliver(lakefs, "main", {"raw/SV.csv": SV + b"CDISCPILOT01,01-701-1023,1,2014-07-02\n"})
    metastore.set_rows(table_location(REPO, "main", "sv"), 2)  # the engine disagrees: 2 of 3
    second = service.sync_branch(REPO, "main")
    assert second.state == "failed"
    assert probes() == ["sv"]  # dm: same definition and files as probed before
    assert {t.table: bool(t.probed) for t in second.tables} == {"dm": True, "sv": False}

    lakefs.upload_object(REPO, "main", "raw/notes.txt", b"not a dataset")
    lakefs.commit(REPO, "main", "notes", {})
    third = service.sync_branch(REPO, "main")
    assert probes() == ["sv"]  # a failed probe is never remembered as passed
    assert third.state == "failed"
    metastore.set_rows(table_location(REPO, "main", "sv"), 3)
    lakefs.upload_object(REPO, "main", "raw/notes.txt", b"still not a dataset")
    lakefs.commit(REPO, "main", "notes", {})
    fourth = service.sync_branch(REPO, "main")
    assert (fourth.state, probes()) == ("synced", ["sv"])
