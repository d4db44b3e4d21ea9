"""Which engine processes each dataset of a plan, and running them (contract §4 ``engine``).

``engine: pyarrow`` or ``engine: trino`` in ``lakehook.yaml`` picks one for every dataset;
``auto`` (the default) sends a dataset to Trino when its raw CSV is larger than
``LAKEHOOK_TRINO_ENGINE_THRESHOLD`` bytes. The pyarrow engine runs here, one dataset after
another (it keeps both cores busy itself); Trino datasets run as concurrent queries meanwhile,
since the work happens in Trino. Runs come back in plan order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pipeline.model import TableRun
from pipeline.ports import LakeFS
from pipeline.processing.contents import MAX_COLUMNS
from pipeline.processing.plan import BranchPlan, TableTask
from pipeline.processing.table import process_table
from pipeline.processing.trino_engine import PYARROW, TRINO, TrinoEngine

TRINO_CONCURRENCY = 4  # datasets whose statements run in Trino at the same time


def engine_for(configured: str, raw_size: int, threshold: int) -> str:
    """The engine of one dataset: ``engine`` from lakehook.yaml, ``auto`` by raw CSV size."""
    if configured in (PYARROW, TRINO):
        return configured
    return TRINO if raw_size > threshold else PYARROW


def process_tasks(
    lakefs: LakeFS,
    plan: BranchPlan,
    scratch: Path,
    threshold: int,
    trino: Callable[[], TrinoEngine],
    max_columns: int = MAX_COLUMNS,
    before: Callable[[TableTask], None] | None = None,
) -> list[TableRun]:
    """A ``TableRun`` per task of ``plan``, each made by its engine, in plan order.

    ``before(task)`` is called right before a task is processed in this process (the worker
    records which file it works on: a worker that dies of it names it).
    """
    engines = [engine_for(plan.config.engine, t.raw_size, threshold) for t in plan.tasks]

    def local(task: TableTask) -> TableRun:
        if before is not None:
            before(task)
        return process_table(lakefs, plan, task, scratch, max_columns)

    if TRINO not in engines:
        return [local(task) for task in plan.tasks]
    engine = trino()
    engine.prepare(plan)
    with ThreadPoolExecutor(TRINO_CONCURRENCY, thread_name_prefix="trino-engine") as pool:
        pending: dict[str, Future[TableRun]] = {
            task.table: pool.submit(engine.process_table, plan, task, scratch, max_columns)
            for task, name in zip(plan.tasks, engines, strict=True)
            if name == TRINO
        }
        here = {
            task.table: local(task)
            for task, name in zip(plan.tasks, engines, strict=True)
            if name == PYARROW
        }
        return [
            here[task.table] if task.table in here else pending[task.table].result()
            for task in plan.tasks
        ]
