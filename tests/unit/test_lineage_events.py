"""Event content: names, facets, run ids, validity (pure; no I/O)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import jsonschema
import pytest
from openlineage.client.serde import Serde

from lakehook.settings import Settings
from pipeline.lineage import events, naming
from pipeline.lineage.events import CommitPlan, IngestionPlan, TablePlan
from pipeline.lineage.facets import facet_schema
from pipeline.lineage.naming import LineageNaming
from pipeline.model import Drift, DriftChange, OutputColumn, TableManifest, TableRun

NAMES = LineageNaming(trino_host="trino.local", trino_port=8080, hms_host="hms.local")
PARENT = CommitPlan("study", "main", "c0ffee")

# The core of the OpenLineage 2-0-2 RunEvent schema as far as these events use it (the client
# ships no spec files): required keys, enums, and the base-facet rule for every facet.
FACET = {"type": "object", "required": ["_producer", "_schemaURL"]}
FACETS = {"type": "object", "additionalProperties": FACET}
DATASET = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {
        "namespace": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "facets": FACETS,
        "inputFacets": FACETS,
        "outputFacets": FACETS,
    },
}
RUN_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["eventType", "eventTime", "run", "job", "producer", "schemaURL"],
    "properties": {
        "eventType": {"enum": ["START", "COMPLETE", "FAIL"]},
        "eventTime": {"type": "string"},
        "producer": {"type": "string", "pattern": "^[a-z][a-z0-9+.-]*:"},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string"}, "facets": FACETS},
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {"namespace": {"const": "lakehook"}, "facets": FACETS},
        },
        "inputs": {"type": "array", "items": DATASET},
        "outputs": {"type": "array", "items": DATASET},
    },
}
CUSTOM_FACETS = {
    "lakehook_commit": "LakehookCommitRunFacet",
    "lakehook_drift": "LakehookDriftDatasetFacet",
    "lakehook_quality": "LakehookQualityDatasetFacet",
    "lakehook_run": "LakehookRunFacet",
}


def sample_manifest() -> TableManifest:
    columns = (
        OutputColumn("patient_sk", "bigint", key_sources=("studyid", "usubjid")),
        OutputColumn("studyid", "varchar", "STUDYID", "string", "Study Identifier"),
        OutputColumn("usubjid", "varchar", "USUBJID", "string"),
        OutputColumn("age", "integer", "AGE", "int"),
        OutputColumn("rfstdtc", "varchar", "RFSTDTC", "partialdate"),
        OutputColumn("armcd", "varchar", None, "string"),  # declared, absent from the CSV
        OutputColumn("extra", "varchar", "Extra Col"),  # undeclared
    )
    return TableManifest(
        table="dm",
        dataset="DM",
        source_commit="c0ffee",
        raw_path="raw/DM.csv",
        raw_checksum="abc",
        contents_path="raw/contents.csv",
        contents_fingerprint="cf",
        keys_fingerprint="kf",
        processing_version="1",
        fingerprint="fp",
        files=("tables/dm/part-0.parquet", "tables/dm/part-1.parquet"),
        columns=columns,
        rows=306,
        invalid_values={"age": 2, "rfstdtc": 0},
        null_keys={"patient": 1},
        keys={"patient": ("STUDYID", "USUBJID")},
        warnings=("column 'Extra Col' is not in the contents file: varchar",),
    )


def sample_run(**changes: Any) -> TableRun:
    """A finished, successful run of table ``dm`` of commit ``c0ffee`` on ``study/main``."""
    run = TableRun(
        repository="study",
        branch="main",
        source_commit="c0ffee",
        table="dm",
        dataset="DM",
        raw_path="raw/DM.csv",
        raw_checksum="abc",
        contents_path="raw/contents.csv",
        output_commit="beef01",
        manifest=sample_manifest(),
        schema="study_main",
        drift=Drift(
            "ADDITIVE", (DriftChange("extra", "column added", None, "varchar", "ADDITIVE"),)
        ),
        started_at=1_750_000_000.0,
        finished_at=1_750_000_002.5,
    )
    return replace(run, **changes)


def as_json(event: object) -> dict[str, Any]:
    """The wire form: what the journal holds and Marquez receives."""
    data: dict[str, Any] = json.loads(Serde.to_json(event))
    return data


def assert_valid(event: dict[str, Any]) -> None:
    """Core schema, UUID and time formats, and each custom facet against its shipped schema."""
    jsonschema.validate(event, RUN_EVENT_SCHEMA)
    uuid.UUID(event["run"]["runId"])
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    facet_groups = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        facet_groups += [dataset.get(k, {}) for k in ("facets", "inputFacets", "outputFacets")]
    for group in facet_groups:
        for key, facet in group.items():
            if key in CUSTOM_FACETS:
                name = CUSTOM_FACETS[key]
                schema = json.loads(facet_schema(name))
                assert facet["_schemaURL"].endswith(f"{name}.json#/$defs/{name}")
                jsonschema.validate(facet, {**schema, "$ref": f"#/$defs/{name}"})
            else:
                assert facet["_schemaURL"].startswith("https://openlineage.io/spec/")


def facets_of(dataset: dict[str, Any]) -> dict[str, Any]:
    facets: dict[str, Any] = dataset["facets"]
    return facets


# ---- names ------------------------------------------------------------------------------------


def test_datasets_are_named_as_the_s3_gateway_sees_them() -> None:
    assert naming.raw_dataset("study", "main", "raw/DM.csv") == naming.DatasetName(
        "s3://study", "main/raw/DM.csv"
    )
    assert naming.table_dataset("study", "feature-x", "dm").name == "feature-x/tables/dm"
    assert naming.lakefs_object("study", "main", "tables/dm/").name == "main/tables/dm"


def test_catalog_names_follow_the_trino_and_hive_conventions() -> None:
    assert NAMES.trino_table("study_main", "dm") == naming.DatasetName(
        "trino://trino.local:8080", "hive.study_main.dm"
    )
    assert NAMES.hive_table("study_main", "dm") == naming.DatasetName(
        "hive://hms.local:9083", "study_main.dm"
    )


def test_naming_from_settings_uses_the_configured_endpoints() -> None:
    settings = Settings(
        trino_url="http://trino.example:8443", trino_catalog="lake", hms_uri="thrift://hms:9999"
    )
    names = LineageNaming.from_settings(settings)
    assert names.trino_table("s", "t") == naming.DatasetName(
        "trino://trino.example:8443", "lake.s.t"
    )
    assert names.hive_table("s", "t").namespace == "hive://hms:9999"


def marquez_job_name(job: str, parent: str) -> str:
    """How Marquez 0.51 names a job whose run has a parent run (OpenLineageDao.buildJobFromEvent
    strips a leading ``<parent>.`` to get the simple name; the jobs view prefixes the parent)."""
    simple = job.removeprefix(f"{parent}.")
    return f"{parent}.{simple}"


def test_marquez_shows_a_table_job_under_the_contracts_name() -> None:
    parent = naming.commit_job_name("study")
    table_job = naming.table_job_name("study", "dm")
    assert table_job == "study.dm"  # contract §10
    assert marquez_job_name(table_job, parent) == "study.dm"  # not study.<parent>.study.dm
    assert parent not in {table_job, naming.ingest_job_name("study")}


# ---- run ids ----------------------------------------------------------------------------------


def test_table_run_ids_are_deterministic_valid_uuids() -> None:
    first = naming.table_run_id("study", "c0ffee", "dm")
    assert first == naming.table_run_id("study", "c0ffee", "dm")
    assert uuid.UUID(first).version == 5
    others = {
        naming.table_run_id("study", "c0ffef", "dm"),
        naming.table_run_id("study", "c0ffee", "ae"),
        naming.table_run_id("trial", "c0ffee", "dm"),
        naming.commit_run_id("study", "c0ffee"),
    }
    assert first not in others
    assert len(others) == 4


def test_run_id_separates_fields_unambiguously() -> None:
    assert naming.table_run_id("a.b", "c", "d") != naming.table_run_id("a", "b.c", "d")


def test_retry_of_the_same_work_is_the_same_run() -> None:
    first = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    retry = as_json(
        events.table_end_event(sample_run(started_at=2e9, finished_at=2e9 + 1), NAMES, PARENT)
    )
    assert first["run"]["runId"] == retry["run"]["runId"]
    assert first["eventTime"] != retry["eventTime"]


# ---- table events -----------------------------------------------------------------------------


def test_start_event_names_inputs_at_the_source_commit_and_no_output() -> None:
    """The output comes with the COMPLETE only: named in the START, it became a version
    without fields in Marquez, which now and then stayed the table's current one."""
    plan = TablePlan("study", "main", "c0ffee", "dm", "DM", "raw/DM.csv", schema="study_main")
    event = as_json(events.table_start_event(plan, 1_750_000_000.0, PARENT))
    assert_valid(event)
    assert event["eventType"] == "START"
    assert event["eventTime"] == "2025-06-15T15:06:40.000+00:00"
    assert event["job"] == {
        "namespace": "lakehook",
        "name": "study.dm",
        "facets": event["job"]["facets"],
    }
    assert [(i["namespace"], i["name"]) for i in event["inputs"]] == [
        ("s3://study", "main/raw/DM.csv"),
        ("s3://study", "main/raw/contents.csv"),
    ]
    assert all(i["facets"]["version"]["datasetVersion"] == "c0ffee" for i in event["inputs"])
    assert event["outputs"] == []
    assert event["run"]["runId"] == naming.table_run_id("study", "c0ffee", "dm")


def test_complete_event_carries_every_facet_of_contract_10() -> None:
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    assert_valid(event)
    assert event["eventType"] == "COMPLETE"
    assert event["eventTime"] == "2025-06-15T15:06:42.500+00:00"
    (output,) = event["outputs"]
    facets = facets_of(output)
    assert [(f["name"], f["type"], f["ordinal_position"]) for f in facets["schema"]["fields"]][
        :4
    ] == [
        ("patient_sk", "bigint", 1),
        ("studyid", "varchar", 2),
        ("usubjid", "varchar", 3),
        ("age", "integer", 4),
    ]
    assert facets["schema"]["fields"][1]["description"] == "Study Identifier"
    assert facets["version"]["datasetVersion"] == "beef01"
    assert facets["symlinks"]["identifiers"] == [
        {"namespace": "trino://trino.local:8080", "name": "hive.study_main.dm", "type": "TABLE"},
        {"namespace": "hive://hms.local:9083", "name": "study_main.dm", "type": "TABLE"},
    ]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 306
    assert output["outputFacets"]["outputStatistics"]["fileCount"] == 2


def test_the_raw_csv_input_names_its_columns_so_marquez_can_draw_column_lineage() -> None:
    # Marquez's column-lineage graph joins an output field to input fields it knows: without a
    # schema on the raw CSV, /api/v1/column-lineage answered an empty graph
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    raw, contents = event["inputs"]
    fields = facets_of(raw)["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [
        ("STUDYID", "string"),
        ("USUBJID", "string"),
        ("AGE", "string"),
        ("RFSTDTC", "string"),
        ("Extra Col", "string"),
    ]
    assert fields[2]["description"] == "declared 'int'"
    lineage = facets_of(event["outputs"][0])["columnLineage"]["fields"]
    named = {f["name"] for f in fields}
    assert {i["field"] for c in lineage.values() for i in c["inputFields"]} <= named
    assert "schema" not in facets_of(contents)


def test_column_lineage_keys_from_natural_key_columns_others_from_their_raw_column() -> None:
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    lineage = facets_of(event["outputs"][0])["columnLineage"]["fields"]

    def sources(column: str) -> list[tuple[str, str, str]]:
        return [(f["namespace"], f["name"], f["field"]) for f in lineage[column]["inputFields"]]

    assert sources("patient_sk") == [
        ("s3://study", "main/raw/DM.csv", "STUDYID"),
        ("s3://study", "main/raw/DM.csv", "USUBJID"),
    ]
    assert sources("age") == [("s3://study", "main/raw/DM.csv", "AGE")]
    assert sources("extra") == [("s3://study", "main/raw/DM.csv", "Extra Col")]
    assert "armcd" not in lineage  # declared but not in the CSV: derived from nothing
    subtype = {c: lineage[c]["inputFields"][0]["transformations"][0]["subtype"] for c in lineage}
    assert subtype == {
        "patient_sk": "TRANSFORMATION",
        "studyid": "IDENTITY",
        "usubjid": "IDENTITY",
        "age": "TRANSFORMATION",
        "rfstdtc": "TRANSFORMATION",  # partial dates are checked
        "extra": "IDENTITY",
    }


def test_quality_metrics_and_custom_quality_facet() -> None:
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    facets = facets_of(event["outputs"][0])
    metrics = facets["dataQualityMetrics"]
    assert metrics["rowCount"] == 306
    assert metrics["columnMetrics"]["patient_sk"]["nullCount"] == 1
    quality = facets["lakehook_quality"]
    assert quality["invalidValues"] == {"age": 2, "rfstdtc": 0}
    assert quality["nullKeys"] == {"patient": 1}
    assert quality["rowCount"] == 306
    raw_input = event["inputs"][0]
    assert raw_input["inputFacets"]["dataQualityMetrics"]["rowCount"] == 306


def test_drift_facet_lists_each_change() -> None:
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    drift = facets_of(event["outputs"][0])["lakehook_drift"]
    assert drift["driftClass"] == "ADDITIVE"
    assert drift["changes"] == [
        {"column": "extra", "change": "column added", "to": "varchar", "class": "ADDITIVE"}
    ]


def test_parent_facet_links_the_table_run_to_its_commit_run() -> None:
    event = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    parent = event["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == naming.commit_run_id("study", "c0ffee")
    assert (parent["job"]["namespace"], parent["job"]["name"]) == (
        "lakehook",
        "study",
    )
    assert parent["root"]["run"]["runId"] == parent["run"]["runId"]
    assert event["run"]["facets"]["lakehook_run"]["outputCommit"] == "beef01"


def test_reused_output_is_versioned_by_the_source_commit() -> None:
    event = as_json(
        events.table_end_event(sample_run(output_commit=None, reused=True), NAMES, PARENT)
    )
    assert facets_of(event["outputs"][0])["version"]["datasetVersion"] == "c0ffee"
    assert event["run"]["facets"]["lakehook_run"]["reused"] is True


def test_failed_run_is_a_fail_event_with_the_error_and_no_output() -> None:
    failed = sample_run(manifest=None, output_commit=None, error="raw/DM.csv, line 7: 3 fields")
    event = as_json(events.table_end_event(failed, NAMES, PARENT))
    assert_valid(event)
    assert event["eventType"] == "FAIL"
    error = event["run"]["facets"]["errorMessage"]
    assert error["message"] == "raw/DM.csv, line 7: 3 fields"
    assert error["programmingLanguage"] == "PYTHON"
    assert event["outputs"] == []
    assert [i["name"] for i in event["inputs"]] == ["main/raw/DM.csv", "main/raw/contents.csv"]


def test_no_symlinks_when_the_schema_is_unknown() -> None:
    event = as_json(events.table_end_event(sample_run(schema=""), NAMES))
    assert "symlinks" not in facets_of(event["outputs"][0])
    assert "parent" not in event["run"]["facets"]


# ---- commit events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "error", "state", "message"),
    [
        ((), None, "COMPLETE", None),
        (("ae", "dm"), None, "FAIL", "2 table(s) failed: ae, dm"),
        ((), "RuntimeError: boom", "FAIL", "RuntimeError: boom"),
    ],
)
def test_commit_events(
    failed: tuple[str, ...], error: str | None, state: str, message: str | None
) -> None:
    start = as_json(events.commit_start_event(PARENT, 1.0))
    end = as_json(events.commit_end_event(PARENT, 2.0, failed, error))
    for event in (start, end):
        assert_valid(event)
        assert event["job"]["name"] == "study"
        assert event["run"]["runId"] == naming.commit_run_id("study", "c0ffee")
    assert start["eventType"] == "START"
    assert end["eventType"] == state
    assert end["run"]["facets"].get("errorMessage", {}).get("message") == message


# ---- the seed's graph (contract §10 v1.1) -----------------------------------------------------

INGESTION = IngestionPlan(
    repository="study",
    branch="main",
    commit="c0ffee",
    committer="alice",
    message="DM and AE, delivery 2",
    created_at=1_750_000_000.0,
    raw_paths=("raw/AE.csv", "raw/DM.csv"),
)


def test_ingestion_run_outputs_the_raw_csvs_with_committer_and_message() -> None:
    event = as_json(events.ingestion_event(INGESTION, at=1_800_000_000.0))
    assert_valid(event)
    assert event["eventType"] == "COMPLETE"
    assert event["job"] == {**event["job"], "namespace": "lakehook", "name": "study.ingest"}
    assert event["eventTime"].startswith("2025-06-15T15:06:40")  # the commit's own time
    commit = event["run"]["facets"]["lakehook_commit"]
    assert (commit["commit"], commit["committer"], commit["message"]) == (
        "c0ffee",
        "alice",
        "DM and AE, delivery 2",
    )
    outputs = [(d["namespace"], d["name"]) for d in event["outputs"]]
    assert outputs == [("s3://study", "main/raw/AE.csv"), ("s3://study", "main/raw/DM.csv")]
    assert all(d["facets"]["version"]["datasetVersion"] == "c0ffee" for d in event["outputs"])
    # the same commit is the same run, however often it is recorded
    again = as_json(events.ingestion_event(INGESTION, at=1_900_000_000.0))
    assert again["run"]["runId"] == event["run"]["runId"]
    other = replace(INGESTION, commit="d00d")
    assert as_json(events.ingestion_event(other, at=0))["run"]["runId"] != event["run"]["runId"]


def test_the_table_run_reads_what_the_ingestion_wrote() -> None:
    ingest = as_json(events.ingestion_event(INGESTION, at=0))
    table = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    written = {(d["namespace"], d["name"]) for d in ingest["outputs"]}
    read = [(d["namespace"], d["name"]) for d in table["inputs"]]
    assert read[0] in written  # raw/DM.csv
    assert read[1] == ("s3://study", "main/raw/contents.csv")


def test_every_dataset_names_its_data_source() -> None:
    start = as_json(events.table_start_event(TablePlan.of(sample_run()), 0.0, PARENT))
    complete = as_json(events.table_end_event(sample_run(), NAMES, PARENT))
    fail = as_json(events.table_end_event(sample_run(error="broken", manifest=None), NAMES))
    ingest = as_json(events.ingestion_event(INGESTION, at=0))
    datasets = [
        d for e in (start, complete, fail, ingest) for d in e.get("inputs", []) + e["outputs"]
    ]
    assert len(datasets) == 9  # 2 + 3 + 2 inputs of the FAIL + 2 raw CSVs
    for dataset in datasets:
        source = dataset["facets"]["dataSource"]
        assert source["name"] == source["uri"] == dataset["namespace"] == "s3://study"


def test_quality_metrics_count_nulls_and_invalid_values_per_column() -> None:
    run = sample_run(null_counts={"studyid": 0, "usubjid": 0, "age": 5, "armcd": 306})
    event = as_json(events.table_end_event(run, NAMES, PARENT))
    assert_valid(event)
    metrics = event["outputs"][0]["facets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 306
    columns = metrics["columnMetrics"]
    assert set(columns) == {c.name for c in sample_manifest().columns}

    def counts(column: str) -> dict[str, int]:
        return {k: v for k, v in columns[column].items() if k in {"nullCount", "invalidCount"}}

    assert counts("patient_sk") == {"nullCount": 1}  # rows with a missing key part
    assert counts("age") == {"nullCount": 5, "invalidCount": 2}
    assert counts("armcd") == {"nullCount": 306, "invalidCount": 0}
    assert counts("rfstdtc") == {"invalidCount": 0}  # not counted: no nullCount claimed


def test_web_ui_url_of_a_tables_lineage_graph() -> None:
    url = naming.web_ui_lineage_url("http://127.0.0.1:3000/", "study", "main", "dm")
    assert url == "http://127.0.0.1:3000/lineage/dataset/s3%3A%2F%2Fstudy/main%2Ftables%2Fdm"
