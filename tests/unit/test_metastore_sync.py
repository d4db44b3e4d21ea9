"""The sync plan (pure) and its executor, schema copy and repair, against the fake metastore."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lakehook.errors import NotFound, ServiceUnavailable
from pipeline.metastore.repair import sync_and_verify
from pipeline.metastore.sync import (
    FINGERPRINT_PROPERTY,
    SOURCE_COMMIT_PROPERTY,
    copy_schema,
    desired_tables_from_manifests,
    plan_sync,
    sync_ref,
)
from pipeline.metastore.verify import probe_identities, verify_ref
from pipeline.model import TableManifest
from pipeline.ports import Column, TableDef
from tests.fakes.metastore import FakeMetastore, make_manifest

DM = make_manifest("dm", [("usubjid", "varchar"), ("age", "integer")], fingerprint="1" * 64)
SV = make_manifest("sv", [("usubjid", "varchar"), ("visitnum", "double")], fingerprint="2" * 64)


def desired(
    ref: str = "main", schema: str = "study_main", **manifests: TableManifest
) -> dict[str, TableDef]:
    chosen = manifests or {"dm": DM, "sv": SV}
    return desired_tables_from_manifests("study", ref, schema, chosen)


def test_desired_tables_follow_naming_and_carry_fingerprint() -> None:
    dm = desired()["dm"]
    assert dm.schema == "study_main"
    assert dm.location == "s3a://study/main/tables/dm/"
    assert dm.columns == (Column("usubjid", "varchar"), Column("age", "integer"))
    assert dm.properties == {SOURCE_COMMIT_PROPERTY: "c" * 64, FINGERPRINT_PROPERTY: "1" * 64}


def test_plan_creates_missing_tables() -> None:
    plan = plan_sync(desired(), {})
    assert [(a.kind, a.table) for a in plan] == [("create", "dm"), ("create", "sv")]


def test_plan_is_empty_when_equal() -> None:
    want = desired()
    assert plan_sync(want, dict(want)) == []


def test_plan_ignores_case_spacing_and_trailing_slash() -> None:
    want = desired()
    have = {
        name: replace(
            t,
            location=t.location.rstrip("/"),
            columns=tuple(Column(c.name.upper(), c.type.upper()) for c in t.columns),
        )
        for name, t in want.items()
    }
    assert plan_sync(want, have) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"columns": (Column("usubjid", "varchar"), Column("age", "varchar"))}, "type varchar"),
        ({"columns": (Column("usubjid", "varchar"),)}, "columns"),
        ({"location": "s3a://study/other/tables/dm/"}, "location"),
        ({"properties": {FINGERPRINT_PROPERTY: "9" * 64}}, "fingerprint"),
        ({"properties": {}}, "fingerprint none"),
    ],
)
def test_plan_replaces_on_any_difference(change: dict[str, Any], reason: str) -> None:
    want = desired()
    have = {**want, "dm": replace(want["dm"], **change)}
    plan = plan_sync(want, have)
    assert [(a.kind, a.table) for a in plan] == [("replace", "dm")]
    assert reason in plan[0].reason


def test_plan_drops_tables_without_manifest_first() -> None:
    want = desired(dm=DM)
    plan = plan_sync(want, {"sv": desired()["sv"], "zz": None})
    assert [(a.kind, a.table) for a in plan] == [("drop", "sv"), ("drop", "zz"), ("create", "dm")]


def test_plan_recreates_unreadable_tables() -> None:
    plan = plan_sync(desired(dm=DM), {"dm": None})
    assert [(a.kind, a.table, a.reason) for a in plan] == [("create", "dm", "unreadable")]


def test_sync_ref_is_idempotent() -> None:
    metastore = FakeMetastore()
    first = sync_ref(metastore, "study_main", desired())
    assert first.ok
    assert len(first.actions) == 2
    assert metastore.list_tables("study_main") == ["dm", "sv"]
    assert sync_ref(metastore, "study_main", desired()).actions == ()


def test_sync_ref_propagates_outages() -> None:
    metastore = FakeMetastore()
    metastore.down = True
    with pytest.raises(ServiceUnavailable):
        sync_ref(metastore, "study_main", desired())


def test_copy_schema_rewrites_locations_to_the_new_branch() -> None:
    metastore = FakeMetastore()
    sync_ref(metastore, "study_main", desired())
    result = copy_schema(metastore, "study_main", "study_v2", "study", "v2")
    assert result.ok
    copied = metastore.get_table("study_v2", "dm")
    assert copied is not None
    assert copied.location == "s3a://study/v2/tables/dm/"
    assert copied.columns == desired()["dm"].columns
    assert copied.properties[FINGERPRINT_PROPERTY] == "1" * 64
    # the copy is what syncing the new branch's (identical) manifests gives: nothing to do
    assert sync_ref(metastore, "study_v2", desired("v2", "study_v2")).actions == ()
    # the source is untouched
    source = metastore.get_table("study_main", "dm")
    assert source is not None
    assert source.location == "s3a://study/main/tables/dm/"


def test_copy_schema_replaces_stale_tables_in_an_existing_target() -> None:
    metastore = FakeMetastore()
    sync_ref(metastore, "study_main", desired())
    sync_ref(metastore, "study_v2", desired("elsewhere", "study_v2", dm=DM))
    result = copy_schema(metastore, "study_main", "study_v2", "study", "v2")
    assert [(a.kind, a.table) for a in result.actions] == [("replace", "dm"), ("create", "sv")]


def test_copy_schema_of_missing_source_is_not_found() -> None:
    with pytest.raises(NotFound):
        copy_schema(FakeMetastore(), "nope", "study_v2", "study", "v2")


def test_sync_and_verify_repairs_a_table_altered_behind_our_back() -> None:
    metastore = FakeMetastore()
    manifests = {"dm": DM, "sv": SV}
    for table in desired().values():
        metastore.set_rows(table.location, 3)
    _, problems = sync_and_verify(metastore, None, "study", "main", "study_main", manifests)
    assert problems == []

    metastore.alter_column_type("study_main", "dm", "age", "varchar")
    metastore.drop_table("study_main", "sv")
    result, problems = sync_and_verify(metastore, None, "study", "main", "study_main", manifests)
    assert problems == []
    dm = metastore.get_table("study_main", "dm")
    assert dm is not None
    assert dm.columns[1] == Column("age", "integer")
    assert metastore.get_table("study_main", "sv") is not None
    assert [(a.kind, a.table) for a in result.actions] == [("replace", "dm"), ("create", "sv")]


def test_a_tables_probe_starts_as_soon_as_its_definition_is_written() -> None:
    import threading

    probed_dm = threading.Event()

    class Watching(FakeMetastore):
        dm_probed_before_sv = False

        def create_table(self, table: TableDef) -> None:
            if table.name == "sv":  # written after dm (workers=1): dm's probe runs meanwhile
                self.dm_probed_before_sv = probed_dm.wait(5)
            super().create_table(table)

        def probe(self, schema: str, table: str) -> int:
            rows = super().probe(schema, table)
            if table == "dm":
                probed_dm.set()
            return rows

    metastore = Watching()
    for table in desired().values():
        metastore.set_rows(table.location, 3)
    _, problems = sync_and_verify(
        metastore, None, "study", "main", "study_main", {"dm": DM, "sv": SV}, workers=1
    )
    assert problems == []
    assert metastore.dm_probed_before_sv
    assert metastore.get_table("study_main", "sv") is not None


def test_early_probes_report_what_verifying_afterwards_reports() -> None:
    metastore = FakeMetastore()
    manifests = {"dm": DM, "sv": SV}
    for table in desired().values():
        metastore.set_rows(table.location, 3)
    metastore.set_rows(desired()["sv"].location, 2)  # the engine reads 2 rows, the manifest 3
    _, problems = sync_and_verify(metastore, None, "study", "main", "study_main", manifests)
    afterwards = verify_ref(metastore, None, "study", "main", "study_main", manifests)
    assert [(p.table, p.what) for p in problems] == [("sv", "probe row count differs")]
    assert problems == afterwards


def _probes(metastore: FakeMetastore) -> list[str]:
    return sorted(c[2] for c in metastore.calls if c[0] == "probe")


def test_a_table_probed_before_with_the_same_definition_and_files_is_not_probed_again() -> None:
    """A Trino statement costs ~0.3-0.5 CPU s whatever it reads: a sync that changed one table
    of thirty probed all thirty. The probe's answer depends only on the definition and the
    files, so the same ones at the same schema are not probed twice (the definition and the
    footers are still checked)."""
    metastore = FakeMetastore()
    manifests = {"dm": DM, "sv": SV}
    for table in desired().values():
        metastore.set_rows(table.location, 3)
    identities = probe_identities("study", "main", "study_main", manifests)
    assert len(set(identities.values())) == 2
    sync_and_verify(metastore, None, "study", "main", "study_main", manifests)
    assert _probes(metastore) == ["dm", "sv"]  # both written, both probed
    metastore.calls.clear()
    _, problems = sync_and_verify(
        metastore, None, "study", "main", "study_main", manifests, probed={"dm": identities["dm"]}
    )
    assert problems == []
    assert _probes(metastore) == ["sv"]

    # dm's files changed (same definition): a new identity, so a new probe, which now fails
    dm = replace(DM, files=("tables/dm/part-00001.parquet",))
    metastore.calls.clear()
    metastore.set_rows(desired()["dm"].location, 2)
    changed = {"dm": dm, "sv": SV}
    assert probe_identities("study", "main", "study_main", changed)["dm"] != identities["dm"]
    _, problems = sync_and_verify(
        metastore, None, "study", "main", "study_main", changed, probed=identities
    )
    assert [(p.table, p.what) for p in problems] == [("dm", "probe row count differs")]
    assert _probes(metastore) == ["dm"]

    # a table whose definition the sync had to write again (sv, dropped behind lakehook's
    # back) is probed again, whatever was probed before
    metastore.set_rows(desired()["dm"].location, 3)
    metastore.drop_table("study_main", "sv")
    metastore.calls.clear()
    _, problems = sync_and_verify(
        metastore, None, "study", "main", "study_main", manifests, probed=identities
    )
    assert problems == []
    assert _probes(metastore) == ["sv"]


def test_the_probe_identity_covers_the_whole_definition() -> None:
    base = probe_identities("study", "main", "study_main", {"dm": DM})["dm"]
    others = [
        probe_identities("study", "v2", "study_v2", {"dm": DM})["dm"],  # location
        probe_identities("study", "main", "study_main", {"dm": replace(DM, rows=4)})["dm"],
        probe_identities("study", "main", "study_main", {"dm": replace(DM, fingerprint="9" * 64)})[
            "dm"
        ],  # a table property
        probe_identities(
            "study",
            "main",
            "study_main",
            {"dm": replace(DM, file_fingerprints={DM.files[0]: (10, "other")})},
        )["dm"],
    ]
    assert len({base, *others}) == 5
