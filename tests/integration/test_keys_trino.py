"""Key parity: Trino SQL computes the same surrogate keys as lakehook (contract §6).

The canonical string is built in SQL from the natural key columns and hashed with
``from_big_endian_64(substr(sha256(to_utf8(canonical)), 1, 8))``; the result must equal
``pipeline.processing.keys`` for every row, including Unicode that needs NFC, padding blanks
and numbers written in several ways. (Trino rounds decimals half-up, lakehook half-even: the
data avoids exact ties at the 7th decimal, the one place where the two would differ.)
"""

from __future__ import annotations

import random

import pytest
import trino

from lakehook.settings import Settings
from pipeline.processing.keys import surrogate_key
from pipeline.processing.types import parse_declared

pytestmark = pytest.mark.stack

TEXT_PART = "upper(trim(normalize({c}, NFC)))"
NUM_PART = (
    "regexp_replace(regexp_replace(cast(cast(round(cast(trim({c}) AS decimal(38,10)), 6)"
    " AS decimal(38,6)) AS varchar), '(\\.\\d*?)0+$', '$1'), '\\.$', '')"
)


def _sql_key(key: str, parts: list[str]) -> str:
    pieces = [f"'{len('v1')}:v1'", f"'{len(key)}:{key}'"]
    pieces += [f"cast(length({p}) AS varchar) || ':' || {p}" for p in parts]
    return "from_big_endian_64(substr(sha256(to_utf8(" + " || '|' || ".join(pieces) + ")), 1, 8))"


def _rows(seed: int = 11, n: int = 300) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    studies = ["CDISCPILOT01", " cdiscpilot01 ", "Caf\u0065\u0301", "CAF\u00c9", "研究-7"]
    out = [("CDISCPILOT01", "01-701-1015", "1.2000000000000002")]
    for _ in range(n):
        visit = rng.choice(["1", "1.0", "2.5", "-0", "10", "0.1234567", "3.25", "100.000"])
        out.append(
            (rng.choice(studies), f"{rng.randint(1, 999):03d}-{rng.randint(1, 9999)}", visit)
        )
    return out


def test_trino_sql_computes_the_same_keys(stack_settings: Settings) -> None:
    rows = _rows()
    host, port = stack_settings.trino_host_port
    cursor = trino.dbapi.connect(host=host, port=port, user=stack_settings.trino_user).cursor()
    values = ", ".join(
        "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in row) + ")" for row in rows
    )
    patient = _sql_key("patient", [TEXT_PART.format(c="s"), TEXT_PART.format(c="u")])
    visit = _sql_key(
        "visit", [TEXT_PART.format(c="s"), TEXT_PART.format(c="u"), NUM_PART.format(c="v")]
    )
    cursor.execute(f"SELECT {patient}, {visit} FROM (VALUES {values}) AS t(s, u, v)")
    from_trino = [tuple(r) for r in cursor.fetchall()]
    double = parse_declared("double")
    expected = [
        (
            surrogate_key("patient", [s, u], [None, None]),
            surrogate_key("visit", [s, u, v], [None, None, double]),
        )
        for s, u, v in rows
    ]
    assert from_trino[0] == (-882300288707882733, 1535226055626573821)
    assert from_trino == expected
