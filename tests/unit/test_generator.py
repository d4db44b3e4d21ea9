"""The synthetic study: deterministic, scalable, declared, and versioned as documented."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lakehook.settings import Settings
from pipeline.generator import generate_study, generate_wide_study, write_lab_csv
from pipeline.processing.contents import parse_contents
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore


def _header(data: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(data.decode())))


def test_same_arguments_same_bytes_and_sizes_scale() -> None:
    assert generate_study(50, 3) == generate_study(50, 3)
    assert generate_study(50, 3) != generate_study(50, 4)
    small, big = generate_study(40), generate_study(80)
    assert len(big["raw/visits.csv"]) > 1.8 * len(small["raw/visits.csv"])


def test_contents_declare_every_column_in_both_layouts() -> None:
    for layout in ("simple", "sas"):
        files = generate_study(30, layout=layout)
        contents = parse_contents(files["raw/contents.csv"], "raw/contents.csv")
        for path, data in files.items():
            if path == "raw/contents.csv":
                continue
            declared = contents.for_dataset(Path(path).stem)
            assert declared is not None
            assert [c.name for c in declared.columns] == _header(data)


def test_deliveries_differ_as_documented() -> None:
    one, two, three, four = (generate_study(30, delivery=d) for d in (1, 2, 3, 4))
    assert two["raw/patients.csv"].count(b"\n") > one["raw/patients.csv"].count(b"\n")
    assert "WEIGHT" in _header(three["raw/patients.csv"])
    assert "raw/vitals.csv" in three
    assert "raw/vitals.csv" not in two
    assert b"patients,AGE,integer" in three["raw/contents.csv"]
    assert b"patients,AGE,varchar" in four["raw/contents.csv"]


def test_lab_csv_and_wide_study(tmp_path: Path) -> None:
    size = write_lab_csv(tmp_path / "labs.csv", 1000)
    assert 80_000 < size < 130_000
    wide = generate_wide_study(5, 100)
    assert len(wide) == 6


def test_generated_study_processes_cleanly(tmp_path: Path) -> None:
    lakefs = FakeLakeFS()
    lakefs.create_repository("s", "local://s")
    for path, data in generate_study(30, layout="sas").items():
        lakefs.upload_object("s", "main", path, data)
    lakefs.commit("s", "main", "delivery 1", {})
    metastore = FakeMetastore()
    service = BranchService(
        Settings.load({}, None), lakefs, metastore, MemoryStatusStore(), workdir=tmp_path
    )
    status = service.sync_branch("s", "main")
    assert not [e for e in status.errors if e.get("stage") != "verify"]
    tables = {t.table: t for t in status.tables}
    assert set(tables) == {"patients", "sites", "visits", "labs", "ae"}
    assert all(sum(t.invalid_values.values()) == 0 for t in tables.values())
    assert [c for c, _ in tables["visits"].columns][:2] == ["patient_sk", "visit_sk"]
    assert tables["patients"].columns[0] == ("patient_sk", "bigint")
