"""The drift matrix of contract §9: every class, its triggers, and the table's class."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.drift import KeyConfig, classify, describe, is_widening, most_severe
from pipeline.model import Drift, OutputColumn, TableManifest
from tests.fakes.metastore import make_manifest

KEYS = {"patient": ("STUDYID", "USUBJID")}
BASE = [
    OutputColumn("patient_sk", "bigint", key_sources=("studyid", "usubjid")),
    OutputColumn("studyid", "varchar", "STUDYID"),
    OutputColumn("usubjid", "varchar", "USUBJID"),
    OutputColumn("age", "integer", "AGE", label="Age"),
    OutputColumn("sex", "varchar", "SEX"),
]


def dm(columns: list[OutputColumn] | None = None, **kwargs: Any) -> TableManifest:
    kwargs.setdefault("keys", {"patient": ("studyid", "usubjid")})
    return make_manifest("dm", BASE if columns is None else columns, **kwargs)


def with_column(name: str, **changes: Any) -> list[OutputColumn]:
    return [OutputColumn(**{**c.__dict__, **changes}) if c.name == name else c for c in BASE]


def drift_of(
    old: TableManifest | None,
    new: TableManifest | None,
    old_keys: KeyConfig = KEYS,
    new_keys: KeyConfig = KEYS,
) -> Drift:
    return classify(old, new, old_keys=old_keys, new_keys=new_keys)


def test_identical_is_none() -> None:
    drift = drift_of(dm(), dm())
    assert drift.drift_class == "NONE"
    assert drift.changes == ()


def test_both_absent_is_none() -> None:
    assert drift_of(None, None).drift_class == "NONE"


def test_new_dataset_is_additive_whatever_its_values() -> None:
    drift = drift_of(None, dm(invalid_values={"age": 5}, null_keys={"patient": 2}))
    assert drift.drift_class == "ADDITIVE"
    assert drift.changes[0].change == "dataset added"


def test_removed_dataset_is_breaking() -> None:
    assert drift_of(dm(), None).drift_class == "BREAKING"


def test_new_column_is_additive() -> None:
    drift = drift_of(dm(), dm([*BASE, OutputColumn("race", "varchar")]))
    assert drift.drift_class == "ADDITIVE"
    assert [(c.column, c.change, c.to) for c in drift.changes] == [
        ("race", "column added", "varchar")
    ]


def test_label_change_is_cosmetic() -> None:
    drift = drift_of(dm(), dm(with_column("age", label="Age (years)")))
    assert drift.drift_class == "COSMETIC"
    assert drift.changes[0].from_ == "Age"


def test_order_change_is_cosmetic() -> None:
    reordered = [BASE[0], BASE[1], BASE[2], BASE[4], BASE[3]]
    drift = drift_of(dm(), dm(reordered))
    assert drift.drift_class == "COSMETIC"
    assert drift.changes[0].change == "column order changed"


def test_adding_a_column_in_the_middle_is_not_a_reorder() -> None:
    columns = [*BASE[:3], OutputColumn("race", "varchar"), *BASE[3:]]
    assert drift_of(dm(), dm(columns)).drift_class == "ADDITIVE"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("integer", "bigint"),
        ("integer", "double"),
        ("bigint", "double"),
        ("integer", "decimal(12,2)"),
        ("bigint", "decimal(20,0)"),
        ("decimal(8,2)", "decimal(10,2)"),
        ("decimal(8,2)", "decimal(12,4)"),
        ("date", "timestamp(3)"),
    ],
)
def test_widening(old: str, new: str) -> None:
    assert is_widening(old, new)
    drift = drift_of(dm(with_column("age", type=old)), dm(with_column("age", type=new)))
    assert drift.drift_class == "WIDENING"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("integer", "varchar"),
        ("varchar", "integer"),
        ("bigint", "integer"),
        ("double", "integer"),
        ("double", "decimal(10,2)"),
        ("decimal(10,2)", "decimal(8,2)"),
        ("decimal(10,2)", "decimal(11,4)"),
        ("timestamp(3)", "date"),
        ("boolean", "varchar"),
    ],
)
def test_other_type_changes_are_breaking(old: str, new: str) -> None:
    assert not is_widening(old, new)
    drift = drift_of(dm(with_column("age", type=old)), dm(with_column("age", type=new)))
    assert drift.drift_class == "BREAKING"
    assert drift.changes[0].column == "age"


def test_removed_column_is_breaking() -> None:
    drift = drift_of(dm(), dm([c for c in BASE if c.name != "sex"]))
    assert drift.drift_class == "BREAKING"
    assert drift.changes[0].change == "column removed"


def test_more_invalid_values_is_value_level() -> None:
    drift = drift_of(dm(invalid_values={"age": 1}), dm(invalid_values={"age": 3}))
    assert drift.drift_class == "VALUE_LEVEL"
    assert (drift.changes[0].from_, drift.changes[0].to) == ("1", "3")


def test_fewer_invalid_values_is_none() -> None:
    assert drift_of(dm(invalid_values={"age": 3}), dm(invalid_values={"age": 1})).drift_class == (
        "NONE"
    )


def test_more_rows_with_missing_key_parts_is_value_level() -> None:
    drift = drift_of(dm(null_keys={"patient": 0}), dm(null_keys={"patient": 2}))
    assert drift.drift_class == "VALUE_LEVEL"
    assert drift.changes[0].column == "patient_sk"


def test_key_column_type_change_is_key_affecting_even_when_widening() -> None:
    old = dm(with_column("usubjid", type="integer"))
    new = dm(with_column("usubjid", type="bigint"))
    assert drift_of(old, new).drift_class == "KEY_AFFECTING"


def test_key_column_removed_is_key_affecting() -> None:
    new = dm([c for c in BASE if c.name != "usubjid"])
    drift = drift_of(dm(), new)
    assert drift.drift_class == "KEY_AFFECTING"


def test_key_config_change_is_key_affecting() -> None:
    drift = drift_of(dm(), dm(), new_keys={"patient": ("USUBJID",)})
    assert drift.drift_class == "KEY_AFFECTING"
    assert drift.changes[0].change == "key config changed"
    assert drift.changes[0].to == "USUBJID"


def test_key_config_change_of_an_unused_key_is_none() -> None:
    new_keys = {**KEYS, "visit": ("STUDYID", "USUBJID", "VISITNUM")}
    assert drift_of(dm(), dm(), new_keys=new_keys).drift_class == "NONE"


def test_table_class_is_the_most_severe_change() -> None:
    columns = [*with_column("age", type="varchar", label="x"), OutputColumn("race", "varchar")]
    drift = drift_of(dm(invalid_values={"sex": 0}), dm(columns, invalid_values={"sex": 2}))
    assert drift.drift_class == "BREAKING"
    assert {c.drift_class for c in drift.changes} == {
        "BREAKING",
        "COSMETIC",
        "ADDITIVE",
        "VALUE_LEVEL",
    }


def test_most_severe_order() -> None:
    assert most_severe(["WIDENING", "KEY_AFFECTING", "BREAKING"]) == "KEY_AFFECTING"
    assert most_severe(["COSMETIC", "ADDITIVE"]) == "ADDITIVE"
    assert most_severe([]) == "NONE"


def test_describe_names_column_and_types() -> None:
    drift = drift_of(dm(), dm(with_column("age", type="varchar")))
    assert describe(drift.changes[0]) == "column age: type changed integer -> varchar (BREAKING)"


def test_to_dict_shape() -> None:
    drift = drift_of(dm(), dm(with_column("age", type="varchar")))
    assert drift.to_dict() == {
        "class": "BREAKING",
        "changes": [
            {
                "column": "age",
                "change": "type changed",
                "from": "integer",
                "to": "varchar",
                "class": "BREAKING",
            }
        ],
    }
