"""The status's drift on the fakes (contract §9 v1.1): measured against the ref's previous synced
state whatever changed it (processing, a merge into it, lakehook.yaml), ``removed_tables``, key
config changes, and the key type-family warning (contract §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehook.settings import Settings
from pipeline import drift
from pipeline.model import OutputColumn, RefStatus, TableManifest
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore

REPO = "study"
CONTENTS_V1 = b"""dataset,column,type,label
dm,STUDYID,string,Study Identifier
dm,USUBJID,string,Unique Subject Identifier
dm,AGE,integer,Age
sv,STUDYID,string,Study Identifier
sv,USUBJID,string,Unique Subject Identifier
sv,VISITNUM,double,Visit Number
sv,SVSEQ,integer,Sequence Number
"""
DM_V1 = b"STUDYID,USUBJID,AGE\nCDISCPILOT01,01-701-1015,63\nCDISCPILOT01,01-701-1023,64\n"
SV_V1 = b"STUDYID,USUBJID,VISITNUM,SVSEQ\nCDISCPILOT01,01-701-1015,1,1\n"
# v2: a new dataset (ae), a new column (dm.SEX), a widening (sv.SVSEQ integer -> double)
CONTENTS_V2 = (
    CONTENTS_V1.replace(b"sv,SVSEQ,integer", b"sv,SVSEQ,double")
    + b"dm,SEX,string,Sex\nae,STUDYID,string,Study Identifier\n"
    + b"ae,USUBJID,string,Unique Subject Identifier\nae,AETERM,string,Reported Term\n"
)
DM_V2 = b"STUDYID,USUBJID,AGE,SEX\nCDISCPILOT01,01-701-1015,63,F\nCDISCPILOT01,01-701-1023,64,M\n"
AE_V2 = b"STUDYID,USUBJID,AETERM\nCDISCPILOT01,01-701-1015,HEADACHE\n"
V1 = {"raw/contents.csv": CONTENTS_V1, "raw/DM.csv": DM_V1, "raw/SV.csv": SV_V1}
V2 = {"raw/contents.csv": CONTENTS_V2, "raw/DM.csv": DM_V2, "raw/AE.csv": AE_V2}


class CountingMetastore(FakeMetastore):
    """A fake metastore whose probe answers the row count the table's manifest records."""

    def __init__(self, lakefs: FakeLakeFS) -> None:
        super().__init__()
        self.lakefs = lakefs

    def probe(self, schema: str, table: str) -> int:
        found = self._schema(schema).get(table.lower())
        if found is None:
            return super().probe(schema, table)
        branch = found.location.split("/")[3]
        manifest = self.lakefs.read_object(REPO, branch, f"_lakehook/manifests/{table}.json")
        return TableManifest.from_json(manifest).rows


@pytest.fixture
def lakefs() -> FakeLakeFS:
    fake = FakeLakeFS()
    fake.create_repository(REPO, "local://study")
    return fake


@pytest.fixture
def service(lakefs: FakeLakeFS, tmp_path: Path) -> BranchService:
    return BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs=lakefs,
        metastore=CountingMetastore(lakefs),
        store=MemoryStatusStore(),
        workdir=tmp_path / "work",
    )


def deliver(lakefs: FakeLakeFS, branch: str, files: dict[str, bytes]) -> str:
    for path, data in files.items():
        lakefs.upload_object(REPO, branch, path, data)
    return lakefs.commit(REPO, branch, "delivery", {}).id


def classes(status: RefStatus) -> dict[str, str]:
    return {t.table: t.drift.drift_class for t in status.tables}


def changes(status: RefStatus, table: str) -> set[tuple[str | None, str, str | None, str | None]]:
    found = next(t for t in status.tables if t.table == table)
    return {(c.column, c.change, c.from_, c.to) for c in found.drift.changes}


def synced(service: BranchService, branch: str) -> RefStatus:
    status = service.sync_branch(REPO, branch)
    assert status.state == "synced", status.errors
    return status


def test_first_delivery_is_dataset_added_and_a_resync_keeps_it(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", V1)
    first = synced(service, "main")
    assert classes(first) == {"dm": "ADDITIVE", "sv": "ADDITIVE"}
    assert changes(first, "dm") == {(None, "dataset added", None, "DM")}
    again = synced(service, "main")  # a replayed event or the reconciler: nothing changed
    assert classes(again) == classes(first)
    assert again.drift_base == first.drift_base


def test_new_branch_shows_none(lakefs: FakeLakeFS, service: BranchService) -> None:
    deliver(lakefs, "main", V1)
    synced(service, "main")
    lakefs.create_branch(REPO, "v2", "main")
    status = service.create_branch(REPO, "v2", "main")
    assert status.state == "synced", status.errors
    assert classes(status) == {"dm": "NONE", "sv": "NONE"}
    assert status.removed_tables == ()


def test_merge_shows_what_it_brought_and_stays_until_the_next_change(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", V1)
    synced(service, "main")
    lakefs.create_branch(REPO, "v2", "main")
    service.create_branch(REPO, "v2", "main")
    deliver(lakefs, "v2", V2)
    branch = synced(service, "v2")
    assert classes(branch) == {"ae": "ADDITIVE", "dm": "ADDITIVE", "sv": "WIDENING"}

    lakefs.merge(REPO, "v2", "main", "merge v2", {})
    merged = synced(service, "main")
    assert classes(merged) == {"ae": "ADDITIVE", "dm": "ADDITIVE", "sv": "WIDENING"}
    assert changes(merged, "ae") == {(None, "dataset added", None, "AE")}
    assert ("sex", "column added", None, "varchar") in changes(merged, "dm")
    assert changes(merged, "sv") == {("svseq", "type changed", "integer", "double")}

    # re-syncs and a commit that changes no input keep the drift of the newest change
    assert classes(synced(service, "main")) == classes(merged)
    deliver(lakefs, "main", {"docs/README.txt": b"notes"})
    before = synced(service, "main")
    assert classes(before) == classes(merged)
    assert before.drift_base == merged.drift_base

    # the next change is measured against the synced state before it: the merged one
    deliver(lakefs, "main", {"raw/AE.csv": AE_V2 + b"CDISCPILOT01,01-701-1023,NAUSEA\n"})
    later = synced(service, "main")
    assert classes(later) == {"ae": "NONE", "dm": "NONE", "sv": "NONE"}
    assert later.drift_base == before.last_synced_commit == before.head_commit


def test_removed_dataset_is_listed_in_removed_tables(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", V1)
    synced(service, "main")
    lakefs.delete_object(REPO, "main", "raw/SV.csv")
    contents = b"\n".join(line for line in CONTENTS_V1.split(b"\n") if not line.startswith(b"sv"))
    deliver(lakefs, "main", {"raw/contents.csv": contents})
    status = synced(service, "main")
    assert {t.table for t in status.tables} == {"dm"}
    assert [r.table for r in status.removed_tables] == ["sv"]
    removed = status.removed_tables[0].to_dict()
    assert removed["drift"]["class"] == "BREAKING"
    assert removed["drift"]["changes"][0]["change"] == "dataset removed"
    assert status.to_dict()["removed_tables"] == [removed]
    # survives the status store's JSON round trip, and a re-sync
    assert RefStatus.from_dict(status.to_dict()).removed_tables == status.removed_tables
    assert synced(service, "main").removed_tables == status.removed_tables


def test_key_config_change_is_key_affecting_for_tables_with_that_key(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", V1)
    synced(service, "main")
    config = b"keys:\n  patient: [USUBJID]\n  visit: [STUDYID, USUBJID, VISITNUM]\n"
    deliver(lakefs, "main", {"lakehook.yaml": config})
    status = synced(service, "main")
    assert classes(status) == {"dm": "KEY_AFFECTING", "sv": "KEY_AFFECTING"}
    assert ("patient_sk", "key config changed", "STUDYID,USUBJID", "USUBJID") in changes(
        status, "dm"
    )
    assert not any(c[0] == "visit_sk" for c in changes(status, "sv"))  # visit did not change
    assert classes(synced(service, "main")) == classes(status)  # and it stays


def test_failed_change_then_fix_is_measured_against_the_last_synced_state(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", V1)
    first = synced(service, "main")
    deliver(lakefs, "main", {"raw/DM.csv": DM_V1 + b"broken,row\n"})
    failed = service.sync_branch(REPO, "main")
    assert failed.state == "failed"
    assert failed.last_synced_commit == first.head_commit
    deliver(lakefs, "main", {"raw/DM.csv": DM_V2, "raw/contents.csv": CONTENTS_V2})
    lakefs.upload_object(REPO, "main", "raw/AE.csv", AE_V2)
    lakefs.commit(REPO, "main", "ae", {})
    fixed = synced(service, "main")
    assert fixed.drift_base == first.head_commit
    assert classes(fixed) == {"ae": "ADDITIVE", "dm": "ADDITIVE", "sv": "WIDENING"}


def test_key_type_families_differ_warns_once_naming_the_datasets(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    mh = b"STUDYID,USUBJID,VISITNUM\nCDISCPILOT01,01-701-1015,1\n"  # VISITNUM undeclared: text
    deliver(lakefs, "main", {**V1, "raw/MH.csv": mh})
    status = synced(service, "main")
    visit = [w for w in status.warnings if w.startswith("key visit:")]
    assert len(visit) == 1, status.warnings
    assert "VISITNUM numeric in SV" in visit[0]
    assert "VISITNUM text in MH" in visit[0]
    assert not any(w.startswith("key patient:") for w in status.warnings)


# ---- the pure rules ------------------------------------------------------------------------


def manifest(
    table: str, columns: dict[str, str], keys: dict[str, tuple[str, ...]], fingerprint: str = "f"
) -> TableManifest:
    return TableManifest(
        table=table,
        dataset=table.upper(),
        source_commit="c",
        raw_path=f"raw/{table.upper()}.csv",
        raw_checksum="x",
        contents_path="raw/contents.csv",
        contents_fingerprint="",
        keys_fingerprint="",
        processing_version="1",
        fingerprint=fingerprint,
        files=(),
        columns=tuple(OutputColumn(n, t, source=n.upper()) for n, t in columns.items()),
        rows=1,
        keys=keys,
    )


def test_drift_base_rule() -> None:
    rule = drift.drift_base
    assert (
        rule(last_synced=None, last_synced_base=None, unchanged_since_synced=False, first_base="h")
        == "h"
    )
    assert (
        rule(last_synced="s", last_synced_base="b", unchanged_since_synced=False, first_base="h")
        == "s"
    )
    assert (
        rule(last_synced="s", last_synced_base="b", unchanged_since_synced=True, first_base="h")
        == "b"
    )
    assert (
        rule(last_synced="s", last_synced_base=None, unchanged_since_synced=True, first_base="h")
        == "s"
    )


def test_same_state_compares_fingerprints_and_keys() -> None:
    a = {"dm": manifest("dm", {"usubjid": "varchar"}, {}, "f1")}
    b = {"dm": manifest("dm", {"usubjid": "varchar"}, {}, "f2")}
    keys = {"patient": ("STUDYID", "USUBJID")}
    assert drift.same_state(a, a, keys, {"patient": ("studyid", "usubjid")})
    assert not drift.same_state(a, b, keys, keys)
    assert not drift.same_state(a, {}, keys, keys)
    assert not drift.same_state(a, a, keys, {"patient": ("USUBJID",)})


def test_drift_against_lists_removed_tables_as_breaking() -> None:
    base = {"dm": manifest("dm", {"age": "integer"}, {}), "sv": manifest("sv", {"x": "double"}, {})}
    current = {"dm": manifest("dm", {"age": "double"}, {})}
    drifts, removed = drift.drift_against(base, current, base_keys={}, keys={})
    assert drifts["dm"].drift_class == "WIDENING"
    assert list(removed) == ["sv"]
    assert removed["sv"].drift_class == "BREAKING"
    assert removed["sv"].changes[0].change == "dataset removed"


@pytest.mark.parametrize(
    ("table_type", "family"),
    [
        ("varchar", "text"),
        ("integer", "numeric"),
        ("bigint", "numeric"),
        ("double", "numeric"),
        ("decimal(10,2)", "numeric"),
        ("date", "date"),
        ("timestamp(3)", "timestamp"),
        ("boolean", "boolean"),
    ],
)
def test_type_family(table_type: str, family: str) -> None:
    assert drift.type_family(table_type) == family


def test_key_family_warning_groups_datasets_per_family_once_per_key() -> None:
    visit = ("studyid", "usubjid", "visitnum")
    manifests = {
        t: manifest(
            t,
            {"studyid": "varchar", "usubjid": "varchar", "visitnum": vtype},
            {"visit": visit, "patient": ("studyid", "usubjid")},
        )
        for t, vtype in [("sv", "double"), ("vs", "double"), ("lbch", "integer"), ("mh", "varchar")]
    }
    warnings = drift.key_family_warnings(manifests)
    assert len(warnings) == 1
    assert warnings[0].startswith("key visit: VISITNUM declared with different type families")
    assert "VISITNUM numeric in LBCH, SV, VS; VISITNUM text in MH" in warnings[0]


def test_key_family_warning_silent_when_families_agree() -> None:
    manifests = {
        t: manifest(t, {"visitnum": vtype}, {"visit": ("visitnum",)})
        for t, vtype in [("sv", "double"), ("lbch", "integer")]
    }
    assert drift.key_family_warnings(manifests) == []


def test_cli_status_prints_each_change_and_removed_tables(
    lakefs: FakeLakeFS, service: BranchService, capsys: pytest.CaptureFixture[str]
) -> None:
    import lakehook.cli  # noqa: F401  (registers server.commands without a cycle)
    from server.commands import _print_status

    deliver(lakefs, "main", V1)
    synced(service, "main")
    lakefs.delete_object(REPO, "main", "raw/SV.csv")
    deliver(lakefs, "main", {"raw/contents.csv": CONTENTS_V2, "raw/DM.csv": DM_V2})
    lakefs.upload_object(REPO, "main", "raw/AE.csv", AE_V2)
    lakefs.commit(REPO, "main", "ae", {})
    status = service.sync_branch(REPO, "main")
    _print_status(status.to_dict())
    out = capsys.readouterr().out
    assert "column sex: column added - -> varchar (ADDITIVE)" in out
    assert "table: dataset removed SV -> - (BREAKING)" in out
    assert "sv " in out.split("removed")[0].splitlines()[-1]


def test_one_key_family_warning_per_key_when_contents_also_disagree(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    contents = CONTENTS_V1 + (
        b"mh,STUDYID,string,Study Identifier\nmh,USUBJID,string,Unique Subject Identifier\n"
        b"mh,VISITNUM,string,Visit Number\n"
    )
    mh = b"STUDYID,USUBJID,VISITNUM\nCDISCPILOT01,01-701-1015,1\n"
    deliver(lakefs, "main", {**V1, "raw/contents.csv": contents, "raw/MH.csv": mh})
    status = synced(service, "main")
    visit = [w for w in status.warnings if w.startswith("key visit:")]
    assert len(visit) == 1, status.warnings
    assert "VISITNUM numeric in SV" in visit[0]
    assert "VISITNUM text in MH" in visit[0]
