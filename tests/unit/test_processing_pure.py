"""Pure parts of processing: contents layouts, declared types, conversion, keys, plans."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehook.errors import InputError, KeyCollision
from pipeline.model import TableManifest
from pipeline.ports import ObjectInfo
from pipeline.processing import keys
from pipeline.processing.config import StudyConfig, parse_config
from pipeline.processing.contents import SAS, SIMPLE, parse_contents
from pipeline.processing.convert import convert_file
from pipeline.processing.plan import fingerprint, make_plan, working_branch
from pipeline.processing.types import UnknownType, convert, parse_declared

# ---- contents ---------------------------------------------------------------------------------


def test_simple_layout_any_order_and_case() -> None:
    contents = parse_contents(
        b"\xef\xbb\xbfType,Column,DATASET,extra\nstring,USUBJID,DM,x\nINTEGER,AGE,dm,y\n",
        "raw/contents.csv",
    )
    assert contents.layout == SIMPLE
    dm = contents.for_dataset("Dm")
    assert dm is not None
    assert [(c.name, c.ctype.trino if c.ctype else None) for c in dm.columns] == [
        ("USUBJID", "varchar"),
        ("AGE", "integer"),
    ]


def test_sas_layout_orders_by_varnum_and_maps_formats() -> None:
    data = (
        b"MEMNAME,NAME,TYPE,LENGTH,VARNUM,LABEL,FORMAT\n"
        b"DM,RFSTDT,1,8,3,Start,DATE9.\n"
        b"DM,USUBJID,2,20,1,Subject,$20.\n"
        b"DM,AGE,1,8,2,Age,\n"
        b"DM,RFSTDTM,1,8,4,Start time,E8601DT19.\n"
    )
    contents = parse_contents(data, "raw/contents.csv")
    assert contents.layout == SAS
    dm = contents.for_dataset("dm")
    assert dm is not None
    assert [(c.name, c.declared) for c in dm.columns] == [
        ("USUBJID", "string"),
        ("AGE", "double"),
        ("RFSTDT", "date"),
        ("RFSTDTM", "timestamp"),
    ]


def test_contents_errors_name_file_and_line() -> None:
    with pytest.raises(InputError) as err:
        parse_contents(b"a,b\n1,2\n", "raw/contents.csv")
    assert err.value.as_dict()["line"] == 1
    contents = parse_contents(b"dataset,column,type\ndm,AGE,int8\n", "raw/contents.csv")
    dm = contents.for_dataset("dm")
    assert dm is not None
    problems = dm.errors("raw/contents.csv")
    assert problems[0].as_dict()["line"] == 2
    with pytest.raises(InputError) as bad:
        parse_contents(b"dataset,column,type\n\xff\n", "raw/contents.csv")
    assert bad.value.as_dict()["line"] == 2


# ---- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "trino"),
    [
        ("varchar(20)", "varchar"),
        ("Long", "bigint"),
        ("num", "double"),
        ("decimal(10, 2)", "decimal(10,2)"),
        ("datetime", "timestamp(3)"),
        ("ISO8601", "varchar"),
    ],
)
def test_declared_types(declared: str, trino: str) -> None:
    assert parse_declared(declared).trino == trino


def test_unknown_type() -> None:
    with pytest.raises(UnknownType):
        parse_declared("int8")


def _convert(values: list[str | None], declared: str) -> tuple[list[object], int]:
    array, bad = convert(pa.array(values, pa.string()), parse_declared(declared))
    return array.to_pylist(), bad


def test_integer_accepts_point_zero_and_counts_invalid() -> None:
    assert _convert(["3", "3.0", " 4 ", "x", None, "3.5"], "integer") == (
        [3, 3, 4, None, None, None],
        2,
    )
    assert _convert(["3000000000"], "integer") == ([None], 1)
    assert _convert(["3000000000"], "bigint") == ([3000000000], 0)


def test_double_decimal_boolean() -> None:
    assert _convert(["1.5", "-2e3", "abc"], "double") == ([1.5, -2000.0, None], 1)
    # never rounded (contract §5 v1.1): more places than the scale is invalid
    assert _convert(["1.234", "12345678901"], "decimal(10,2)") == ([None, None], 2)
    assert _convert(["1.23", "1.230"], "decimal(10,2)") == ([Decimal("1.23")] * 2, 0)
    assert _convert(["Y", "n", "TRUE", "0", "maybe"], "boolean") == (
        [True, False, True, False, None],
        1,
    )


def test_dates_timestamps_partial_dates() -> None:
    assert _convert(["2014-07-02", "2014-02-30", "02JUL2014"], "date") == (
        [dt.date(2014, 7, 2), None, None],
        2,
    )
    sas = parse_declared("date", sas=True)
    assert convert(pa.array(["02JUL2014"]), sas)[0].to_pylist() == [dt.date(2014, 7, 2)]
    values, bad = _convert(["2014-07-02T10:30:00.123", "2014-07-02 10:30", "nope"], "timestamp")
    assert values[:2] == [
        dt.datetime(2014, 7, 2, 10, 30, 0, 123000),
        dt.datetime(2014, 7, 2, 10, 30),
    ]
    assert bad == 1
    assert _convert(["2014", "2014-07", "2014---02", "2014-07-02T11", "July"], "partialdate") == (
        ["2014", "2014-07", "2014---02", "2014-07-02T11", None],
        1,
    )


# ---- keys -------------------------------------------------------------------------------------


def test_golden_vectors() -> None:
    double = parse_declared("double")
    assert keys.surrogate_key("patient", ["CDISCPILOT01", "01-701-1015"], [None, None]) == (
        -882300288707882733
    )
    assert keys.surrogate_key("site", ["CDISCPILOT01", "701"], [None, None]) == 4093393086466076036
    parts = ["CDISCPILOT01", "01-701-1015", "1.2000000000000002"]
    assert keys.canonical("visit", ["CDISCPILOT01", "01-701-1015", "1.2"]) == (
        "2:v1|5:visit|12:CDISCPILOT01|11:01-701-1015|3:1.2"
    )
    assert keys.surrogate_key("visit", parts, [None, None, double]) == 1535226055626573821


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("1", "1"),
        ("1.0000004", "1"),
        ("1.0000005", "1"),
        ("1.0000015", "1.000002"),
        ("-0", "0"),
        ("100", "100"),
        ("0.000", "0"),
        ("x", None),
    ],
)
def test_numeric_parts(text: str, part: str | None) -> None:
    assert keys.numeric_part(text) == part


def test_text_parts_normalise() -> None:
    assert keys.text_part("  cafe\u0301 ") == "CAF\u00c9"
    assert keys.text_part("   ") is None
    assert (
        keys.part("2014-07-02T10:30:00.000", parse_declared("timestamp")) == "2014-07-02T10:30:00"
    )
    assert keys.part("y", parse_declared("boolean")) == "true"


def test_hasher_matches_row_by_row_and_counts_missing() -> None:
    hasher = keys.KeyHasher("patient", (None, None))
    studies = pa.array(["S", "S", "S", None, "S"])
    subjects = pa.array(["A", "b", "A", "A", " "])
    out = hasher.compute([studies, subjects]).to_pylist()
    expected = [
        keys.surrogate_key("patient", [s, u], [None, None])
        for s, u in zip(studies.to_pylist(), subjects.to_pylist(), strict=True)
    ]
    assert out == expected
    assert out[0] == out[2]
    assert hasher.missing == 2


def test_hasher_handles_separators_unicode_and_typed_parts_like_the_formula() -> None:
    double = parse_declared("double")
    hasher = keys.KeyHasher("visit", (None, None, double))
    rows = [
        ("S|1", "a:b", "1.0"),
        ("S", "1|a:b", "1"),
        ("S\x1f", "caf\u00e9", "1.20"),
        ("S", "cafe\u0301", "1.2"),
        ("S", "x", "not a number"),
        ("S", "x", None),
    ]
    columns = [pa.array(list(c)) for c in zip(*rows, strict=True)]
    out = hasher.compute(columns).to_pylist()
    assert out == [keys.surrogate_key("visit", list(r), [None, None, double]) for r in rows]
    assert out[0] != out[1]  # the length prefixes keep "S|1","a:b" apart from "S","1|a:b"
    assert out[4] is None
    assert hasher.missing == 2


def test_header_must_be_on_line_one(tmp_path: Path) -> None:
    csv = tmp_path / "dm.csv"
    csv.write_bytes(b"\nUSUBJID\n01\n")
    with pytest.raises(InputError, match="first line is empty") as err:
        convert_file(csv, None, {}, tmp_path / "out", display_path="raw/DM.csv")
    assert err.value.file == "raw/DM.csv"
    assert err.value.line == 1


def test_long_quoted_header_spanning_reads(tmp_path: Path) -> None:
    names = [f'"col\n{i:05d}"' for i in range(20000)]  # > 64 KiB, newlines inside quotes
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    result = convert_file(csv, None, {}, tmp_path / "out", max_columns=20000)
    assert result.rows == 1
    assert len(result.columns) == 20000


def test_row_by_row_fallback_gives_the_same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = [pa.array(["S", "S", None, "T"]), pa.array(["a", "b", "a", "a"])]
    fast = keys.KeyHasher("patient", (None, None)).compute(columns).to_pylist()
    monkeypatch.setattr(keys, "_CODE_LIMIT", 2)
    slow_hasher = keys.KeyHasher("patient", (None, None))
    assert slow_hasher.compute(columns).to_pylist() == fast
    assert slow_hasher.missing == 1


def test_fields_with_one_canonical_part_share_a_key_within_a_batch() -> None:
    # "a"/"A " and "1"/"1.0" are different field values with the same canonical part: the same
    # canonical string twice among a batch's distinct codes is not a collision
    double = parse_declared("double")
    hasher = keys.KeyHasher("visit", (None, None, double))
    columns = [pa.array(["S", "S", "S"]), pa.array(["a", "A ", "b"]), pa.array(["1", "1.0", "1"])]
    out = hasher.compute(columns).to_pylist()
    assert out[0] == out[1] == keys.surrogate_key("visit", ["S", "a", "1"], [None, None, double])
    assert out[2] != out[0]
    assert len(hasher._seen) == 2
    hasher.finish()


@pytest.fixture
def colliding_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    """sha256 whose digests all start with the same 8 bytes (the next 8 differ): every natural
    key gets surrogate key 0, as in a 64-bit collision (``keys`` looks sha256 up per call)."""
    import hashlib

    real = hashlib.sha256

    class SameFirstBytes:
        def __init__(self, data: bytes) -> None:
            self._digest = bytes(8) + real(data).digest()[8:]

        def digest(self) -> bytes:
            return self._digest

    monkeypatch.setattr(hashlib, "sha256", SameFirstBytes)


@pytest.mark.usefixtures("colliding_sha256")
def test_a_collision_within_one_batch_stops_the_run() -> None:
    hasher = keys.KeyHasher("patient", (None,))
    with pytest.raises(KeyCollision, match="share surrogate key 0: 'v1|7:patient|1:A'"):
        hasher.compute([pa.array(["A", "B"])])


@pytest.mark.usefixtures("colliding_sha256")
def test_two_natural_keys_with_one_surrogate_key_stop_the_run() -> None:
    hasher = keys.KeyHasher("patient", (None,))
    hasher.compute([pa.array(["A"])])  # two batches, each fine on its own
    hasher.compute([pa.array(["B"])])
    with pytest.raises(KeyCollision, match="share surrogate key 0"):
        hasher.finish()


def test_digests_read_each_value_of_any_string_array() -> None:
    import hashlib

    texts = ["", "a", "v1|7:patient|1:S", "é" * 100]
    for array in (
        pa.array(["skipped", *texts]).slice(1),  # an offset into the buffers
        pa.array(texts, pa.large_string()),
        pa.array([t.encode() for t in texts], pa.binary()),
    ):
        found = keys.digests(array)
        for value, text in zip(found, texts, strict=True):
            digest = hashlib.sha256(text.encode()).digest()
            assert int(value["key"]) == int.from_bytes(digest[:8], "big", signed=True)
            assert int(value["check"]) == int.from_bytes(digest[8:16], "big")
    with pytest.raises(ValueError, match="never null"):
        keys.digests(pa.array(["a", None]))


def test_the_collision_check_across_batches_settles_as_keys_accumulate() -> None:
    seen = keys._SeenKeys()
    big = np.arange(1 << 16, dtype=np.int64)
    assert seen.add(big, big.astype(np.uint64)) is None  # settled at once: as many as settled
    assert seen.add(big[:10], big[:10].astype(np.uint64)) is None  # the same keys again: fine
    assert len(seen) == 1 << 16
    checks = big[:3].astype(np.uint64)
    checks[2] ^= 1  # key 2 with another check: another natural key
    assert seen.add(big[:3], checks) is None  # waiting, not yet compared
    assert len(seen) == 1 << 16  # merging finds the clash ...
    assert seen.settle() == 2  # ... and every later call reports it
    assert seen.add(big[5:6], big[5:6].astype(np.uint64)) == 2


def test_a_run_whose_keys_are_all_missing_finishes() -> None:
    hasher = keys.KeyHasher("patient", (None, None))
    out = hasher.compute([pa.array([None, "S"], pa.string()), pa.array(["a", None])])
    assert out.to_pylist() == [None, None]
    hasher.finish()  # nothing to check: no key at all
    assert hasher.missing == 2
    assert len(hasher._seen) == 0


# ---- conversion -------------------------------------------------------------------------------


def test_convert_is_deterministic_and_orders_columns(tmp_path: Path) -> None:
    csv = tmp_path / "dm.csv"
    csv.write_bytes(b"EXTRA,USUBJID,STUDYID,AGE\nx,01-701-1015,CDISCPILOT01,63\ny,01,S,\n")
    contents = parse_contents(
        b"dataset,column,type\ndm,STUDYID,string\ndm,USUBJID,string\ndm,AGE,integer\ndm,SEX,string\n",
        "c",
    )
    config = StudyConfig()
    first = convert_file(csv, contents.for_dataset("dm"), config.keys, tmp_path / "a")
    second = convert_file(csv, contents.for_dataset("dm"), config.keys, tmp_path / "b")
    assert first.files[0].read_bytes() == second.files[0].read_bytes()
    assert [c.name for c in first.columns] == [
        "patient_sk",
        "studyid",
        "usubjid",
        "age",
        "sex",
        "extra",
    ]
    assert any("SEX" in w for w in first.warnings)
    assert any("EXTRA" in w for w in first.warnings)
    table = pq.read_table(first.files[0])
    assert table.column("sex").null_count == 2
    assert table.column("age").to_pylist() == [63, None]
    assert first.invalid_values["age"] == 0  # empty is NULL, not invalid


def test_convert_streams_in_row_groups(tmp_path: Path) -> None:
    csv = tmp_path / "big.csv"
    csv.write_text("A,B\n" + "".join(f"{i},{i % 7}\n" for i in range(5000)))
    result = convert_file(csv, None, {}, tmp_path / "out", block_size=4096, row_group=1000)
    meta = pq.ParquetFile(result.files[0]).metadata
    assert result.rows == 5000
    assert meta.num_row_groups == 5
    assert {meta.row_group(i).num_rows for i in range(5)} == {1000}


def test_columns_of_nearly_unique_values_get_no_dictionary(tmp_path: Path) -> None:
    # a sequence number and a time stamp never repeat: a dictionary only makes the file larger
    # and costs the writer a growing hash table; the columns that repeat keep theirs, in every
    # file and row group (the choice is made once, on the first row group)
    csv = tmp_path / "lb.csv"
    rows = "".join(
        f"S,S-{i // 40},{i},2014-05-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}\n"
        for i in range(3000)
    )
    csv.write_text("STUDYID,USUBJID,LBSEQ,LBDTC\n" + rows)
    contents = parse_contents(
        b"dataset,column,type\nlb,STUDYID,string\nlb,USUBJID,string\nlb,LBSEQ,integer\n"
        b"lb,LBDTC,string\n",
        "c",
    )
    result = convert_file(
        csv,
        contents.for_dataset("lb"),
        StudyConfig().keys,
        tmp_path / "out",
        block_size=4096,
        row_group=1000,
        rows_per_file=2000,
    )
    assert len(result.files) == 2
    for path in result.files:
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            by_name = {
                meta.schema.column(i).name: meta.row_group(group).column(i).encodings
                for i in range(meta.num_columns)
            }
            for name in ("patient_sk", "studyid", "usubjid"):
                assert "RLE_DICTIONARY" in by_name[name], name
            for name in ("lbseq", "lbdtc"):
                assert "RLE_DICTIONARY" not in by_name[name], name
    values = pa.concat_tables([pq.read_table(f) for f in result.files]).column("lbseq").to_pylist()
    assert values == list(range(3000))


@pytest.mark.usefixtures("colliding_sha256")
def test_a_key_collision_across_batches_leaves_no_file(tmp_path: Path) -> None:
    csv = tmp_path / "dm.csv"  # one subject per batch: no batch holds two natural keys
    csv.write_text("STUDYID,USUBJID\n" + "".join(f"S,{i // 100}\n" for i in range(400)))
    with pytest.raises(KeyCollision, match="share surrogate key 0"):
        convert_file(csv, None, StudyConfig().keys, tmp_path / "out", block_size=256)
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_invalid_values_fail_names_line_and_column(tmp_path: Path) -> None:
    csv = tmp_path / "dm.csv"
    csv.write_bytes(b"AGE\n1\n2\nold\n")
    contents = parse_contents(b"dataset,column,type\ndm,AGE,integer\n", "c")
    with pytest.raises(InputError) as err:
        convert_file(csv, contents.for_dataset("dm"), {}, tmp_path / "o", invalid_values="fail")
    assert err.value.as_dict()["line"] == 4
    assert err.value.as_dict()["column"] == "AGE"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"A,B\n1,2\n3\n", 3),
        (b'A,B\n1,2\n"3,4\n', 3),
        (b"A,A\n1,2\n", 1),
        (b"", 1),
    ],
)
def test_structural_errors(tmp_path: Path, data: bytes, line: int) -> None:
    csv = tmp_path / "x.csv"
    csv.write_bytes(data)
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/x.csv")
    assert err.value.as_dict()["file"] == "raw/x.csv"
    assert err.value.as_dict()["line"] == line
    assert not list((tmp_path / "o").glob("*.parquet"))


def test_enormous_field_is_an_error(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_bytes(b"A,B\n1," + b"x" * 20000 + b"\n")
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", block_size=4096)
    assert "longer than" in str(err.value.as_dict()["message"])


def test_long_field_within_the_limit_converts_and_pieces_keep_every_row(tmp_path: Path) -> None:
    # block_size 1 MiB: pieces of 1 MiB, parse blocks of 256 KiB; a 600 KB field straddles
    # a parse block (the piece is re-parsed as one block) but fits the 1 MiB limit
    big = "y" * 600_000
    lines = [f"{i},{big if i == 3 else i}" for i in range(3000)]
    lines += [f'{i},"quoted, with comma {i}"' for i in range(3000, 6000)]
    csv = tmp_path / "x.csv"
    csv.write_text("A,B\n" + "\n".join(lines))  # no final newline
    result = convert_file(csv, None, {}, tmp_path / "o", block_size=1 << 20)
    table = pq.read_table(result.files[0])
    assert result.rows == 6000
    assert table.column("a").to_pylist() == [str(i) for i in range(6000)]
    assert table.column("b")[3].as_py() == big
    assert table.column("b")[5999].as_py() == "quoted, with comma 5999"


# ---- config and plans -------------------------------------------------------------------------


def test_config_defaults_and_errors() -> None:
    assert parse_config(None).keys["visit"] == ("STUDYID", "USUBJID", "VISITNUM")
    config = parse_config(b"keys:\n  subject: [USUBJID]\ngate:\n  allow: [none, additive]\n")
    assert dict(config.keys) == {"subject": ("USUBJID",)}
    assert config.gate_allow == ("NONE", "ADDITIVE")
    with pytest.raises(InputError) as err:
        parse_config(b"keys: [1\n")
    assert err.value.as_dict()["file"] == "lakehook.yaml"
    with pytest.raises(InputError):
        parse_config(b"invalid_values: drop\n")


def _manifest(table: str, print_: str) -> TableManifest:
    return TableManifest(
        table,
        table.upper(),
        "c0",
        f"raw/{table.upper()}.csv",
        "x",
        "raw/contents.csv",
        "",
        "",
        "1",
        print_,
        (),
        (),
        0,
    )


def test_plan_processes_only_changed_and_removes_gone() -> None:
    config = StudyConfig()
    contents = parse_contents(
        b"dataset,column,type\ndm,AGE,integer\nsv,X,string\n", "raw/contents.csv"
    )
    raw = [
        ObjectInfo("raw/DM.csv", "dm1", 10),
        ObjectInfo("raw/SV.csv", "sv2", 10),
        ObjectInfo("raw/contents.csv", "c", 10),
        ObjectInfo("raw/sub/ignored.csv", "i", 1),
    ]
    current = {
        "dm": _manifest("dm", fingerprint("DM", "dm1", contents.for_dataset("DM"), config)),
        "sv": _manifest("sv", "old"),
        "ae": _manifest("ae", "old"),
    }
    plan = make_plan("r", "main", "h", "s", config, contents, raw, current)
    assert [t.table for t in plan.tasks] == ["sv"]
    assert plan.removed == ("ae",)
    assert plan.errors == ()
    assert plan.working_branch == working_branch("main", "s")


def test_plan_errors_for_collisions_and_undelivered_datasets() -> None:
    contents = parse_contents(b"dataset,column,type\nlb,X,string\n", "raw/contents.csv")
    raw = [ObjectInfo("raw/A-B.csv", "1", 1), ObjectInfo("raw/a_b.csv", "2", 1)]
    plan = make_plan("r", "main", "h", "s", StudyConfig(), contents, raw, {})
    assert plan.tasks == ()
    assert {e.get("file") for e in plan.errors} >= {"raw/A-B.csv", "raw/a_b.csv"}
    # a declared dataset with no CSV is a warning, not an error (contract §5 v1.1)
    assert not any(e.get("dataset") == "lb" for e in plan.errors)
    assert any("'lb'" in w and "does not exist" in w for w in plan.warnings)


def test_plan_warns_when_key_columns_differ_in_type() -> None:
    contents = parse_contents(
        b"dataset,column,type\ndm,VISITNUM,integer\nsv,VISITNUM,string\n", "raw/contents.csv"
    )
    plan = make_plan("r", "main", "h", "s", StudyConfig(), contents, [], {})
    assert any("VISITNUM" in w and "dm" in w and "sv" in w for w in plan.warnings)
