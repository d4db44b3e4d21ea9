""" "Made by lakehook", decided by signatures and the merge record (contract §8 v1.1), on fakes."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehook.errors import TerminalError
from lakehook.settings import Settings
from pipeline.model import ORIGIN_KEY, SOURCE_COMMIT_KEY, OutputColumn, TableManifest
from pipeline.naming import table_location
from pipeline.ports import Commit, ObjectInfo
from pipeline.processing.plan import plan_branch, working_branch
from pipeline.provenance import (
    PARENT_KEY,
    SIGNATURE_KEY,
    Provenance,
    commit_message_bytes,
    manifest_bytes,
)
from pipeline.service import BranchService
from server.store import Database, SqliteStatusStore
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore

REPO = "study"
KEY = b"0123456789abcdef" * 4
CONTENTS = b"""dataset,column,type
dm,STUDYID,string
dm,USUBJID,string
dm,AGE,integer
ae,USUBJID,string
ae,AETERM,string
"""
DM = b"STUDYID,USUBJID,AGE\nS1,01-701-1015,63\nS1,01-701-1023,64\n"
AE = b"USUBJID,AETERM\n01-701-1015,HEADACHE\n"
BASE = {"raw/contents.csv": CONTENTS, "raw/DM.csv": DM, "raw/AE.csv": AE}

MANIFEST = TableManifest(
    table="dm",
    dataset="DM",
    source_commit="c" * 64,
    raw_path="raw/DM.csv",
    raw_checksum="r",
    contents_path="raw/contents.csv",
    contents_fingerprint="cf",
    keys_fingerprint="kf",
    processing_version="1",
    fingerprint="f" * 64,
    files=("tables/dm/part-0.parquet",),
    columns=(OutputColumn("age", "integer", "AGE", "integer"),),
    rows=2,
)


# ---- signatures -------------------------------------------------------------------------------


def test_commit_signature_binds_every_field_and_the_parent() -> None:
    provenance = Provenance(KEY)
    meta = provenance.commit_metadata(REPO, "main", "s" * 64, "p" * 64, {"dm": MANIFEST}, ["dm"])
    commit = Commit("x" * 64, ("q" * 64, "p" * 64), "admin", "m", meta)
    assert provenance.is_lakehook_commit(REPO, commit)
    assert provenance.source_commit_of(REPO, commit) == "s" * 64
    for key in (SOURCE_COMMIT_KEY, "lakehook.branch", PARENT_KEY, "lakehook.manifests"):
        tampered = replace(commit, metadata={**meta, key: meta[key] + "0"})
        assert not provenance.is_lakehook_commit(REPO, tampered), key
    assert not provenance.is_lakehook_commit("other", commit)
    assert not provenance.is_lakehook_commit(
        REPO, replace(commit, metadata={**meta, ORIGIN_KEY: "x"})
    )
    no_signature = {k: v for k, v in meta.items() if k != SIGNATURE_KEY}
    assert not provenance.is_lakehook_commit(REPO, replace(commit, metadata=no_signature))
    assert not Provenance(b"another key").is_lakehook_commit(REPO, commit)
    # the same metadata copied onto a commit with other parents is a person's commit
    copied = Commit("y" * 64, ("z" * 64,), "admin", "my commit", meta)
    assert not provenance.is_lakehook_commit(REPO, copied)
    assert provenance.source_commit_of(REPO, copied) == "y" * 64
    # lakeFS Enterprise with a dedicated user: the committer must be that user too
    enterprise = Provenance(KEY, lakehook_user="lakehook-bot")
    assert not enterprise.is_lakehook_commit(REPO, commit)
    assert enterprise.is_lakehook_commit(REPO, replace(commit, committer="lakehook-bot"))


def test_canonical_bytes_cannot_be_shifted_between_fields() -> None:
    assert commit_message_bytes("a", "b|c", "d", "e", "f") != commit_message_bytes(
        "a", "b", "c|d", "e", "f"
    )
    assert commit_message_bytes("a\n", "b", "c", "d", "e") != commit_message_bytes(
        "a", "\nb", "c", "d", "e"
    )


def test_manifest_seal_survives_json_and_detects_any_change() -> None:
    provenance = Provenance(KEY)
    info = ObjectInfo("tables/dm/part-0.parquet", "etag1", 100)
    sealed = provenance.seal(MANIFEST, {info.path: info})
    assert sealed.file_fingerprints == {info.path: (100, "etag1")}
    again = TableManifest.from_json(sealed.to_json())
    assert again == sealed
    assert provenance.manifest_signed(again)
    assert manifest_bytes(again) == manifest_bytes(sealed)
    for change in (
        {"rows": 3},
        {"files": ("tables/dm/other.parquet",)},
        {"file_fingerprints": {info.path: (100, "etag2")}},
        {"columns": (OutputColumn("age", "varchar", "AGE", "integer"),)},
        {"source_commit": "d" * 64},
    ):
        assert not provenance.manifest_signed(replace(sealed, **change)), change
    assert not Provenance(b"x").manifest_signed(sealed)
    assert not provenance.manifest_signed(MANIFEST)  # never signed
    with pytest.raises(ValueError, match="no fingerprint"):
        provenance.seal(MANIFEST, {})


def test_no_key_in_any_repr(tmp_path: Path) -> None:
    key = b"very-secret-signing-key-" * 2
    provenance = Provenance(key, merges=MemoryStatusStore())
    assert key.decode() not in repr(provenance)
    settings = Settings.load(
        {"LAKEHOOK_STATE_DIR": str(tmp_path), "LAKEHOOK_SIGNING_KEY": key.decode()}
    )
    service = BranchService(settings, FakeLakeFS(), FakeMetastore(), MemoryStatusStore())
    assert key.decode() not in repr(service)
    assert key.decode() not in repr(settings)


# ---- the merge record -------------------------------------------------------------------------


def test_sqlite_merge_record(tmp_path: Path) -> None:
    store = SqliteStatusStore(Database(tmp_path / "jobs.sqlite3"))
    assert not store.merge_recorded(REPO, "main", "c1")
    store.record_merge(REPO, "main", "c1")
    store.record_merge(REPO, "main", "c1")  # again: still one record
    assert store.merge_recorded(REPO, "main", "c1")
    assert not store.merge_recorded(REPO, "dev", "c1")
    assert not store.merge_recorded(REPO, "main", "c2")
    assert not store.merge_recorded("other", "main", "c1")
    # durable: another connection (another process after a restart) sees it
    assert SqliteStatusStore(Database(tmp_path / "jobs.sqlite3")).merge_recorded(REPO, "main", "c1")


def test_a_merge_needs_a_merge_log() -> None:
    with pytest.raises(RuntimeError, match="recording"):
        Provenance(KEY).record_merge(REPO, "main", "c1")
    assert not Provenance(KEY).is_lakehook_merge(REPO, "main", "c1")


# ---- the whole rule through BranchService on fakes ---------------------------------------------


@pytest.fixture
def lakefs() -> FakeLakeFS:
    fake = FakeLakeFS(user="admin")  # lakeFS Community: lakehook and people share one user
    fake.create_repository(REPO, "local://study")
    return fake


@pytest.fixture
def service(lakefs: FakeLakeFS, tmp_path: Path) -> BranchService:
    metastore = FakeMetastore()
    for branch in ("main", "dev", "v2", "rc1", "good"):
        metastore.set_rows(table_location(REPO, branch, "dm"), 2)
        metastore.set_rows(table_location(REPO, branch, "ae"), 1)
    service = BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=MemoryStatusStore(),
        workdir=tmp_path / "work",
        provenance=Provenance(KEY),
    )

    def gate(repo: str, source_commit: str, destination: str) -> None:
        """lakeFS's pre-merge hook calling lakehook's gate, as the real action does."""
        decision = service.gate(repo, "?", destination, source_commit)
        if not decision.allowed:
            raise TerminalError("pre-merge hook refused: " + "; ".join(decision.reasons))

    lakefs.merge_hook = gate
    return service


def deliver(lakefs: FakeLakeFS, branch: str, files: dict[str, bytes], message: str = "d") -> str:
    for path, data in files.items():
        lakefs.upload_object(REPO, branch, path, data)
    return lakefs.commit(REPO, branch, message, {}).id


def parquet(rows: dict[str, list[object]]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(rows), out)
    return out.getvalue()


def test_lakehooks_own_merge_passes_the_gate_by_its_record(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    user = deliver(lakefs, "main", BASE)
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    head = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "main"))
    assert service.provenance.is_lakehook_commit(REPO, head)
    assert head.metadata[SOURCE_COMMIT_KEY] == user
    # the working-branch commit (second parent) was recorded before the merge was asked for
    assert service.store.merge_recorded(REPO, "main", head.parents[1])


def test_a_forged_manifest_and_parquet_are_rebuilt_from_raw(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", BASE)
    assert service.sync_branch(REPO, "main").state == "synced"
    real = TableManifest.from_json(lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json"))
    # a person replaces dm's Parquet and manifest: same fingerprint, so nothing would be redone
    forged_file = "tables/dm/part-0.parquet"
    lakefs.upload_object(
        REPO, "main", forged_file, parquet({"studyid": ["X"], "usubjid": ["X"], "age": [1]})
    )
    forged = replace(real, files=(forged_file,), rows=1, signature="0" * 64)
    lakefs.upload_object(REPO, "main", forged.path, forged.to_json())
    lakefs.upload_object(REPO, "main", "tables/dm/extra.parquet", b"not lakehook's")
    lakefs.upload_object(REPO, "main", "tables/evil/x.parquet", b"not lakehook's either")
    person = lakefs.commit(REPO, "main", "tweak outputs", {}).id

    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert status.source_commit == person
    assert any(
        w.startswith(
            "_lakehook/manifests/dm.json is not signed by lakehook; rebuilt from raw/DM.csv"
        )
        for w in status.warnings
    ), status.warnings
    manifest = TableManifest.from_json(
        lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json")
    )
    assert service.provenance.manifest_signed(manifest)
    assert manifest.rows == 2
    rows = [
        r
        for path in manifest.files
        for r in pq.read_table(io.BytesIO(lakefs.read_object(REPO, "main", path))).to_pylist()
    ]
    assert [r["age"] for r in rows] == [63, 64]
    # every file under tables/ is listed by a trusted manifest; the rest is gone
    listed = {
        p
        for t in ("dm", "ae")
        for p in service._manifests_at(REPO, lakefs.branch_head(REPO, "main"))[t].files
    }
    assert {o.path for o in lakefs.list_objects(REPO, "main", "tables/")} == listed


def test_a_parquet_file_changed_under_a_signed_manifest_is_detected(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", BASE)
    service.sync_branch(REPO, "main")
    manifest = TableManifest.from_json(
        lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json")
    )
    lakefs.upload_object(REPO, "main", manifest.files[0], parquet({"age": [999]}))
    lakefs.commit(REPO, "main", "swap the data, keep the signed manifest", {})
    status = service.sync_branch(REPO, "main")
    assert any(
        "does not match tables/dm/" in w and "rebuilt from raw/DM.csv" in w for w in status.warnings
    )
    rebuilt = TableManifest.from_json(
        lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json")
    )
    data = pq.read_table(io.BytesIO(lakefs.read_object(REPO, "main", rebuilt.files[0])))
    assert data.column("age").to_pylist() == [63, 64]


def test_a_forged_manifest_without_raw_is_removed(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", BASE)
    service.sync_branch(REPO, "main")
    real = TableManifest.from_json(lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json"))
    ghost = replace(real, table="ghost", files=("tables/ghost/a.parquet",))
    lakefs.upload_object(REPO, "main", ghost.path, ghost.to_json())
    lakefs.upload_object(REPO, "main", "tables/ghost/a.parquet", parquet({"a": [1]}))
    lakefs.commit(REPO, "main", "a table nobody delivered", {})
    status = service.sync_branch(REPO, "main")
    assert {t.table for t in status.tables} == {"ae", "dm"}
    assert any(w.startswith("_lakehook/manifests/ghost.json") for w in status.warnings)
    assert lakefs.stat_object(REPO, "main", ghost.path) is None
    assert lakefs.list_objects(REPO, "main", "tables/ghost/") == []
    assert "ghost" not in service.metastore.list_tables(status.schema)


def test_a_copied_marker_does_not_make_lakehook_skip_a_commit(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    deliver(lakefs, "main", BASE)
    service.sync_branch(REPO, "main")
    lakehooks = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "main"))
    lakefs.upload_object(REPO, "main", "raw/DM.csv", DM + b"S1,01-701-1030,70\n")
    person = lakefs.commit(REPO, "main", "more subjects", lakehooks.metadata).id
    plan = plan_branch(lakefs, REPO, "main", service.provenance)
    assert plan.source_commit == person
    assert [t.table for t in plan.tasks] == ["dm"]
    service.metastore.set_rows(table_location(REPO, "main", "dm"), 3)  # type: ignore[attr-defined]
    status = service.sync_branch(REPO, "main")
    assert status.source_commit == person
    assert {t.table: t.rows for t in status.tables} == {"ae": 1, "dm": 3}


def test_a_person_made_working_branch_is_never_merged_as_lakehooks(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    source = deliver(lakefs, "main", BASE)
    # before lakehook gets to it, a person prepares "lakehook's" working branch with forged
    # outputs and metadata copied from some lakehook commit
    name = working_branch("main", source)
    lakefs.create_branch(REPO, name, source)
    forged = replace(MANIFEST, signature="f" * 64)
    lakefs.upload_object(REPO, name, forged.path, forged.to_json())
    lakefs.upload_object(REPO, name, forged.files[0], parquet({"age": [1]}))
    meta = Provenance(b"guessed").commit_metadata(REPO, "main", source, source, {"dm": forged})
    lakefs.commit(REPO, name, "lakehook: 1 table(s)", meta)
    assert plan_branch(lakefs, REPO, "main", service.provenance).ready_branch is None
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced"
    rows = TableManifest.from_json(
        lakefs.read_object(REPO, "main", "_lakehook/manifests/dm.json")
    ).rows
    assert rows == 2


BREAKING_CONTENTS = CONTENTS.replace(b"dm,AGE,integer", b"dm,AGE,string")


def test_a_branch_named_like_lakehooks_with_its_metadata_gets_the_gate(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    """Issue 11, exploit 1: ``_lakehook-x`` from a branch with BREAKING drift."""
    deliver(lakefs, "main", BASE)
    service.sync_branch(REPO, "main")
    lakefs.create_branch(REPO, "dev", "main")
    deliver(lakefs, "dev", {"raw/contents.csv": BREAKING_CONTENTS})
    status = service.sync_branch(REPO, "dev")
    assert status.state == "synced"
    dev_head = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "dev"))
    assert service.provenance.is_lakehook_commit(REPO, dev_head)  # lakehook wrote back on dev
    # the person branches from it, copies lakehook's metadata onto a commit, and merges
    lakefs.create_branch(REPO, "_lakehook-x", "dev")
    lakefs.upload_object(REPO, "_lakehook-x", "notes.txt", b"x")
    lakefs.commit(REPO, "_lakehook-x", "copy", dev_head.metadata)
    for source in ("_lakehook-x", "dev"):
        head = lakefs.branch_head(REPO, source)
        decision = service.gate(REPO, source, "main", head)
        assert not decision.allowed, source
        assert any("BREAKING" in r or "still processing" in r for r in decision.reasons)
    decision = service.gate(REPO, "_lakehook-x", "main", lakefs.branch_head(REPO, "_lakehook-x"))
    assert "named like a lakehook working branch" in decision.reasons[0]
    with pytest.raises(TerminalError, match="refused"):
        lakefs.merge(REPO, "_lakehook-x", "main", "sneak", dev_head.metadata)


# ---- the gate's source: branch, tag or commit id -----------------------------------------------


def _breaking_dev(lakefs: FakeLakeFS, service: BranchService) -> str:
    deliver(lakefs, "main", BASE)
    service.sync_branch(REPO, "main")
    lakefs.create_branch(REPO, "dev", "main")
    deliver(lakefs, "dev", {"raw/contents.csv": BREAKING_CONTENTS})
    assert service.sync_branch(REPO, "dev").state == "synced"
    return lakefs.branch_head(REPO, "dev")


def test_gate_checks_a_tag_sources_own_status(lakefs: FakeLakeFS, service: BranchService) -> None:
    dev_head = _breaking_dev(lakefs, service)
    lakefs.create_tag(REPO, "rc1", dev_head)
    unsynced = service.gate(REPO, "rc1", "main", dev_head)
    assert not unsynced.allowed
    assert "not been processed" in unsynced.reasons[0]
    assert service.sync_tag(REPO, "rc1").state == "synced"
    decision = service.gate(REPO, "rc1", "main", dev_head)
    assert not decision.allowed
    assert "BREAKING" in decision.reasons[0]
    # a tag of main's own synced state brings nothing new
    lakefs.create_tag(REPO, "good", lakefs.branch_head(REPO, "main"))
    service.sync_tag(REPO, "good")
    assert service.gate(REPO, "good", "main", lakefs.branch_head(REPO, "main")).allowed


def test_the_gate_reads_what_a_commit_holds_once(
    lakefs: FakeLakeFS, service: BranchService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision read both commits' manifests and ``lakehook.yaml`` from lakeFS every time:
    tens of milliseconds of a gate process's and lakeFS's CPU beside the intake (issue 16).
    What a commit holds never changes, so a retried merge, or the next one into the same
    destination head, reads only the refs; a payload naming a ref instead of a commit id is
    read every time (its commit moves)."""
    dev_head = _breaking_dev(lakefs, service)
    reads: Counter[str] = Counter()
    for name in ("list_objects", "stat_object", "read_object", "open_object", "read_range"):
        real = getattr(lakefs, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            reads[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(lakefs, name, counted)
    first = service.gate(REPO, "dev", "main", dev_head)
    assert not first.allowed
    assert "BREAKING" in first.reasons[0]
    assert sum(reads.values()) > 0
    reads.clear()
    assert service.gate(REPO, "dev", "main", dev_head) == first
    assert sum(reads.values()) == 0, reads
    by_name = service.gate(REPO, "dev", "main", "dev")  # a payload's ref, not a commit id
    assert not by_name.allowed
    assert sum(reads.values()) > 0
    reads.clear()
    deliver(lakefs, "main", {"raw/notes.txt": b"main moved"})  # a new destination head: read
    service.gate(REPO, "dev", "main", dev_head)
    assert reads["list_objects"] > 0


def test_gate_checks_a_bare_commit_by_a_synced_ref_at_it(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    dev_head = _breaking_dev(lakefs, service)
    decision = service.gate(REPO, dev_head, "main", dev_head)  # lakectl merge <commit id>
    assert not decision.allowed
    assert "BREAKING" in decision.reasons[0]
    older = lakefs.get_commit(REPO, dev_head).parents[0]
    refused = service.gate(REPO, older, "main", older)
    assert not refused.allowed
    assert f"commit {older[:12]} is not the synced head of any branch or tag" in refused.reasons[0]
    lakefs.create_branch(REPO, "feature", "main")
    assert service.gate(REPO, older, "feature", older).allowed  # not protected


def test_a_merge_a_person_made_with_copied_markers_is_not_taken_for_lakehooks(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    from pipeline.processing.writeback import find_merge

    source = deliver(lakefs, "main", BASE)
    lakefs.merge_hook = None
    work = working_branch("main", source)
    lakefs.create_branch(REPO, work, source)
    lakefs.upload_object(REPO, work, "tables/dm/x.parquet", b"forged")
    work_head = lakefs.commit(REPO, work, "outputs", {}).id
    marker = {ORIGIN_KEY: "lakehook", SOURCE_COMMIT_KEY: source}
    lakefs.merge(REPO, work, "main", "looks like lakehook's", marker)
    assert find_merge(lakefs, REPO, "main", work_head, source, service.provenance) is None
    signed = service.provenance.commit_metadata(REPO, "main", source, work_head, {})
    lakefs.create_branch(REPO, "other", source)
    merged = lakefs.merge(REPO, work, "other", "lakehook's", signed)
    assert find_merge(lakefs, REPO, "other", work_head, source, service.provenance) == merged


def test_a_user_commit_landing_during_lakehooks_merge_is_processed_not_hidden(
    lakefs: FakeLakeFS, service: BranchService
) -> None:
    """lakeFS merges lakehook's outputs onto whatever the branch head is by then: a user commit
    made while the job worked becomes the merge's first parent. The merge must not stand for
    the older source commit (that hid the newer commit: synced, never processed, and the older
    source got a second lakehook commit)."""
    first = deliver(lakefs, "main", BASE)
    merge = lakefs.merge
    late: dict[str, str] = {}

    def merge_after_a_user_commit(*args: object, **kwargs: object) -> str:
        if not late:
            late["commit"] = deliver(lakefs, "main", {"raw/DM.csv": DM + b"S1,01-701-1030,70\n"})
        return merge(*args, **kwargs)  # type: ignore[arg-type]

    lakefs.merge = merge_after_a_user_commit  # type: ignore[method-assign]
    raced = service.sync_branch(REPO, "main")
    lakefs.merge = merge  # type: ignore[method-assign]
    # not "synced": the head holds a commit that was not processed (the reconciler's cue)
    assert raced.state == "pending", raced
    assert raced.source_commit == first
    assert late["commit"][:12] in raced.reason
    head = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "main"))
    assert head.parents[0] == late["commit"]
    assert head.metadata[SOURCE_COMMIT_KEY] == first
    assert plan_branch(lakefs, REPO, "main", service.provenance).source_commit == late["commit"]

    service.metastore.set_rows(table_location(REPO, "main", "dm"), 3)  # type: ignore[attr-defined]
    status = service.sync_branch(REPO, "main")
    assert status.state == "synced", status.errors
    assert status.source_commit == late["commit"]
    assert {t.table: t.rows for t in status.tables}["dm"] == 3
    sources = [
        c.metadata[SOURCE_COMMIT_KEY]
        for c in lakefs.log(REPO, "main", limit=50)
        if len(c.parents) == 2 and c.metadata.get(ORIGIN_KEY)
    ]
    assert sorted(sources) == sorted([first, late["commit"]])
    # the head now stands for the late commit, however often it is asked
    again = lakefs.get_commit(REPO, lakefs.branch_head(REPO, "main"))
    assert service.provenance.source_commit_at(lakefs, REPO, again) == late["commit"]
