"""The hostile-input corpus (issue 11): files a careless or hostile person can commit.

Table-driven: each ``Case`` is a set of files committed on top of a good first delivery, and
what must come of it -- the clear error (file, line or key, words of the message, a hint), or
that it processes. Every case runs through ``BranchService`` on the fakes and checks that

* the error names the file and the line or key, and says what to do (a hint);
* the other datasets proceed: ``AE.csv``, good and new in the same commit, is processed and
  registered (except where the failing file is the study's own config or contents file, which
  stops the whole commit: then the first delivery's tables stay as they were);
* nothing is half-registered: the metastore holds exactly the tables with a manifest at the
  head, each with the manifest's columns, and no table of the hostile dataset.

To add a case, append a ``Case`` to ``CASES`` (another engineer's webhook and SQL cases go in
their own list below and are run the same way). Large inputs stay small here; their full-size
versions are benchmarks (``bench/bench_bounds.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakehook.settings import Settings
from pipeline.model import RefStatus, TableManifest
from pipeline.service import BranchService
from tests.fakes.lakefs import FakeLakeFS
from tests.fakes.metastore import FakeMetastore
from tests.fakes.status import MemoryStatusStore

REPO = "study"
GOOD_CONTENTS = (
    b"dataset,column,type\n"
    b"dm,STUDYID,string\ndm,USUBJID,string\ndm,AGE,integer\n"
    b"ae,STUDYID,string\nae,USUBJID,string\nae,AESEQ,integer\n"
)
DM = b"STUDYID,USUBJID,AGE\nS1,01-001,63\nS1,01-002,70\n"
AE = b"STUDYID,USUBJID,AESEQ\nS1,01-001,1\nS1,01-001,2\n"

Data = bytes | Callable[[], bytes]


@dataclass(frozen=True)
class Case:
    """One hostile commit and what must come of it."""

    id: str
    files: Mapping[str, Data]  # committed on top of the first delivery (DM + contents)
    file: str | None  # the file the error names; None: no error expected
    line: int | None = None  # the line the error names
    key: str | None = None  # or the key/column it names
    words: str = ""  # words of the message (or of a warning when file is None)
    whole_commit: bool = False  # the study's config/contents is bad: nothing is processed
    tables: frozenset[str] = field(default_factory=frozenset)  # extra tables that must exist


def contents_with(*rows: bytes) -> bytes:
    return GOOD_CONTENTS + b"".join(r + b"\n" for r in rows)


def wide_header(columns: int) -> bytes:
    return b",".join(b"C%d" % i for i in range(columns)) + b"\n" + b"1" * 1 + b"\n"


ALIAS_BOMB = (
    b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    b"keys: {patient: *g}\n"
)
INJECTION = b"varchar) COMMENT 'x' WITH (external_location = 's3a://other/main/tables/dm/') /*"

CASES: list[Case] = [
    # ---- raw CSVs: structure ---------------------------------------------------------------
    Case("ragged-short-row", {"raw/X.csv": b"A,B\n1,2\n3\n"}, "raw/X.csv", 3, words="fields"),
    Case("ragged-long-row", {"raw/X.csv": b"A,B\n1,2,3\n"}, "raw/X.csv", 2, words="fields"),
    Case("unterminated-quote", {"raw/X.csv": b'A,B\n1,"2\n3,4\n'}, "raw/X.csv", 2, words="quote"),
    Case("not-utf8-value", {"raw/X.csv": b"A,B\n1,\xff\n"}, "raw/X.csv", 2, words="UTF-8"),
    Case("latin1-header", {"raw/X.csv": b"A\xe9,B\n1,2\n"}, "raw/X.csv", 1, words="UTF-8"),
    Case("bom-only", {"raw/X.csv": b"\xef\xbb\xbf"}, "raw/X.csv", 1, words="empty file"),
    Case("empty-file", {"raw/X.csv": b""}, "raw/X.csv", 1, words="empty file"),
    Case("blank-first-line", {"raw/X.csv": b"\nA\n1\n"}, "raw/X.csv", 1, words="first line"),
    Case("empty-column-name", {"raw/X.csv": b"A,,C\n1,2,3\n"}, "raw/X.csv", 1, words="no name"),
    Case("duplicate-columns", {"raw/X.csv": b"A-B,a_b\n1,2\n"}, "raw/X.csv", 1, words="both"),
    Case(
        "huge-field",
        {"raw/X.csv": lambda: b"A,B\n1," + b"x" * (17 << 20) + b"\n"},
        "raw/X.csv",
        2,
        words="longer than",
    ),
    Case(
        "100k-columns",
        {"raw/X.csv": lambda: wide_header(100_000)},
        "raw/X.csv",
        1,
        words="max_columns",
    ),
    Case(
        "quadratic-splitter-bait",
        {"raw/X.csv": lambda: b'A\n"' + b"\n" * (2 << 20)},
        "raw/X.csv",
        2,
        words="quote",
    ),
    Case(
        "one-long-line",
        {"raw/X.csv": lambda: b"A" * (17 << 20)},
        "raw/X.csv",
        1,
        words="header row is longer",
    ),
    Case(
        "header-quote-never-closed",
        {"raw/X.csv": lambda: b'"A\n' + b"1\n" * 1000},
        "raw/X.csv",
        1,
        words="header",
    ),
    Case(
        "bom-twice", {"raw/X.csv": b"\xef\xbb\xbf\xef\xbb\xbfA\n1\n"}, None, tables=frozenset({"x"})
    ),
    Case("bom-inside", {"raw/X.csv": b"A,B\n\xef\xbb\xbf1,2\n"}, None, tables=frozenset({"x"})),
    Case("nul-bytes", {"raw/X.csv": b"A,B\n1,\x00\x00\n"}, None, tables=frozenset({"x"})),
    Case("crlf", {"raw/X.csv": b"A,B\r\n1,2\r\n"}, None, tables=frozenset({"x"})),
    Case("header-only", {"raw/X.csv": b"A,B\n"}, None, tables=frozenset({"x"})),
    Case(
        "huge-numbers-in-typed-columns",
        {
            "raw/contents.csv": contents_with(
                b'x,A,"decimal(10,2)"', b"x,B,double", b"x,C,integer", b"x,D,partialdate"
            ),
            "raw/X.csv": b"A,B,C,D\n1E+100,1e999999999,1e22,2014-13\n1e-999999999,NaN,9" * 1
            + b"0" * 40
            + b",2014-02-30\n",
        },
        None,
        tables=frozenset({"x"}),
    ),
    Case(
        "invalid-value-with-fail",
        {
            "lakehook.yaml": b"invalid_values: fail\n",
            "raw/contents.csv": contents_with(b"x,A,integer"),
            "raw/X.csv": b"A\n1\n" + b"z" * 100_000 + b"\n",
        },
        "raw/X.csv",
        3,
        words="invalid_values",
    ),
    # ---- contents files ----------------------------------------------------------------------
    Case(
        "unknown-type",
        {"raw/contents.csv": contents_with(b"x,A,int8"), "raw/X.csv": b"A\n1\n"},
        "raw/contents.csv",
        8,
        words="unknown type",
    ),
    Case(
        "injection-looking-type",
        {
            "raw/contents.csv": contents_with(b'x,A,"' + INJECTION + b'"'),
            "raw/X.csv": b"A\n1\n",
        },
        "raw/contents.csv",
        8,
        words="unknown type",
    ),
    Case(
        "decimal-precision-out-of-range",
        {"raw/contents.csv": contents_with(b'x,A,"decimal(99,2)"'), "raw/X.csv": b"A\n1\n"},
        "raw/contents.csv",
        8,
        words="unknown type",
    ),
    Case(
        "column-declared-twice",
        {"raw/contents.csv": contents_with(b"x,A,string", b"x,a,integer"), "raw/X.csv": b"A\n1\n"},
        "raw/contents.csv",
        9,
        words="declared twice",
    ),
    Case(
        "dataset-declaring-5000-columns",
        {
            "raw/contents.csv": lambda: (
                GOOD_CONTENTS + b"".join(b"x,C%d,string\n" % i for i in range(5000))
            ),
            "raw/X.csv": b"C0\n1\n",
        },
        "raw/contents.csv",
        8,
        words="max_columns",
    ),
    Case(
        "contents-row-of-5000-fields",
        {"raw/contents.csv": lambda: GOOD_CONTENTS + b",".join([b"x"] * 5000) + b"\n"},
        "raw/contents.csv",
        8,
        words="max_columns",
        whole_commit=True,
    ),
    Case(
        "empty-contents",
        {"raw/contents.csv": b""},
        "raw/contents.csv",
        1,
        words="empty contents",
        whole_commit=True,
    ),
    Case(
        "contents-neither-layout",
        {"raw/contents.csv": b"name,kind\nA,string\n"},
        "raw/contents.csv",
        1,
        words="neither layout",
        whole_commit=True,
    ),
    Case(
        "contents-not-utf8",
        {"raw/contents.csv": GOOD_CONTENTS + b"x,\xff,string\n"},
        "raw/contents.csv",
        8,
        words="UTF-8",
        whole_commit=True,
    ),
    Case(
        "sas-varnum-not-a-number",
        {"raw/contents.csv": b"MEMNAME,NAME,TYPE,VARNUM\nDM,AGE,1,first\n"},
        "raw/contents.csv",
        2,
        key="VARNUM",
        words="not a number",
        whole_commit=True,
    ),
    Case(
        "declared-dataset-without-csv",
        {"raw/contents.csv": contents_with(b"lb,LBTEST,string")},
        None,
        words="does not exist",
    ),
    # ---- lakehook.yaml -----------------------------------------------------------------------
    Case(
        "yaml-alias-bomb",
        {"lakehook.yaml": ALIAS_BOMB},
        "lakehook.yaml",
        1,
        words="aliases",
        whole_commit=True,
    ),
    Case(
        "yaml-1-mib",
        {"lakehook.yaml": lambda: b"# " + b"x" * (1 << 20) + b"\n"},
        "lakehook.yaml",
        words="more than the limit",
        whole_commit=True,
    ),
    Case(
        "yaml-keys-wrong-type",
        {"lakehook.yaml": b"keys:\n  patient: USUBJID\n"},
        "lakehook.yaml",
        key="keys.patient",
        words="must be a list of names",
        whole_commit=True,
    ),
    Case(
        "yaml-gate-allow-unknown",
        {"lakehook.yaml": b"gate:\n  allow: [NONE, ANYTHING]\n"},
        "lakehook.yaml",
        key="gate.allow",
        words="unknown drift classes",
        whole_commit=True,
    ),
    Case(
        "yaml-gate-protected-not-a-list",
        {"lakehook.yaml": b"gate: {protected: main}\n"},
        "lakehook.yaml",
        key="gate.protected",
        words="list of names",
        whole_commit=True,
    ),
    Case(
        "yaml-engine",
        {"lakehook.yaml": b"engine: spark\n"},
        "lakehook.yaml",
        key="engine",
        words="pyarrow, trino or auto",
        whole_commit=True,
    ),
    Case(
        "yaml-invalid-values",
        {"lakehook.yaml": b"invalid_values: {drop: true}\n"},
        "lakehook.yaml",
        key="invalid_values",
        words="report or fail",
        whole_commit=True,
    ),
    Case(
        "yaml-version",
        {"lakehook.yaml": b"version: 2\n"},
        "lakehook.yaml",
        key="version",
        words="not supported",
        whole_commit=True,
    ),
    Case(
        "yaml-deep-nesting",
        {"lakehook.yaml": b"x: " + b"[" * 10_000 + b"\n"},
        "lakehook.yaml",
        words="nested too deeply",
        whole_commit=True,
    ),
    Case(
        "yaml-not-utf8",
        {"lakehook.yaml": b"version: 1\nraw: \xff\n"},
        "lakehook.yaml",
        words="UTF-8",
        whole_commit=True,
    ),
    Case(
        "yaml-raw-escapes-repository",
        {"lakehook.yaml": b"raw: ../../other/\n"},
        "lakehook.yaml",
        key="raw",
        words="folder of the repository",
        whole_commit=True,
    ),
    Case("yaml-unknown-keys", {"lakehook.yaml": b"colour: red\n"}, None, words="unknown key"),
    # ---- names ---------------------------------------------------------------------------------
    Case("empty-stem", {"raw/.csv": b"A\n1\n"}, "raw/.csv", words="no table name"),
    Case("stem-of-dots", {"raw/..csv": b"A\n1\n"}, "raw/..csv", words="no table name"),
    Case("stem-of-symbols", {"raw/-+.csv": b"A\n1\n"}, "raw/-+.csv", words="no table name"),
    Case(
        "two-files-one-table",
        {"raw/A-B.csv": b"A\n1\n", "raw/a_b.csv": b"A\n2\n"},
        "raw/A-B.csv",
        words="all become table",
    ),
    Case(
        "quotes-in-dataset-name",
        {'raw/it\'s "q".csv': b"A\n1\n"},
        None,
        tables=frozenset({"it_s__q_"}),
    ),
    Case(
        "unicode-dataset-name",
        {"raw/d\u00e9.csv": b"A\n1\n"},
        None,
        tables=frozenset({"d_"}),
    ),
    Case(
        "hostile-column-names",
        {"raw/X.csv": b'"a""b",c/d,"e\';DROP TABLE dm;--",\xc3\xa9t\xc3\xa9\n1,2,3,4\n'},
        None,
        tables=frozenset({"x"}),
    ),
    Case("nested-folder-is-not-a-dataset", {"raw/sub/X.csv": b"A\n1\n"}, None),
]


class RowCountingMetastore(FakeMetastore):
    """The fake metastore whose probe counts the rows of the Parquet files at the location,
    as the engine would."""

    def __init__(self, lakefs: FakeLakeFS) -> None:
        super().__init__()
        self.lakefs = lakefs

    def probe(self, schema: str, table: str) -> int:
        found = self.get_table(schema, table)
        if found is None:
            return super().probe(schema, table)
        _, _, rest = found.location.partition("://")
        repo, ref, prefix = rest.split("/", 2)
        return sum(
            pq.ParquetFile(io.BytesIO(self.lakefs.read_object(repo, ref, o.path))).metadata.num_rows
            for o in self.lakefs.list_objects(repo, ref, prefix)
            if o.path.endswith(".parquet")
        )


def _materialise(data: Data) -> bytes:
    return data() if callable(data) else data


def _registered(metastore: FakeMetastore, schema: str) -> dict[str, list[str]]:
    out = {}
    for table in metastore.list_tables(schema):
        definition = metastore.get_table(schema, table)
        assert definition is not None, table
        out[table] = [c.name for c in definition.columns]
    return out


def _manifests(lakefs: FakeLakeFS) -> dict[str, TableManifest]:
    out = {}
    for obj in lakefs.list_objects(REPO, "main", "_lakehook/manifests/"):
        manifest = TableManifest.from_json(lakefs.read_object(REPO, "main", obj.path))
        out[manifest.table] = manifest
    return out


def run_case(case: Case, tmp_path: Path) -> tuple[RefStatus, FakeLakeFS, FakeMetastore, str]:
    lakefs = FakeLakeFS()
    lakefs.create_repository(REPO, f"local://{REPO}")
    metastore = RowCountingMetastore(lakefs)
    service = BranchService(
        settings=Settings.load({"LAKEHOOK_STATE_DIR": str(tmp_path / "state")}, None),
        lakefs=lakefs,
        metastore=metastore,
        store=MemoryStatusStore(),
        workdir=tmp_path / "work",
    )
    for path, data in {"raw/contents.csv": GOOD_CONTENTS, "raw/DM.csv": DM}.items():
        lakefs.upload_object(REPO, "main", path, data)
    lakefs.commit(REPO, "main", "first delivery", {})
    first = service.sync_branch(REPO, "main")
    assert first.state == "synced", first.errors
    files = {"raw/AE.csv": AE, **{p: _materialise(d) for p, d in case.files.items()}}
    for path, data in files.items():
        lakefs.upload_object(REPO, "main", path, data)
    lakefs.commit(REPO, "main", f"hostile: {case.id}", {})
    status = service.sync_branch(REPO, "main")
    return status, lakefs, metastore, status.schema


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    status, lakefs, metastore, schema = run_case(case, tmp_path)
    tables = {t.table for t in status.tables}

    if case.file is None:
        assert status.state == "synced", status.errors
        assert not status.errors
        if case.words:
            assert any(case.words in w for w in status.warnings), status.warnings
    else:
        assert status.state == "failed"
        matching = [e for e in status.errors if e.get("file") == case.file]
        assert matching, status.errors
        error = matching[0]
        if case.line is not None:
            assert error.get("line") == case.line, error
        if case.key is not None:
            assert error.get("column") == case.key, error
        assert case.words in str(error.get("message")), error
        assert error.get("hint"), error
        assert len(str(error.get("message"))) < 1000  # a bounded message, never the data

    # the other datasets: the first delivery's table stays, AE proceeds unless the whole
    # commit's config or contents is bad
    assert "dm" in tables
    if case.whole_commit:
        assert "ae" not in tables
    else:
        assert {"ae", *case.tables} <= tables
    # nothing half-registered: the metastore is exactly the manifests at the head
    manifests = _manifests(lakefs)
    registered = _registered(metastore, schema)
    assert set(registered) == set(manifests) == tables
    for table, manifest in manifests.items():
        assert registered[table] == [c.name for c in manifest.columns]
    if case.file is not None and case.file.startswith("raw/") and case.file.endswith(".csv"):
        stem = case.file[len("raw/") : -len(".csv")]
        if stem and stem != "contents":
            assert not any(t not in {"dm", "ae"} for t in registered), registered


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)
