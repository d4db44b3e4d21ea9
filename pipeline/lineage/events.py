"""Pure construction of OpenLineage ``RunEvent``s from what processing describes.

No I/O and no clock: every function takes the time it stamps. A table run is one run of job
``lakehook`` / ``<repo>.<table>`` (START, then COMPLETE or FAIL) with the raw CSV and the
contents file as inputs and the table as output; a commit run (job ``<repo>``)
is the parent of the table runs of one processed source commit; an ingestion run (job
``<repo>.ingest``, one COMPLETE event) is the lakeFS commit itself, whose outputs are the raw
CSVs, so the graph reads ingestion -> raw CSV -> table job -> table. Every dataset carries a
``dataSource`` facet (Marquez lists sources from it). Names: ``naming``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    JobFacet,
    OutputDatasetFacet,
    RunFacet,
    column_lineage_dataset,
    data_quality_metrics_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    symlinks_dataset,
)

from pipeline.lineage import naming
from pipeline.lineage.facets import (
    COMMIT_FACET,
    DRIFT_FACET,
    LAKEHOOK_VERSION,
    OPENLINEAGE_CLIENT_VERSION,
    PRODUCER,
    QUALITY_FACET,
    RUN_FACET,
    ColumnQualityMetrics,
    LakehookCommitRunFacet,
    LakehookDriftDatasetFacet,
    LakehookQualityDatasetFacet,
    LakehookRunFacet,
)
from pipeline.lineage.naming import DatasetName, LineageNaming
from pipeline.model import OutputColumn, TableManifest, TableRun
from pipeline.naming import key_column

INTEGRATION = "LAKEHOOK"
PROGRAMMING_LANGUAGE = "PYTHON"
CHECKED_TEXT_TYPES = frozenset({"partialdate", "iso8601"})  # varchar, but validated
KEY_DESCRIPTION = "surrogate key: sha256 of the canonical natural key (lakehook contract §6)"


@dataclass(frozen=True)
class TablePlan:
    """What is known of a table run before it starts (enough for its START event).

    Attributes:
        repository: the lakeFS repository.
        branch: the branch processed.
        source_commit: the user's commit processed.
        table: the output table.
        dataset: the dataset (the CSV file's stem).
        raw_path: the CSV's path in the branch, e.g. ``raw/DM.csv``.
        contents_path: the contents file's path in the branch.
        schema: the branch's Hive schema ('' when not known yet: no symlinks then).
    """

    repository: str
    branch: str
    source_commit: str
    table: str
    dataset: str
    raw_path: str
    contents_path: str = naming.DEFAULT_CONTENTS_PATH
    schema: str = ""

    @classmethod
    def of(cls, run: TableRun) -> TablePlan:
        """The plan a finished ``TableRun`` was made from."""
        return cls(
            repository=run.repository,
            branch=run.branch,
            source_commit=run.source_commit,
            table=run.table,
            dataset=run.dataset,
            raw_path=run.raw_path,
            contents_path=run.contents_path,
            schema=run.schema,
        )

    @property
    def run_id(self) -> str:
        """Deterministic per (repository, source commit, table)."""
        return naming.table_run_id(self.repository, self.source_commit, self.table)

    @property
    def job_name(self) -> str:
        return naming.table_job_name(self.repository, self.table)


@dataclass(frozen=True)
class CommitPlan:
    """The parent run: processing one source commit of a repository on a branch."""

    repository: str
    branch: str
    source_commit: str

    @property
    def run_id(self) -> str:
        """Deterministic per (repository, source commit)."""
        return naming.commit_run_id(self.repository, self.source_commit)

    @property
    def job_name(self) -> str:
        return naming.commit_job_name(self.repository)


@dataclass(frozen=True)
class IngestionPlan:
    """A lakeFS commit seen as the run that ingested the raw CSVs it holds.

    Attributes:
        repository: the lakeFS repository.
        branch: the branch the commit was processed on.
        commit: the commit id.
        committer: who made it.
        message: its message.
        created_at: when (epoch seconds; 0 when unknown).
        raw_paths: the raw CSVs at that commit, e.g. ``raw/DM.csv``.
    """

    repository: str
    branch: str
    commit: str
    committer: str
    message: str
    created_at: float
    raw_paths: tuple[str, ...]

    @property
    def run_id(self) -> str:
        return naming.ingest_run_id(self.repository, self.commit)

    @property
    def job_name(self) -> str:
        return naming.ingest_job_name(self.repository)


def event_time(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-07-23T10:20:41.123+00:00``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


# ---- table runs -------------------------------------------------------------------------------


def table_start_event(plan: TablePlan, at: float, parent: CommitPlan | None = None) -> RunEvent:
    """START of a table run: its inputs at the source commit, and no output.

    The output comes with the COMPLETE, schema and all. Named in the START too, it became a
    dataset version of its own in Marquez, without fields, and on the COMPLETE Marquez makes
    each output version of the run current in no set order (``buildJobOutput``: one update per
    version its unordered query returns): now and then the table's current version was the
    START's, and the lineage graph and the web UI showed the table with no schema (seen in
    make test on 2026-12-02: two versions, the current one empty).

    Args:
        plan: the table run about to start.
        at: event time (epoch seconds).
        parent: the commit run this table run belongs to, if any.
    """
    return _table_event(
        RunState.START,
        plan,
        at,
        run_facets=_table_run_facets(plan, parent),
        inputs=_inputs(plan),
        outputs=[],
    )


def table_end_event(
    run: TableRun,
    names: LineageNaming,
    parent: CommitPlan | None = None,
    at: float | None = None,
) -> RunEvent:
    """COMPLETE (or FAIL when ``run.error`` is set) of a table run, from its description.

    A COMPLETE event carries the output with schema, column lineage, the lakeFS commit as
    version, symlinks, data-quality metrics, the quality and drift facets and output
    statistics. A FAIL event carries the error and the inputs, and no output: the table keeps
    its previous version.

    Args:
        run: what processing the table read and wrote.
        names: catalog endpoints for the symlinks.
        parent: the commit run this table run belongs to, if any.
        at: event time; default ``run.finished_at``.
    """
    plan = TablePlan.of(run)
    when = run.finished_at if at is None else at
    run_facets = _table_run_facets(plan, parent, run)
    if run.error is not None or run.manifest is None:
        message = run.error or "processing produced no table"
        return table_fail_event(plan, names, when, message, parent=parent, run=run)
    return _table_event(
        RunState.COMPLETE,
        plan,
        when,
        run_facets=run_facets,
        inputs=_inputs(plan, run.manifest),
        outputs=[_output(plan, names, run, run.manifest)],
    )


def table_fail_event(
    plan: TablePlan,
    names: LineageNaming,  # noqa: ARG001 - same signature as the other table events
    at: float,
    message: str,
    *,
    parent: CommitPlan | None = None,
    stack_trace: str | None = None,
    run: TableRun | None = None,
) -> RunEvent:
    """FAIL of a table run, with the error-message run facet.

    Args:
        plan: the table run that failed.
        names: catalog endpoints (unused: a failed run names no output).
        at: event time.
        message: what went wrong, as the status reports it.
        parent: the commit run, if any.
        stack_trace: the traceback, when an exception ended the run.
        run: the run's description, when processing returned one.
    """
    run_facets = _table_run_facets(plan, parent, run)
    run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
        message=message,
        programmingLanguage=PROGRAMMING_LANGUAGE,
        stackTrace=stack_trace,
        producer=PRODUCER,
    )
    return _table_event(RunState.FAIL, plan, at, run_facets=run_facets, inputs=_inputs(plan))


# ---- commit runs ------------------------------------------------------------------------------


def commit_start_event(plan: CommitPlan, at: float) -> RunEvent:
    """START of the parent run of one processed commit."""
    return _commit_event(RunState.START, plan, at, {})


def commit_end_event(
    plan: CommitPlan, at: float, failed_tables: Sequence[str] = (), error: str | None = None
) -> RunEvent:
    """COMPLETE of the parent run, or FAIL when a table failed or ``error`` ended it."""
    if error is None and not failed_tables:
        return _commit_event(RunState.COMPLETE, plan, at, {})
    parts = [error] if error else []
    if failed_tables:
        parts.append(f"{len(failed_tables)} table(s) failed: {', '.join(failed_tables)}")
    facets: dict[str, RunFacet] = {
        "errorMessage": error_message_run.ErrorMessageRunFacet(
            message="; ".join(parts), programmingLanguage=PROGRAMMING_LANGUAGE, producer=PRODUCER
        )
    }
    return _commit_event(RunState.FAIL, plan, at, facets)


# ---- ingestion runs ---------------------------------------------------------------------------


def ingestion_event(plan: IngestionPlan, at: float) -> RunEvent:
    """COMPLETE of the ingestion run of one lakeFS commit: the raw CSVs at it are its outputs.

    Args:
        plan: the commit and the raw CSVs it holds.
        at: event time when the commit's own time is unknown.
    """
    when = plan.created_at or at
    facets: dict[str, RunFacet] = {
        COMMIT_FACET: LakehookCommitRunFacet(
            commit=plan.commit,
            committer=plan.committer,
            message=plan.message,
            creationDate=event_time(plan.created_at) if plan.created_at else None,
            producer=PRODUCER,
        ),
        RUN_FACET: LakehookRunFacet(
            repository=plan.repository,
            branch=plan.branch,
            sourceCommit=plan.commit,
            producer=PRODUCER,
        ),
    }
    outputs = []
    for path in plan.raw_paths:
        raw = naming.raw_dataset(plan.repository, plan.branch, path)
        outputs.append(
            OutputDataset(
                namespace=raw.namespace,
                name=raw.name,
                facets={"version": _version(plan.commit), "dataSource": _source(raw)},
            )
        )
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=event_time(when),
        run=Run(runId=plan.run_id, facets=facets),
        job=_job(plan.job_name, "JOB"),
        inputs=[],
        outputs=outputs,
        producer=PRODUCER,
    )


# ---- building blocks --------------------------------------------------------------------------


def _job(name: str, job_type: str) -> Job:
    facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration=INTEGRATION, jobType=job_type, producer=PRODUCER
        )
    }
    return Job(namespace=naming.JOB_NAMESPACE, name=name, facets=facets)


def _engine() -> processing_engine_run.ProcessingEngineRunFacet:
    return processing_engine_run.ProcessingEngineRunFacet(
        version=LAKEHOOK_VERSION,
        name="lakehook",
        openlineageAdapterVersion=OPENLINEAGE_CLIENT_VERSION,
        producer=PRODUCER,
    )


def _commit_event(
    state: RunState, plan: CommitPlan, at: float, extra: Mapping[str, RunFacet]
) -> RunEvent:
    facets: dict[str, RunFacet] = {
        "processing_engine": _engine(),
        RUN_FACET: LakehookRunFacet(
            repository=plan.repository,
            branch=plan.branch,
            sourceCommit=plan.source_commit,
            producer=PRODUCER,
        ),
        **extra,
    }
    return RunEvent(
        eventType=state,
        eventTime=event_time(at),
        run=Run(runId=plan.run_id, facets=facets),
        job=_job(plan.job_name, "JOB"),
        producer=PRODUCER,
    )


def _table_event(
    state: RunState,
    plan: TablePlan,
    at: float,
    *,
    run_facets: dict[str, RunFacet],
    inputs: list[InputDataset],
    outputs: list[OutputDataset] | None = None,
) -> RunEvent:
    return RunEvent(
        eventType=state,
        eventTime=event_time(at),
        run=Run(runId=plan.run_id, facets=run_facets),
        job=_job(plan.job_name, "TASK"),
        inputs=inputs,
        outputs=outputs or [],
        producer=PRODUCER,
    )


def _table_run_facets(
    plan: TablePlan, parent: CommitPlan | None, run: TableRun | None = None
) -> dict[str, RunFacet]:
    facets: dict[str, RunFacet] = {
        "processing_engine": _engine(),
        RUN_FACET: LakehookRunFacet(
            repository=plan.repository,
            branch=plan.branch,
            sourceCommit=plan.source_commit,
            outputCommit=run.output_commit if run else None,
            reused=run.reused if run else None,
            producer=PRODUCER,
        ),
    }
    if parent is not None:
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent.run_id),
            job=parent_run.Job(namespace=naming.JOB_NAMESPACE, name=parent.job_name),
            root=parent_run.Root(
                run=parent_run.RootRun(runId=parent.run_id),
                job=parent_run.RootJob(namespace=naming.JOB_NAMESPACE, name=parent.job_name),
            ),
            producer=PRODUCER,
        )
    return facets


def _version(commit: str) -> dataset_version_dataset.DatasetVersionDatasetFacet:
    return dataset_version_dataset.DatasetVersionDatasetFacet(
        datasetVersion=commit, producer=PRODUCER
    )


def _source(dataset: DatasetName) -> datasource_dataset.DatasourceDatasetFacet:
    """The data source of a dataset: its namespace (``s3://<repo>``), as Marquez lists it."""
    return datasource_dataset.DatasourceDatasetFacet(
        name=dataset.namespace, uri=dataset.namespace, producer=PRODUCER
    )


def _inputs(plan: TablePlan, manifest: TableManifest | None = None) -> list[InputDataset]:
    raw = naming.raw_dataset(plan.repository, plan.branch, plan.raw_path)
    contents = naming.contents_dataset(plan.repository, plan.branch, plan.contents_path)
    raw_input_facets: dict[str, InputDatasetFacet] = {}
    if manifest is not None:
        raw_input_facets["dataQualityMetrics"] = (
            data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                columnMetrics={}, rowCount=manifest.rows, fileCount=1, producer=PRODUCER
            )
        )
    version: dict[str, DatasetFacet] = {
        "version": _version(plan.source_commit),
        "dataSource": _source(raw),
    }
    raw_facets = dict(version)
    if manifest is not None:
        raw_facets["schema"] = _raw_schema(manifest.columns)
    return [
        InputDataset(
            namespace=raw.namespace,
            name=raw.name,
            facets=raw_facets,
            inputFacets=raw_input_facets,
        ),
        InputDataset(namespace=contents.namespace, name=contents.name, facets=dict(version)),
    ]


def _output(
    plan: TablePlan,
    names: LineageNaming,
    run: TableRun | None = None,
    manifest: TableManifest | None = None,
) -> OutputDataset:
    table = naming.table_dataset(plan.repository, plan.branch, plan.table)
    facets: dict[str, DatasetFacet] = {"dataSource": _source(table)}
    output_facets: dict[str, OutputDatasetFacet] = {}
    if plan.schema:
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[
                symlinks_dataset.Identifier(namespace=n.namespace, name=n.name, type="TABLE")
                for n in (
                    names.trino_table(plan.schema, plan.table),
                    names.hive_table(plan.schema, plan.table),
                )
            ],
            producer=PRODUCER,
        )
    if run is not None and manifest is not None:
        raw = naming.raw_dataset(plan.repository, plan.branch, plan.raw_path)
        facets["schema"] = _schema(manifest.columns)
        facets["columnLineage"] = _column_lineage(manifest.columns, raw)
        facets["version"] = _version(run.output_commit or run.source_commit)
        facets["dataQualityMetrics"] = _quality_metrics(manifest, run.null_counts)
        facets[QUALITY_FACET] = LakehookQualityDatasetFacet(
            rowCount=manifest.rows,
            invalidValues=dict(manifest.invalid_values),
            nullKeys=dict(manifest.null_keys),
            warnings=list(manifest.warnings),
            producer=PRODUCER,
        )
        facets[DRIFT_FACET] = LakehookDriftDatasetFacet(
            driftClass=run.drift.drift_class,
            changes=[change.to_dict() for change in run.drift.changes],
            producer=PRODUCER,
        )
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=manifest.rows, fileCount=len(manifest.files), producer=PRODUCER
            )
        )
    return OutputDataset(
        namespace=table.namespace, name=table.name, facets=facets, outputFacets=output_facets
    )


def _schema(columns: Sequence[OutputColumn]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=column.name,
                type=column.type,
                description=column.label or None,
                ordinal_position=position,
            )
            for position, column in enumerate(columns, start=1)
        ],
        producer=PRODUCER,
    )


def _raw_schema(columns: Sequence[OutputColumn]) -> schema_dataset.SchemaDatasetFacet:
    """The raw CSV's columns that the table read (text; the declared type in the description).

    Marquez joins column lineage only to input fields it knows, so the raw dataset must name
    the fields the table's ``columnLineage`` points at.
    """
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=column.source,
                type="string",
                description=f"declared {column.declared!r}" if column.declared else None,
            )
            for column in columns
            if column.source is not None
        ],
        producer=PRODUCER,
    )


def _column_lineage(
    columns: Sequence[OutputColumn], raw: DatasetName
) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """``<key>_sk`` from its natural key's raw columns; every other column from its own."""
    raw_name = {column.name: column.source or column.name for column in columns}
    fields: dict[str, column_lineage_dataset.Fields] = {}
    for column in columns:
        if column.key_sources:
            sources = [raw_name.get(name, name) for name in column.key_sources]
            subtype, description = "TRANSFORMATION", KEY_DESCRIPTION
        elif column.source is not None:
            sources = [column.source]
            subtype, description = _conversion(column)
        else:
            continue  # declared but absent from the CSV: all NULL, derived from nothing
        transformation = column_lineage_dataset.Transformation(
            type="DIRECT", subtype=subtype, description=description
        )
        fields[column.name] = column_lineage_dataset.Fields(
            inputFields=[
                column_lineage_dataset.InputField(
                    namespace=raw.namespace,
                    name=raw.name,
                    field=source,
                    transformations=[transformation],
                )
                for source in sources
            ],
            transformationType=subtype,  # the deprecated field, for older consumers
            transformationDescription=description,
        )
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER)


def _conversion(column: OutputColumn) -> tuple[str, str]:
    """(subtype, description) of the step from a raw CSV column to a table column."""
    declared = (column.declared or "").strip().lower()
    if column.type == "varchar" and declared not in CHECKED_TEXT_TYPES:
        kept = f"declared {column.declared!r}" if column.declared else "undeclared"
        return "IDENTITY", f"text kept as is ({kept})"
    what = f"declared {column.declared!r}" if column.declared else "undeclared"
    return "TRANSFORMATION", f"parsed as {column.type} ({what}); invalid values become NULL"


def _quality_metrics(
    manifest: TableManifest, null_counts: Mapping[str, int]
) -> data_quality_metrics_dataset.DataQualityMetricsDatasetFacet:
    """``rowCount`` and, per column, ``nullCount`` and ``invalidCount`` (contract §10 v1.1).

    ``nullCount`` of ``<key>_sk`` is the rows with a missing natural key part; of the other
    columns, what processing counted (absent for a table reused without reprocessing).
    ``invalidCount``: values that did not fit the declared type (0 for undeclared text).
    """
    key_nulls = {key_column(key): count for key, count in manifest.null_keys.items()}
    metrics: dict[str, data_quality_metrics_dataset.ColumnMetrics] = {}
    for column in manifest.columns:
        nulls = key_nulls.get(column.name, null_counts.get(column.name))
        invalid = None if column.key_sources else manifest.invalid_values.get(column.name, 0)
        metrics[column.name] = ColumnQualityMetrics(nullCount=nulls, invalidCount=invalid)
    return data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
        columnMetrics=metrics,
        rowCount=manifest.rows,
        fileCount=len(manifest.files),
        producer=PRODUCER,
    )
