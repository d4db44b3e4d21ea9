"""Process one dataset of a plan: download its CSV, convert it, describe what was made.

``process_table`` returns a ``TableRun``: what it read (raw object, checksum, contents) and
what it wrote (local Parquet files under ``scratch/<table>/`` and the manifest that will
describe them in the repository). Bad input gives a ``TableRun`` with the error; outages raise
``TransientError`` so that the job is retried.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from lakehook.errors import InputError, KeyCollision
from pipeline import steps
from pipeline.model import MANIFEST_PREFIX, PROCESSING_VERSION, TableManifest, TableRun
from pipeline.ports import LakeFS, iter_chunks
from pipeline.processing.contents import MAX_COLUMNS
from pipeline.processing.convert import convert_file
from pipeline.processing.plan import BranchPlan, TableTask


def table_prefix(table: str) -> str:
    return f"tables/{table}/"


def local_dir(scratch: Path, table: str) -> Path:
    return scratch / "tables" / table


def download(lakefs: LakeFS, repo: str, ref: str, path: str, target: Path) -> None:
    """Stream one object to a local file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stream = lakefs.open_object(repo, ref, path)
    try:
        with target.open("wb") as out:
            for chunk in iter_chunks(stream):
                out.write(chunk)
    finally:
        stream.close()


def process_table(
    lakefs: LakeFS,
    plan: BranchPlan,
    task: TableTask,
    scratch: Path,
    max_columns: int = MAX_COLUMNS,
) -> TableRun:
    base = begin_run(plan, task)
    csv_path = scratch / "raw" / f"{task.table}.csv"
    out_dir = local_dir(scratch, task.table)
    shutil.rmtree(out_dir, ignore_errors=True)
    with steps.step(steps.LAKEFS_READS):
        download(lakefs, plan.repository, plan.head_commit, task.raw_path, csv_path)
    try:
        result = convert_file(
            csv_path,
            task.contents,
            plan.config.keys,
            out_dir,
            display_path=task.raw_path,
            invalid_values=plan.config.invalid_values,
            max_columns=max_columns,
        )
    except (InputError, KeyCollision) as err:
        return failed_run(base, task, err)
    finally:
        csv_path.unlink(missing_ok=True)
    manifest = TableManifest(
        table=task.table,
        dataset=task.dataset,
        source_commit=plan.source_commit,
        raw_path=task.raw_path,
        raw_checksum=task.raw_checksum,
        contents_path=plan.contents_path,
        contents_fingerprint=task.contents.fingerprint if task.contents else "",
        keys_fingerprint=plan.config.keys_fingerprint,
        processing_version=PROCESSING_VERSION,
        fingerprint=task.fingerprint,
        files=tuple(f"{table_prefix(task.table)}{f.name}" for f in result.files),
        columns=result.columns,
        rows=result.rows,
        invalid_values=result.invalid_values,
        null_keys=result.null_keys,
        keys=result.keys,
        warnings=result.warnings,
    )
    assert manifest.path.startswith(MANIFEST_PREFIX)
    return replace(base, manifest=manifest, null_counts=result.null_counts, finished_at=time.time())


def begin_run(plan: BranchPlan, task: TableTask, *, in_place: bool = False) -> TableRun:
    """The run of one dataset as it starts, whichever engine builds it."""
    return TableRun(
        repository=plan.repository,
        branch=plan.branch,
        source_commit=plan.source_commit,
        table=task.table,
        dataset=task.dataset,
        raw_path=task.raw_path,
        raw_checksum=task.raw_checksum,
        contents_path=plan.contents_path,
        started_at=time.time(),
        in_place=in_place,
    )


def failed_run(base: TableRun, task: TableTask, err: InputError | KeyCollision) -> TableRun:
    """``base`` ended by an input failure: the error names file, line, column and a hint."""
    detail = (
        err.as_dict()
        if isinstance(err, InputError)
        else {"file": task.raw_path, "message": str(err), "hint": "report this to lakehook"}
    )
    return replace(
        base,
        error=f"{task.raw_path}: {detail['message']}",
        error_detail={"table": task.table, "dataset": task.dataset, **detail},
        finished_at=time.time(),
    )
