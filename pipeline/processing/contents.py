"""The contents file (contract §5): which columns each dataset declares, with which types.

Two layouts, recognised by the header (case-insensitive, any order, unknown columns ignored):
simple ``dataset,column,type[,label,length,nullable]`` and the SAS PROC CONTENTS export
``MEMNAME,NAME,TYPE,LENGTH,VARNUM,LABEL,FORMAT``. Pure: bytes in, ``Contents`` out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lakehook.errors import InputError
from lakehook.settings import Settings
from pipeline.processing.types import VARCHAR, ColumnType, UnknownType, parse_declared

MAX_COLUMNS = Settings.max_columns  # default of the setting (LAKEHOOK_MAX_COLUMNS)
SIMPLE = "simple"
SAS = "sas"
_SIMPLE_REQUIRED = ("dataset", "column", "type")
_SAS_REQUIRED = ("memname", "name", "type")
_SAS_DATE = re.compile(r"^(DATE|YYMMDD|E8601DA|MMDDYY|DDMMYY|IS8601DA|B8601DA|YYMMDDN|MINGUO)")
_SAS_DATETIME = re.compile(r"^(DATETIME|E8601DT|IS8601DT|B8601DT|DATEAMPM|E8601DX)")


@dataclass(frozen=True)
class DeclaredColumn:
    """One declared column of one dataset."""

    name: str  # as written in the contents file
    declared: str  # the declared type as written (SAS: derived, e.g. "date")
    ctype: ColumnType | None  # None: the declared type is unknown (an error for the dataset)
    label: str = ""
    line: int = 0  # line in the contents file

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "declared": self.declared, "label": self.label}


@dataclass(frozen=True)
class DatasetContents:
    dataset: str
    columns: tuple[DeclaredColumn, ...]

    @property
    def fingerprint(self) -> str:
        text = json.dumps([c.to_json() for c in self.columns], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def errors(self, path: str, max_columns: int = MAX_COLUMNS) -> list[InputError]:
        """Unknown declared types, duplicate declarations and more than ``max_columns``
        columns: errors for this dataset."""
        if len(self.columns) > max_columns:
            return [
                InputError(
                    f"dataset {self.dataset} declares {len(self.columns)} columns, more than "
                    f"the limit of {max_columns} (setting max_columns, LAKEHOOK_MAX_COLUMNS)",
                    file=path,
                    line=self.columns[0].line,
                    column="dataset",
                    hint="split the dataset into narrower ones, or raise LAKEHOOK_MAX_COLUMNS",
                )
            ]
        out: list[InputError] = []
        seen: set[str] = set()
        for col in self.columns:
            if col.ctype is None:
                out.append(
                    InputError(
                        f"dataset {self.dataset}: column {col.name}: unknown type {col.declared!r}",
                        file=path,
                        line=col.line,
                        column="type",
                        hint="use string, integer, bigint, double, decimal(p,s), boolean, "
                        "date, timestamp or partialdate",
                    )
                )
            if col.name.lower() in seen:
                out.append(
                    InputError(
                        f"dataset {self.dataset}: column {col.name} is declared twice",
                        file=path,
                        line=col.line,
                        column="column",
                        hint="keep one row per column",
                    )
                )
            seen.add(col.name.lower())
        return out


@dataclass(frozen=True)
class Contents:
    path: str
    layout: str
    datasets: dict[str, DatasetContents] = field(default_factory=dict)  # lower-case name ->

    def for_dataset(self, dataset: str) -> DatasetContents | None:
        return self.datasets.get(dataset.lower())

    def unknown_datasets(self, datasets: Iterable[str]) -> list[str]:
        known = {d.lower() for d in datasets}
        return sorted(d.dataset for k, d in self.datasets.items() if k not in known)


def _sas_type(type_text: str, fmt: str) -> str:
    kind = type_text.strip().lower()
    if kind in ("2", "char", "c", "character"):
        return "string"
    if kind not in ("1", "num", "n", "numeric"):
        return type_text
    name = fmt.strip().upper()
    if _SAS_DATETIME.match(name):
        return "timestamp"
    if _SAS_DATE.match(name):
        return "date"
    return "double"


def parse_contents(data: bytes, path: str, max_columns: int = MAX_COLUMNS) -> Contents:
    """Parse a contents file in either layout.

    Raises:
        InputError: not UTF-8, not a CSV, or a header of neither layout; names file and line.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"not UTF-8 ({err.reason} at byte {err.start})",
            file=path,
            line=line,
            hint="save the contents file as UTF-8",
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as err:
        raise InputError(
            f"broken CSV: {err}", file=path, line=reader.line_num, hint="fix the quoting"
        ) from None
    if not rows:
        raise InputError("empty contents file", file=path, line=1, hint="add a header row")
    for number, row in enumerate(rows, start=1):  # before any per-column work
        if len(row) > max_columns:
            raise InputError(
                f"a row of {len(row)} fields, more than the limit of {max_columns} "
                "(setting max_columns, LAKEHOOK_MAX_COLUMNS)",
                file=path,
                line=number,
                hint="the contents file has one row per column and a few fields per row",
            )
    header = [h.strip().lower() for h in rows[0]]
    if all(h in header for h in _SIMPLE_REQUIRED):
        layout, name_col, col_col = SIMPLE, "dataset", "column"
    elif all(h in header for h in _SAS_REQUIRED):
        layout, name_col, col_col = SAS, "memname", "name"
    else:
        raise InputError(
            f"header {rows[0]} is neither layout",
            file=path,
            line=1,
            hint="use dataset,column,type[,label] or MEMNAME,NAME,TYPE,LENGTH,VARNUM,LABEL,FORMAT",
        )
    index = {h: i for i, h in enumerate(header)}

    def get(row: list[str], name: str) -> str:
        i = index.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    grouped: dict[str, list[tuple[float, int, DeclaredColumn]]] = {}
    names: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        dataset, column = get(row, name_col), get(row, col_col)
        if not dataset or not column:
            raise InputError(
                f"row without {'dataset' if not dataset else 'column'} name",
                file=path,
                line=number,
                column=name_col if not dataset else col_col,
                hint="every row names a dataset and a column",
            )
        if layout == SIMPLE:
            declared, sas = get(row, "type"), False
            order: float = number
        else:
            declared, sas = _sas_type(get(row, "type"), get(row, "format")), True
            varnum = get(row, "varnum")
            try:
                order = float(varnum) if varnum else float(number)
            except ValueError:
                raise InputError(
                    f"VARNUM {varnum!r} is not a number",
                    file=path,
                    line=number,
                    column="VARNUM",
                    hint="VARNUM is the column's position",
                ) from None
        try:
            ctype: ColumnType | None = parse_declared(declared, sas=sas) if declared else VARCHAR
        except UnknownType:
            ctype = None
        declared_text = declared or "string"
        key = dataset.lower()
        names.setdefault(key, dataset)
        grouped.setdefault(key, []).append(
            (order, number, DeclaredColumn(column, declared_text, ctype, get(row, "label"), number))
        )
    datasets = {
        key: DatasetContents(names[key], tuple(c for _, _, c in sorted(cols, key=lambda t: t[:2])))
        for key, cols in grouped.items()
    }
    return Contents(path, layout, datasets)
