"""Bounded work for any input (issue 11) and the value rules shared by tables and keys (§5 v1.1).

No timings here: the bounds are measured in ``bench/bench_bounds.py``. The tests below fail on
the old code by exceptions, wrong answers, or by a splitter that would take hours (the old
quadratic splitter is caught by counting the bytes it scans, not by a clock).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehook.errors import InputError
from lakehook.settings import Settings
from pipeline.processing import convert as convert_module
from pipeline.processing import keys
from pipeline.processing.convert import convert_file, read_header
from pipeline.processing.types import convert, parse_declared

# ---- 6. one parser per type: numbers of any size, real dates, shared with keys ---------------

HUGE = ["1E+100", "1e22", "1e999999999", "-1e999999999999999999", "9" * 5000, "1e-999999999"]


@pytest.mark.parametrize("text", HUGE)
def test_huge_numbers_are_invalid_decimals_not_exceptions(text: str) -> None:
    values, bad = convert(pa.array([text, "1.25"]), parse_declared("decimal(10,2)"))
    # 1e-999999999 has 999999999 places after the point: not rounded to 0, invalid
    assert values.to_pylist() == [None, Decimal("1.25")]
    assert bad == 1


@pytest.mark.parametrize("declared", ["double", "integer", "bigint", "decimal(10,2)"])
@pytest.mark.parametrize("text", HUGE)
def test_huge_numbers_as_key_parts_never_raise(declared: str, text: str) -> None:
    ctype = parse_declared(declared)
    table_value = convert(pa.array([text]), ctype)[0][0].as_py()
    part = keys.part(text, ctype)
    assert (part is None) == (table_value is None)
    hasher = keys.KeyHasher("visit", (None, ctype))
    out = hasher.compute([pa.array(["S1", "S1"]), pa.array([text, "1"])]).to_pylist()
    assert out[1] is not None
    assert (out[0] is None) == (table_value is None)


def test_1e22_is_a_valid_double_and_its_key_part_is_written_out() -> None:
    assert keys.part("1e22", parse_declared("double")) == "1" + "0" * 22
    assert keys.part("1e22", parse_declared("integer")) is None  # not an integer as written


@pytest.mark.parametrize("text", ["NaN", "nan", "Inf", "-Inf", "inf", "Infinity", "1e400"])
def test_non_finite_never_fits_double_whatever_the_batch(text: str) -> None:
    double = parse_declared("double")
    alone = convert(pa.array([text]), double)
    mixed = convert(pa.array([text, "abc"]), double)  # the old checked path
    assert alone[0].to_pylist() == [None]
    assert alone[1] == 1
    assert mixed[0].to_pylist() == [None, None]
    assert mixed[1] == 2
    assert keys.part(text, double) is None


@pytest.mark.parametrize("declared", ["integer", "bigint"])
@pytest.mark.parametrize("text", ["0x10", "0X1F", "0x0", "0x7fffffff"])
def test_hexadecimal_is_no_integer_whatever_the_batch(declared: str, text: str) -> None:
    """pyarrow's integer cast reads 0x10 as 16: a clean batch took that fast path, so the
    same text was 16 in one file, invalid in another, and always a missing key part."""
    ctype = parse_declared(declared)
    alone = convert(pa.array([text, "16"]), ctype)
    mixed = convert(pa.array([text, "16", "abc"]), ctype)  # the checked path
    assert alone[0].to_pylist() == [None, 16]
    assert alone[1] == 1
    assert mixed[0].to_pylist() == [None, 16, None]
    assert keys.part(text, ctype) is None


_FUZZ_ALPHABET = [*"0123456789+-.eExX _,dDfFnNaAiIT:\t", "0x", "inf", "nan", "\u0661", "\u00a0"]


@pytest.mark.parametrize(
    "declared",
    ["integer", "bigint", "double", "decimal(10,2)", "boolean", "date", "timestamp", "partialdate"],
)
def test_a_value_converts_the_same_alone_or_beside_an_invalid_one(declared: str) -> None:
    """The fast path (Arrow's cast of a clean batch) and the checked path (taken when anything
    in the batch is not castable) must agree on every value: random short texts over the
    characters numbers and dates are made of (this found 0x10 read as 16)."""
    rng = random.Random(declared)
    texts = {"".join(rng.choices(_FUZZ_ALPHABET, k=rng.randint(1, 6))) for _ in range(400)}
    ctype = parse_declared(declared)
    for text in sorted(texts):
        alone, _ = convert(pa.array([text]), ctype)
        mixed, _ = convert(pa.array([text, "not a value \x00"]), ctype)
        assert alone[0].as_py() == mixed[0].as_py(), text


def test_numbers_the_csv_reader_types_make_the_same_files_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV reader types declared numeric columns itself (``convert.reader_typed``, issue 15:
    one pass instead of text then a cast) until a value makes it refuse one, which is then read
    as text. Whatever the values, the Parquet files, invalid-value and null counts must be
    exactly what reading every column as text gives: clean pieces, random texts over the
    characters numbers are made of (fields quoted, so commas and spaces stay in them), an
    ``x`` in a piece (Arrow's reader takes ``0x10`` for 16), and a numeric key part (a key is
    made of the text as written, so that column is never typed)."""
    import csv as csvlib

    from pipeline.processing.contents import parse_contents
    from pipeline.processing.convert import plan_columns, reader_typed

    contents = parse_contents(
        b"dataset,column,type\nx,D,double\nx,I,integer\nx,B,bigint\nx,K,double\nx,T,text\n",
        "raw/contents.csv",
    ).for_dataset("x")
    keys = {"kk": ["K"]}
    header = ["D", "I", "B", "K", "T"]
    typed = reader_typed(plan_columns(header, contents, keys).columns)
    assert typed == {0: pa.float64(), 1: pa.int32(), 2: pa.int64()}  # never K, a key part
    rng = random.Random(15)

    def fuzz() -> str:
        return "".join(rng.choices(_FUZZ_ALPHABET, k=rng.randint(1, 6)))

    csv = tmp_path / "x.csv"
    with csv.open("w", newline="") as out:
        rows = csvlib.writer(out, quoting=csvlib.QUOTE_ALL)
        rows.writerow(header)
        for n in range(40_000):
            d, i, b = f"{rng.uniform(-1e6, 1e6):.4f}", str(rng.randint(-99, 99)), str(n)
            if 12_000 <= n < 12_400:  # invalid values: D read as text from this piece on
                d = fuzz()
            if 25_000 <= n < 25_400:  # (a piece with an x never types its integers)
                i, b = (fuzz().replace("x", "").replace("X", "") or "?" for _ in "ib")
            if n % 997 == 0:
                d, i = "", " 7 "
            text = "box" if 5_000 <= n < 5_100 else "t"  # an x: integers as text there
            if n == 5_050:
                i = "0x1F"  # 31 to Arrow's reader, an invalid value to the contract
            rows.writerow([d, i, b, str(rng.choice([1, 1.5, "01.50"])), text])
    chosen: list[frozenset[int]] = []
    real_options = convert_module._ReaderTypes.options

    def recorded(self: convert_module._ReaderTypes, chunk: bytes) -> Any:
        options = real_options(self, chunk)
        chosen.append(self._last)
        return options

    monkeypatch.setattr(convert_module._ReaderTypes, "options", recorded)
    typed_run = convert_file(csv, contents, keys, tmp_path / "typed", block_size=1 << 16)
    assert frozenset({0, 1, 2}) in chosen  # clean pieces were typed by the reader
    assert frozenset({0}) in chosen  # a piece with an x: its integers (I, B) as text
    assert chosen[-1] == frozenset()  # D, I and B were each refused once: text from then on
    monkeypatch.setattr(convert_module, "reader_typed", lambda _columns: {})
    text_run = convert_file(csv, contents, keys, tmp_path / "text", block_size=1 << 16)
    assert typed_run.invalid_values == text_run.invalid_values
    assert typed_run.invalid_values["d"] > 0
    assert typed_run.invalid_values["i"] > 0
    assert typed_run.null_counts == text_run.null_counts
    assert typed_run.null_keys == text_run.null_keys
    assert [f.read_bytes() for f in typed_run.files] == [f.read_bytes() for f in text_run.files]


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("12345678.12", True),
        ("123456789.1", False),  # 9 digits before the point, p - s = 8
        ("1.234", False),  # 3 places, scale 2: never rounded
        ("1.230", True),  # trailing zeros are not places
        ("-0.00", True),
        ("1e2", True),
        ("1e8", False),
    ],
)
def test_decimal_fits_exactly_or_not_at_all(text: str, fits: bool) -> None:
    ctype = parse_declared("decimal(10,2)")
    value = convert(pa.array([text]), ctype)[0][0].as_py()
    assert (value is not None) == fits
    if fits:
        assert value == Decimal(text)
    assert (keys.part(text, ctype) is not None) == fits


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2014-13", False),
        ("2014-00", False),
        ("2014-02-30", False),
        ("2013-02-29", False),
        ("2012-02-29", True),
        ("2014-04-31", False),
        ("2014---31", True),
        ("2014---32", False),
        ("2014---02", True),
        ("2014-07-02T24", False),
        ("2014-07-02T23:60", False),
        ("2014-07-02T23:59:60", False),
        ("2014-07-02T23:59:59", True),
        ("2014-07-02T11", True),
        ("--07-02", True),
        ("2014-07-02T-:30", True),
    ],
)
def test_partial_dates_have_real_parts(text: str, ok: bool) -> None:
    ctype = parse_declared("partialdate")
    assert (convert(pa.array([text]), ctype)[0][0].as_py() is not None) == ok
    assert (keys.part(text, ctype) is not None) == ok


@pytest.mark.parametrize("declared", ["date", "timestamp"])
@pytest.mark.parametrize("text", ["20140702", "2014-W27-3", "2014-W27", "2014183", "02JUL2014"])
def test_dates_only_iso_and_sas_forms_in_tables_and_keys(declared: str, text: str) -> None:
    ctype = parse_declared(declared)
    assert convert(pa.array([text]), ctype)[0][0].as_py() is None
    assert keys.part(text, ctype) is None
    sas = parse_declared(declared, sas=True)
    expect_sas = text == "02JUL2014"
    assert (convert(pa.array([text]), sas)[0][0].as_py() is not None) == expect_sas
    assert (keys.part(text, sas) is not None) == expect_sas


def test_date_key_parts_come_from_the_parsed_value() -> None:
    sas = parse_declared("date", sas=True)
    assert keys.part("02jul2014", sas) == "2014-07-02"
    assert keys.part(" 2014-07-02 ", parse_declared("date")) == "2014-07-02"
    # a date column holds dates: a date-time is not one, in the table or in the key
    assert convert(pa.array(["2014-07-02T10:00"]), parse_declared("date"))[0][0].as_py() is None
    assert keys.part("2014-07-02T10:00", parse_declared("date")) is None
    ts = parse_declared("timestamp")
    assert keys.part("2014-07-02T10", ts) == "2014-07-02T10:00:00"
    assert convert(pa.array(["2014-07-02T10", "x"]), ts)[0][0].as_py() == dt.datetime(
        2014, 7, 2, 10
    )


def test_invalid_key_part_is_a_missing_part_consistent_with_the_table(tmp_path: Path) -> None:
    from pipeline.processing.contents import parse_contents

    contents = parse_contents(
        b"dataset,column,type\nvs,STUDYID,string\nvs,USUBJID,string\nvs,VISITNUM,double\n"
        b'vs,AMOUNT,"decimal(10,2)"\n',
        "raw/contents.csv",
    )
    csv = tmp_path / "vs.csv"
    csv.write_text(
        "STUDYID,USUBJID,VISITNUM,AMOUNT\n"
        "S,1,1,1E+100\n"
        "S,2,NaN,1.5\n"
        "S,3,1e999999999,1.234\n"
        "S,4,2,2.50\n"
    )
    import pyarrow.parquet as pq

    result = convert_file(
        csv,
        contents.for_dataset("vs"),
        {"visit": ["STUDYID", "USUBJID", "VISITNUM"]},
        tmp_path / "o",
    )
    table = pq.read_table(result.files[0])
    assert table.column("visitnum").to_pylist() == [1.0, None, None, 2.0]
    assert table.column("amount").to_pylist() == [None, Decimal("1.50"), None, Decimal("2.50")]
    sk = table.column("visit_sk").to_pylist()
    assert [v is None for v in sk] == [False, True, True, False]
    assert result.null_keys == {"visit": 2}
    assert result.invalid_values["visitnum"] == 2
    assert result.invalid_values["amount"] == 2


# ---- 1. a linear record splitter ------------------------------------------------------------


def _reference_ends(data: bytes, inside: bool) -> tuple[int, int, bool]:
    first = last = -1
    for i, byte in enumerate(data):
        if byte == 0x22:
            inside = not inside
        elif byte == 0x0A and not inside:
            first = i if first == -1 else first
            last = i
    return first, last, inside


def test_record_ends_agree_with_a_byte_by_byte_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    monkeypatch.setattr(convert_module, "_WINDOW", 7)  # many windows per piece
    rng = random.Random(11)
    for _ in range(2000):
        data = bytes(rng.choice(b'ab"\n,') for _ in range(rng.randint(0, 50)))
        inside = rng.random() < 0.5
        first, last, end = _reference_ends(data, inside)
        assert convert_module.first_record_end(data, inside) == (first, end)
        assert convert_module.last_record_end(data, inside) == (last, end)


@pytest.mark.timeout(120)  # a hang guard, not a timing: the old splitter took hours here
def test_quadratic_bait_of_16_mib_ends_with_a_clear_error(tmp_path: Path) -> None:
    csv = tmp_path / "bait.csv"
    csv.write_bytes(b'A\n"' + b"\n" * (16 << 20))
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/bait.csv")
    assert err.value.file == "raw/bait.csv"
    assert err.value.line == 2
    assert "quote" in str(err.value)


def test_quadratic_bait_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    csv = tmp_path / "bait.csv"
    csv.write_bytes(b'A\n"' + b"\n" * (1 << 20))
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/bait.csv", block_size=1 << 18)
    assert err.value.file == "raw/bait.csv"
    assert err.value.line == 2


def test_header_with_quoted_newlines_is_found_in_one_pass(tmp_path: Path) -> None:
    csv = tmp_path / "h.csv"
    csv.write_bytes(b'"A\nB",C\n1,2\n')
    assert read_header(csv, "raw/h.csv") == ["A\nB", "C"]
    longer = tmp_path / "long.csv"
    longer.write_bytes(b'"A' + b"\n" * (convert_module.BLOCK_SIZE + 10))
    with pytest.raises(InputError, match="longer than"):
        read_header(longer, "raw/long.csv")


# ---- 2. the column cap ----------------------------------------------------------------------


def test_column_cap_setting_default_and_validation() -> None:
    assert Settings().max_columns == 4096
    assert Settings.load({"LAKEHOOK_MAX_COLUMNS": "10"}).max_columns == 10
    from lakehook.errors import ConfigError

    with pytest.raises(ConfigError, match="LAKEHOOK_MAX_COLUMNS"):
        Settings.load({"LAKEHOOK_MAX_COLUMNS": "0"})


def test_too_many_columns_is_an_input_error_naming_file_and_setting(tmp_path: Path) -> None:
    csv = tmp_path / "wide.csv"
    csv.write_text(",".join(f"C{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n")
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/wide.csv")
    assert err.value.file == "raw/wide.csv"
    assert "max_columns" in str(err.value)
    assert "5000" in str(err.value)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    assert len(convert_file(csv, None, {}, tmp_path / "p", max_columns=5000).columns) == 5000


# ---- 3. error paths read a bounded window ---------------------------------------------------


def test_error_paths_never_read_a_whole_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long line with the wrong field count: the error is found reading bounded blocks."""
    csv = tmp_path / "long.csv"
    csv.write_bytes(b"A,B\n1,2\n" + b"x" * (3 << 20) + b"\n")  # one field where there are two
    reads: list[int] = []
    real_open = Path.open

    def watched_open(self: Path, mode: str = "r", *args: object, **kw: object) -> object:
        handle = real_open(self, mode, *args, **kw)  # type: ignore[call-overload]
        if self == csv:
            original_read = handle.read

            def read(size: int = -1) -> object:
                reads.append(size)
                return original_read(size)

            handle.read = read
            if "b" not in mode:
                raise AssertionError("error paths read bytes, never decoded lines")
        return handle

    monkeypatch.setattr(Path, "open", watched_open)
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/long.csv", block_size=1 << 20)
    assert err.value.line == 3
    assert reads
    assert all(0 < size <= 1 << 20 for size in reads)


def test_encoding_error_found_in_blocks_names_line_and_column(tmp_path: Path) -> None:
    csv = tmp_path / "enc.csv"
    body = b"A,B\n" + b"1,2\n" * 40_000 + b"3,\xff\n"
    csv.write_bytes(body)
    with pytest.raises(InputError) as err:
        convert_file(csv, None, {}, tmp_path / "o", display_path="raw/enc.csv")
    assert err.value.line == 40_002
    assert err.value.column == "3"
    assert "UTF-8" in str(err.value)


def test_invalid_value_message_is_cut(tmp_path: Path) -> None:
    from pipeline.processing.contents import parse_contents

    contents = parse_contents(b"dataset,column,type\nx,A,integer\n", "raw/contents.csv")
    csv = tmp_path / "x.csv"
    csv.write_bytes(b"A\n" + b"z" * 100_000 + b"\n")
    with pytest.raises(InputError) as err:
        convert_file(csv, contents.for_dataset("x"), {}, tmp_path / "o", invalid_values="fail")
    assert len(str(err.value)) < 500


# ---- 5. lakehook.yaml hardening -------------------------------------------------------------

ALIAS_BOMB = (
    b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    b"keys: {patient: *d}\n"
)


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (ALIAS_BOMB, None, "aliases"),
        (b"keys: &k {patient: [USUBJID]}\n", None, "anchors"),
        (b"version: 1\n# " + b"x" * (64 << 10) + b"\n", None, "more than the limit"),
        (b"x: " + b"[" * 5000 + b"\n", None, "nested too deeply"),
        (b"version: true\n", "version", "use version: 1"),
        (b"version: 2\n", "version", "use version: 1"),
        (b"keys: {patient: USUBJID}\n", "keys.patient", "list of column names"),
        (b"keys: {patient: [1, 2]}\n", "keys.patient", "list of column names"),
        (b"keys: {patient: []}\n", "keys.patient", "names no columns"),
        (b"keys: [STUDYID]\n", "keys", "must be a mapping"),
        (b"invalid_values: [report]\n", "invalid_values", "report or fail"),
        (b"invalid_values: drop\n", "invalid_values", "report or fail"),
        (b"gate: [main]\n", "gate", "must be a mapping"),
        (b"gate: {protected: main}\n", "gate.protected", "list of names"),
        (b"gate: {allow: [NONE, {x: 1}]}\n", "gate.allow", "list of names"),
        (b"gate: {allow: [NONE, EVERYTHING]}\n", "gate.allow", "unknown drift classes"),
        (b"engine: spark\n", "engine", "pyarrow, trino or auto"),
        (b"engine: [trino]\n", "engine", "pyarrow, trino or auto"),
        (b"raw: ../other/\n", "raw", "folder of the repository"),
        (b"contents: 7\n", "contents", "path in the repository"),
        (b"- version\n", None, "top level must be a mapping"),
    ],
)
def test_bad_config_is_an_input_error_naming_the_key(
    data: bytes, key: str | None, words: str
) -> None:
    from pipeline.processing.config import parse_config

    with pytest.raises(InputError) as err:
        parse_config(data)
    assert err.value.file == "lakehook.yaml"
    assert err.value.column == key
    assert words in str(err.value)
    assert err.value.hint


def test_good_config_types_and_warnings_for_unknown_keys() -> None:
    from pipeline.processing.config import parse_config

    config = parse_config(
        b"version: 1\nengine: trino\nkeys: {subject: [USUBJID]}\n"
        b"gate: {protected: [main, release], allow: [none], colour: red}\nfoo: 1\n"
    )
    assert config.engine == "trino"
    assert dict(config.keys) == {"subject": ("USUBJID",)}
    assert config.gate_protected == ("main", "release")
    assert config.gate_allow == ("NONE",)
    assert any("'foo'" in w for w in config.warnings)
    assert any("gate.colour" in w for w in config.warnings)


def test_config_too_large_is_refused_from_its_size_without_reading() -> None:
    from pipeline.processing.config import load_config
    from tests.fakes.lakefs import FakeLakeFS

    lakefs = FakeLakeFS()
    lakefs.create_repository("r", "local://r")
    lakefs.upload_object("r", "main", "lakehook.yaml", b"#" * (1 << 20))
    lakefs.read_object = None  # type: ignore[method-assign,assignment]
    with pytest.raises(InputError, match="more than the limit"):
        load_config(lakefs, "r", "main")


# ---- 7. names -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["raw/.csv", "raw/-.csv", "raw/\u00e9\u00e8.csv", "raw/ .csv"])
def test_file_names_that_give_no_table_name_are_an_error_for_that_file(path: str) -> None:
    from pipeline.ports import ObjectInfo
    from pipeline.processing.config import StudyConfig
    from pipeline.processing.plan import make_plan

    raw = [ObjectInfo(path, "1", 1), ObjectInfo("raw/dm.csv", "2", 1)]
    plan = make_plan("r", "main", "h", "s", StudyConfig(), None, raw, {})
    assert [t.table for t in plan.tasks] == ["dm"]
    (error,) = plan.errors
    assert error["file"] == path
    assert "rename" in error["hint"]


def test_contents_file_with_too_many_columns_is_an_error_naming_the_setting() -> None:
    from pipeline.processing.contents import parse_contents

    wide_row = b"dataset,column,type\n" + b",".join([b"x"] * 5000) + b"\n"
    with pytest.raises(InputError) as err:
        parse_contents(wide_row, "raw/contents.csv")
    assert err.value.line == 2
    assert "max_columns" in str(err.value)
    many = b"dataset,column,type\n" + b"".join(b"wide,C%d,string\n" % i for i in range(5000))
    contents = parse_contents(many, "raw/contents.csv")
    wide = contents.for_dataset("wide")
    assert wide is not None
    (problem,) = wide.errors("raw/contents.csv")
    assert "5000 columns" in str(problem)
    assert "max_columns" in str(problem)
    assert wide.errors("raw/contents.csv", max_columns=5000) == []


def _claim_in_process(path: str, ref: str, barrier: object, out: object) -> None:
    from pipeline import naming
    from server.store import Database, SqliteStatusStore

    store = SqliteStatusStore(Database(Path(path)))
    name = naming.schema_name("s", ref, store.schema_mapping())  # read before either writes
    barrier.wait()  # type: ignore[attr-defined]
    out.put((ref, store.save_schema_name("s", "branch", ref, name)))  # type: ignore[attr-defined]


def test_two_processes_racing_for_one_schema_name_get_two(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    out = context.Queue()
    path = str(tmp_path / "jobs.sqlite3")
    from server.store import Database, SqliteStatusStore

    SqliteStatusStore(Database(Path(path)))  # the schema exists before the race
    workers = [
        context.Process(target=_claim_in_process, args=(path, ref, barrier, out))
        for ref in ("feature-1", "feature_1")
    ]
    for worker in workers:
        worker.start()
    results = dict(out.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert len(set(results.values())) == 2
    assert "s_feature_1" in results.values()
    stored = SqliteStatusStore(Database(Path(path))).schema_mapping()
    assert {stored[("s", "branch", ref)] for ref in results} == set(results.values())


def test_a_new_state_database_opened_while_another_connection_writes_waits(
    tmp_path: Path,
) -> None:
    # two services opening a new state directory together: SQLite refuses the switch to WAL at
    # once ("database is locked", no busy handler) while the other writes; it used to fail the
    # service (and made the race test below flaky), it now waits as every other write does
    import sqlite3
    import threading

    from server.store import Database

    path = tmp_path / "jobs.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE held (a)")
    release = threading.Timer(0.2, other.execute, args=("COMMIT",))  # the other writer's work
    release.start()
    db = Database(path)
    release.join()
    assert db.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_services_racing_use_the_name_the_store_kept(tmp_path: Path) -> None:
    import threading

    from server.store import Database, SqliteStatusStore

    path = tmp_path / "jobs.sqlite3"
    barrier = threading.Barrier(2)
    names: dict[str, str] = {}

    class Racing(SqliteStatusStore):
        def schema_mapping(self) -> dict[tuple[str, str, str], str]:
            mapping = super().schema_mapping()
            barrier.wait(timeout=30)  # both have read the mapping before either claims
            return mapping

    def claim(ref: str) -> None:
        from pipeline.service import BranchService
        from tests.fakes.lakefs import FakeLakeFS
        from tests.fakes.metastore import FakeMetastore

        service = BranchService(
            settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path)}, None),
            lakefs=FakeLakeFS(),
            metastore=FakeMetastore(),
            store=Racing(Database(path)),
        )
        names[ref] = service.schema_for("s", ref)

    threads = [threading.Thread(target=claim, args=(r,)) for r in ("feature-1", "feature_1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(set(names.values())) == 2


def test_a_ref_with_a_slash_is_refused_with_a_status_error(tmp_path: Path) -> None:
    from lakehook.errors import InvalidEvent
    from pipeline import naming
    from pipeline.service import BranchService
    from tests.fakes.lakefs import FakeLakeFS
    from tests.fakes.metastore import FakeMetastore
    from tests.fakes.status import MemoryStatusStore

    lakefs = FakeLakeFS()
    lakefs.create_repository("study", "local://study")
    lakefs.upload_object("study", "main", "raw/dm.csv", b"A\n1\n")
    lakefs.commit("study", "main", "d", {})
    lakefs.create_tag("study", "release/1.0", "main")
    store = MemoryStatusStore()
    metastore = FakeMetastore()
    service = BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path)}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=store,
        workdir=tmp_path / "w",
    )
    with pytest.raises(InvalidEvent, match="one path element"):
        service.sync_tag("study", "release/1.0")
    status = store.get_status("study", "release/1.0", "tag")
    assert status is not None
    assert status.state == "failed"
    assert "rename" in status.errors[0]["hint"]
    assert metastore.list_schemas() == []
    with pytest.raises(ValueError, match="one path element"):
        naming.table_location("study", "release/1.0", "dm")


# ---- 4. verification reads Parquet footers only ---------------------------------------------


def test_verification_reads_footers_not_whole_files(tmp_path: Path) -> None:
    import io

    import pyarrow.parquet as pq

    from pipeline.metastore.verify import check_files
    from tests.fakes.lakefs import FakeLakeFS
    from tests.fakes.metastore import make_manifest

    rows = 200_000
    table = pa.table({"a": pa.array([f"value-{i:09d}-{i * 7919 % 1000003}" for i in range(rows)])})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none", use_dictionary=False)
    data = sink.getvalue()
    assert len(data) > 4 << 20
    lakefs = FakeLakeFS()
    lakefs.create_repository("r", "local://r")
    lakefs.upload_object("r", "main", "tables/t/part-00000.parquet", data)
    whole_reads: list[str] = []
    real_read = lakefs.read_object

    def read_object(repo: str, ref: str, path: str) -> bytes:
        if path.endswith(".parquet"):
            whole_reads.append(path)
        return real_read(repo, ref, path)

    lakefs.read_object = read_object  # type: ignore[method-assign]
    manifest = make_manifest(
        "t", [("a", "varchar")], rows=rows, files=("tables/t/part-00000.parquet",)
    )
    assert check_files(lakefs, "r", "main", manifest) == []
    assert whole_reads == []
    assert 0 < lakefs.bytes_ranged <= 256 << 10
    from dataclasses import replace

    wrong = replace(manifest, rows=rows + 1)
    (problem,) = check_files(lakefs, "r", "main", wrong)
    assert problem.what == "parquet row count differs"


def test_iso_dates_are_checked_as_strftime_would_check_them() -> None:
    # _strict_date formats ISO dates with Arrow's date cast instead of strftime (faster); both
    # must accept and refuse exactly the same texts
    import random

    import pyarrow.compute as pc

    from pipeline.processing import types as types_module

    rng = random.Random(3)
    texts = ["0000-01-01", "0999-12-31", "9999-12-31", "2014-02-29", "2016-02-29", "1900-02-29"]
    texts += ["2014-1-5", " 2014-01-05", "+2014-01-05", "12345-01-01", "2014-13-01", "2014-01-00"]
    texts += [
        f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
        for _ in range(3000)
    ]
    source = pa.array(texts)
    parsed = pc.strptime(source, "%Y-%m-%d", "s", error_is_null=True)
    same = pc.equal(pc.utf8_upper(pc.strftime(parsed, "%Y-%m-%d")), pc.utf8_upper(source))
    reference = pc.if_else(same, parsed, pa.scalar(None, parsed.type))
    assert types_module._strict_date(source, "%Y-%m-%d").equals(reference)


@pytest.mark.parametrize("block_size", [1 << 16, 64])
def test_a_byte_order_mark_starting_a_data_row_is_data(tmp_path: Path, block_size: int) -> None:
    """pyarrow drops a BOM at the start of each buffer it reads, and lakehook hands it one piece
    of the file at a time: U+FEFF opening the first data row (or any piece) was silently lost,
    while the Trino engine and every other row kept it (found by a differential fuzz against
    Python's csv module)."""
    rows = ["\ufeffx,y", "a,b", "\ufeffc,d"] * 3
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeffh1,h2\n" + "\n".join(rows) + "\n").encode("utf-8"))
    result = convert_file(path, None, {}, tmp_path / "out", block_size=block_size)
    table = pa.concat_tables([pq.read_table(f) for f in result.files])
    assert table.column("h1").to_pylist() == [r.split(",")[0] for r in rows]
