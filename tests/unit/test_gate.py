"""The pre-merge gate matrix: protection, lakehook's own merges, source state, drift vs allow."""

from __future__ import annotations

from typing import Any

from pipeline.gate import DEFAULT_ALLOW, decide, is_protected
from pipeline.model import GateDecision, RefStatus, TableManifest
from tests.fakes.metastore import make_manifest

HEAD = "a" * 64
KEYS = {"patient": ("STUDYID", "USUBJID")}
DM = make_manifest("dm", [("studyid", "varchar"), ("usubjid", "varchar"), ("age", "integer")])
DM_AGE_TEXT = make_manifest(
    "dm", [("studyid", "varchar"), ("usubjid", "varchar"), ("age", "varchar")]
)
DM_WIDER = make_manifest("dm", [("studyid", "varchar"), ("usubjid", "varchar"), ("age", "bigint")])
SV = make_manifest("sv", [("studyid", "varchar"), ("visitnum", "double")])


def status(state: str = "synced", head: str = HEAD, **kwargs: Any) -> RefStatus:
    return RefStatus("study", "v2", "branch", "study_v2", head, "u" * 64, state, **kwargs)


def gate(
    source: dict[str, TableManifest] | None = None,
    destination: dict[str, TableManifest] | None = None,
    **kwargs: Any,
) -> GateDecision:
    args: dict[str, Any] = {
        "destination_branch": "main",
        "protected": ["main"],
        "allow": list(DEFAULT_ALLOW),
        "source_status": status(),
        "source_head": HEAD,
        "source_manifests": {"dm": DM} if source is None else source,
        "destination_manifests": {"dm": DM} if destination is None else destination,
        "source_keys": KEYS,
        "destination_keys": KEYS,
        "is_lakehook_merge": False,
    }
    args.update(kwargs)
    return decide(**args)


def test_synced_source_without_drift_is_allowed() -> None:
    decision = gate()
    assert decision.allowed
    assert decision.reasons == ()


def test_additive_and_widening_are_allowed_by_default() -> None:
    assert gate(source={"dm": DM, "sv": SV}).allowed
    assert gate(source={"dm": DM_WIDER}).allowed


def test_breaking_drift_is_refused_naming_table_column_and_remedy() -> None:
    decision = gate(source={"dm": DM_AGE_TEXT})
    assert not decision.allowed
    (reason,) = decision.reasons
    assert "table dm" in reason
    assert "BREAKING" in reason
    assert "age" in reason
    assert "integer -> varchar" in reason
    assert "gate.allow" in reason


def test_breaking_allowed_when_listed_in_allow() -> None:
    assert gate(source={"dm": DM_AGE_TEXT}, allow=[*DEFAULT_ALLOW, "BREAKING"]).allowed


def test_drift_is_measured_against_the_destination() -> None:
    # the source's own history is irrelevant: destination already has varchar age
    assert gate(source={"dm": DM_AGE_TEXT}, destination={"dm": DM_AGE_TEXT}).allowed


def test_removed_dataset_is_refused() -> None:
    decision = gate(source={}, destination={"dm": DM})
    assert not decision.allowed
    assert "dataset removed" in decision.reasons[0]


def test_key_config_change_is_refused() -> None:
    keyed = make_manifest(
        "dm", [("patient_sk", "bigint"), ("studyid", "varchar"), ("usubjid", "varchar")]
    )
    decision = gate(
        source={"dm": keyed}, destination={"dm": keyed}, source_keys={"patient": ("USUBJID",)}
    )
    assert not decision.allowed
    assert "KEY_AFFECTING" in decision.reasons[0]


def test_unprotected_destination_is_allowed_whatever_the_drift() -> None:
    decision = gate(source={"dm": DM_AGE_TEXT}, destination_branch="scratch", source_status=None)
    assert decision.allowed


def test_protected_patterns() -> None:
    assert is_protected("release/1", ["main", "release/*"])
    assert not is_protected("feature", ["main", "release/*"])


def test_lakehooks_own_merge_is_allowed() -> None:
    decision = gate(source={"dm": DM_AGE_TEXT}, source_status=None, is_lakehook_merge=True)
    assert decision.allowed


def test_never_processed_source_is_refused() -> None:
    decision = gate(source_status=None)
    assert not decision.allowed
    assert "still processing" in decision.reasons[0]


def test_source_head_ahead_of_recorded_status_is_refused() -> None:
    decision = gate(source_status=status(head="b" * 64))
    assert not decision.allowed
    assert "still processing" in decision.reasons[0]
    assert HEAD[:12] in decision.reasons[0]


def test_failed_source_is_refused_with_its_errors() -> None:
    errors = ({"table": "ae", "message": "raw/AE.csv, line 4: wrong number of fields"},)
    decision = gate(source_status=status("failed", errors=errors))
    assert not decision.allowed
    assert "raw/AE.csv, line 4" in decision.reasons[0]
    assert "[ae]" in decision.reasons[0]


def test_processing_or_pending_source_is_refused() -> None:
    for state in ("processing", "pending"):
        decision = gate(source_status=status(state, reason="branch has uncommitted changes"))
        assert not decision.allowed
        assert state in decision.reasons[0]


def test_a_recheck_running_on_an_already_synced_head_does_not_block_the_merge() -> None:
    # a reconciler sweep or a replayed webhook re-runs a job on the head lakehook already
    # synced: the head's outputs and manifests are there, so the gate decides on them (the
    # demo's merge was refused "still processing" by such a no-op job, and its drift unsaid)
    recheck = status("processing", reason="job 6 (sync_branch) running", last_synced_commit=HEAD)
    assert gate(source_status=recheck).allowed
    refused = gate(source={"dm": DM_AGE_TEXT}, source_status=recheck)
    assert not refused.allowed
    assert "BREAKING" in refused.reasons[0]
    # a head that was never synced is still processing, whatever ran before it
    earlier = status("processing", last_synced_commit="e" * 64)
    assert "still processing" in gate(source_status=earlier).reasons[0]


def test_value_level_is_refused_by_default() -> None:
    before = make_manifest("dm", [("age", "integer")], invalid_values={"age": 0})
    after = make_manifest("dm", [("age", "integer")], invalid_values={"age": 4})
    decision = gate(source={"dm": after}, destination={"dm": before})
    assert not decision.allowed
    assert "VALUE_LEVEL" in decision.reasons[0]


def test_one_reason_per_offending_table() -> None:
    sv_text = make_manifest("sv", [("studyid", "varchar"), ("visitnum", "varchar")])
    decision = gate(source={"dm": DM_AGE_TEXT, "sv": sv_text}, destination={"dm": DM, "sv": SV})
    assert [r.split(":")[0] for r in decision.reasons] == ["table dm", "table sv"]
