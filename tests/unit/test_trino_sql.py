"""The pure parts of the Trino engine: quoting, engine choice, the reference's character sets.

Whether the SQL computes what the pyarrow engine computes is proven on the real stack
(``tests/integration/test_engine_differential.py``); these tests pin what needs no Trino.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lakehook.errors import ConfigError, InputError
from lakehook.settings import Settings
from pipeline.metastore.ddl import UnsafeDefinition
from pipeline.processing import trino_sql
from pipeline.processing.config import parse_config
from pipeline.processing.engines import engine_for
from pipeline.processing.trino_engine import PYARROW, TRINO, _record_end


def test_identifiers_pass_the_allow_list_or_raise() -> None:
    assert trino_sql.identifier("study_main_2") == '"study_main_2"'
    for bad in ('a"b', "A", "a b", "a;drop", "", "é"):
        with pytest.raises(UnsafeDefinition):
            trino_sql.identifier(bad)


def test_literals_cannot_break_out_and_keep_every_character() -> None:
    assert trino_sql.literal("it's") == "'it''s'"
    text = "a'b\\c\nd\u00e9\U0001f600"
    sql = trino_sql.literal(text)
    assert sql == "U&'a''b\\\\c\\000Ad\\00E9\\+01F600'"
    assert "\n" not in sql[0]
    # decode the U& form back: every character survives
    body = sql[3:-1].replace("''", "'")
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1] == "\\":
                out.append("\\")
                i += 2
            elif body[i + 1] == "+":
                out.append(chr(int(body[i + 2 : i + 8], 16)))
                i += 8
            else:
                out.append(chr(int(body[i + 1 : i + 5], 16)))
                i += 5
        else:
            out.append(body[i])
            i += 1
    assert "".join(out) == text


def test_whitespace_set_is_what_python_and_arrow_strip() -> None:
    python = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(trino_sql.WHITESPACE) == python
    candidates = [chr(c) for c in range(0x3001) if not 0xD800 <= c < 0xE000]
    trimmed = pc.utf8_trim_whitespace(pa.array(["x" + c for c in candidates])).to_pylist()
    arrow = {c for c, t in zip(candidates, trimmed, strict=True) if t == "x"}
    assert arrow == python


def test_multi_character_upper_cases_are_flagged() -> None:
    chars = trino_sql.multi_upper()
    assert "ß" in chars
    assert "ﬀ" in chars
    assert "a" not in chars
    assert "é" not in chars


def test_engine_choice() -> None:
    assert engine_for("pyarrow", 10**12, 100) == PYARROW
    assert engine_for("trino", 1, 100) == TRINO
    assert engine_for("auto", 100, 100) == PYARROW
    assert engine_for("auto", 101, 100) == TRINO


def test_engine_in_lakehook_yaml_and_threshold_setting() -> None:
    assert parse_config(b"engine: trino\n").engine == "trino"
    assert parse_config(None).engine == "auto"
    with pytest.raises(InputError, match="must be pyarrow, trino or auto"):
        parse_config(b"engine: spark\n")
    settings = Settings.load({"LAKEHOOK_TRINO_ENGINE_THRESHOLD": "5000000000"})
    assert settings.trino_engine_threshold == 5_000_000_000
    with pytest.raises(ConfigError, match="LAKEHOOK_TRINO_ENGINE_THRESHOLD"):
        Settings.load({"LAKEHOOK_TRINO_ENGINE_THRESHOLD": "-1"})


def test_header_record_end_skips_quoted_newlines() -> None:
    assert _record_end(b"a,b\n1,2\n") == 3
    assert _record_end(b'"a\nx",b\n1,2\n') == 7
    assert _record_end(b"a,b") == -1


def test_no_csv_header_reaches_sql_as_an_identifier() -> None:
    source = trino_sql.SourceTable("hive", "lakehook_scratch_1", "raw", 2)
    sql = source.create_sql("s3a://repo/branch/_lakehook/scratch/x'y/")
    assert '"c_0001" varchar, "c_0002" varchar, "c_extra" varchar' in sql[0]
    assert "'s3a://repo/branch/_lakehook/scratch/x''y/'" in sql[0]
