"""Names and locations of contract §3, §5 and §7, including the schema collision rule."""

from __future__ import annotations

import hashlib

import pytest

from pipeline import naming


@pytest.mark.parametrize(
    ("dataset", "table"),
    [("DM", "dm"), ("Lab-Chem 2", "lab_chem_2"), ("suppdm.v1", "suppdm_v1"), ("ÄE", "_e")],
)
def test_table_name_lowercases_and_replaces_outside_characters(dataset: str, table: str) -> None:
    assert naming.table_name(dataset) == table


def test_branch_and_tag_schema_names() -> None:
    assert naming.schema_name("Study-1", "feature/x", {}) == "study_1_feature_x"
    assert naming.schema_name("study", "v1.0", {}, ref_type="tag") == "study_tag_v1_0"


def test_persisted_name_is_returned_unchanged() -> None:
    mapping = {("study", "branch", "main"): "study_main_0123abcd"}
    assert naming.schema_name("study", "main", mapping) == "study_main_0123abcd"


def test_collision_appends_first_8_hex_of_sha256_of_repo_slash_ref() -> None:
    # "a-b" + "c" and "a" + "b-c" both sanitise to a_b_c
    mapping = {("a-b", "branch", "c"): "a_b_c"}
    suffix = hashlib.sha256(b"a/b-c").hexdigest()[:8]
    assert naming.schema_name("a", "b-c", mapping) == f"a_b_c_{suffix}"


def test_collision_with_a_tag_schema_of_another_ref() -> None:
    mapping = {("s", "tag", "x"): "s_tag_x"}
    name = naming.schema_name("s", "tag_x", mapping)
    assert name == "s_tag_x_" + hashlib.sha256(b"s/tag_x").hexdigest()[:8]


def test_no_collision_when_the_same_key_holds_the_name() -> None:
    mapping = {("s", "branch", "x"): "s_x", ("s", "branch", "y"): "s_y"}
    assert naming.schema_name("s", "z", mapping) == "s_z"


def test_suffixed_name_taken_too_uses_more_digits() -> None:
    suffix = hashlib.sha256(b"a/b-c").hexdigest()
    mapping = {
        ("a-b", "branch", "c"): "a_b_c",
        ("x", "branch", "y"): f"a_b_c_{suffix[:8]}",
    }
    assert naming.schema_name("a", "b-c", mapping) == f"a_b_c_{suffix[:16]}"


def test_unknown_ref_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="ref_type"):
        naming.base_schema_name("s", "x", "commit")


def test_locations() -> None:
    assert naming.table_location("study", "v2", "dm") == "s3a://study/v2/tables/dm/"
    assert naming.normalize_location("s3://study/v2/tables/dm") == "s3a://study/v2/tables/dm/"


def test_key_column() -> None:
    assert naming.key_column("Patient") == "patient_sk"
