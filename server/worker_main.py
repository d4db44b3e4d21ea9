"""A worker process of ``lakehook serve``: started and replaced by ``server.supervisor``.

Two roles. A **worker** claims one job at a time from the shared SQLite queue and runs it
(``server.worker.WorkerPool`` in this process's main thread), inside an address-space ceiling
(``RLIMIT_AS`` = ``worker_memory_limit_mb``): a job that exceeds it gets ``MemoryError`` and the
process ends with ``EXIT_MEMORY``, so the supervisor knows which limit was hit. The
**reconciler** sweeps every repository on its timer and enqueues what differs.

Either dies with the intake (a pidfd watch) and ignores Ctrl-C (the intake stops it); on
SIGTERM a worker stops after its current job, the reconciler at once. Nothing is shared with
the intake but the database file and the metrics directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import signal
import threading
import time
from pathlib import Path
from typing import Protocol

from lakehook.settings import Settings

log = logging.getLogger("lakehook.worker")

WORKER, RECONCILER = "worker", "reconciler"


class Ready(Protocol):
    def set(self) -> None: ...


EXIT_MEMORY = 3  # the job exceeded the worker's memory ceiling
EXIT_ORPHANED = 4  # the intake process is gone


def lower_priority(increment: int) -> int:
    """Run this process ``increment`` nicer than the intake that started it; returns its niceness.

    On a busy machine the kernel then gives the cores to the intake as soon as a request comes
    in, instead of sharing them evenly with a worker that is parsing a large CSV (issue 16:
    the webhook ack's p99 under load). With idle cores the worker runs as fast as before.
    """
    return os.nice(increment) if increment else os.nice(0)


PROC = Path("/proc")
ROOT_GROUP = "/"  # the kernel's own autogroup: every process no setsid() has moved since boot


def autogroup(pid: int | str = "self") -> tuple[str, int] | None:
    """``pid``'s autogroup scheduling group and its niceness ("/autogroup-42 nice 0"), or None
    where the kernel has no autogroups (no ``CONFIG_SCHED_AUTOGROUP``: no file).

    A process in the kernel's root group, one whose session descends from PID 1's without a
    ``setsid()`` (the CI machine runs its jobs so), reads an empty file: that is
    ``(ROOT_GROUP, 0)``. Its threads compete one by one at the top level, each at its own
    niceness, and a new session still gets a group of its own. Until 2026-12-02 the empty
    file read as "no autogroups", and the workers' groups stayed at the intake's weight.
    """
    try:
        fields = (PROC / str(pid) / "autogroup").read_text().split()
    except OSError:
        return None
    if not fields:
        return ROOT_GROUP, 0
    try:
        return fields[0], int(fields[-1])
    except ValueError:
        return None


def leave_intake_group(increment: int) -> int | None:
    """Run this process in a session of its own whose scheduling group is ``increment`` nicer
    than the intake's; returns that group's niceness, None where there is no such group.

    Linux's autogroup scheduling (``kernel.sched_autogroup_enabled``, on by default) shares the
    cores between sessions first, and only then between the threads of one session by their
    niceness. In the intake's session, a worker's niceness counted against the intake only,
    never against other sessions' work (lakeFS, Trino, anything else on the machine), and the
    intake's session competed with those as busy as its workers made it. In a group of its own
    that is ``increment`` nicer, a worker yields to every other session, and the intake's group
    stays idle until a request comes. An intake in the kernel's root group
    (:data:`ROOT_GROUP`) counts as niceness 0 there. Where the kernel makes no autogroups
    (:func:`autogroup` is None), only the session changes. Measured side by side in
    ``docs/benchmarks.md`` (intake isolation). An ``increment`` of 0 changes nothing: a group
    of its own at the intake's weight was worse than none (a worker's group then weighs as
    much as the intake's).
    """
    if increment <= 0:
        return None
    before = autogroup()
    with contextlib.suppress(OSError):  # a session leader already: stays where it is
        os.setsid()
    after = autogroup()
    if before is None or after is None or after[0] in (before[0], ROOT_GROUP):
        return None  # no autogroups, or still in the intake's group: never renice that
    nice = min(before[1] + increment, 19)
    try:
        (PROC / "self" / "autogroup").write_text(str(nice))
    except OSError:
        return None
    return nice


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space: allocations past it raise ``MemoryError``."""
    ceiling = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))


def die_with(intake: int) -> None:
    """End this process as soon as the intake process ends, even by SIGKILL.

    A thread waits on a pidfd of the intake (Linux), else polls it every second. (The fork
    server that started this process cannot do it: it lives as long as its children do.)
    """
    try:
        pidfd: int | None = os.pidfd_open(intake)
    except ProcessLookupError:
        os._exit(EXIT_ORPHANED)
    except (AttributeError, OSError):  # pragma: no cover - no pidfd: poll instead
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:  # pragma: no cover
            while True:
                time.sleep(1)
                try:
                    os.kill(intake, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="lakehook-intake-watch", daemon=True).start()


def main(
    settings: Settings, role: str, index: int, intake: int, ready: Ready | None = None
) -> None:
    """Entry point of the process (a ``multiprocessing`` target); ``intake``: its pid;
    ``ready`` is set once the process takes jobs (``/healthz`` shows it)."""
    die_with(intake)
    leave_intake_group(settings.worker_nice)
    if role != WORKER:  # a worker lowers only its job threads' priority (server.worker)
        lower_priority(settings.worker_nice)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    if role == WORKER:  # finish the job at hand; the reconciler just ends (it only enqueues)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

    from lakehook import faults
    from server.logs import configure

    configure(settings.log_level, settings.log_dir)
    faults.arm(settings.fault_point, settings.testing)  # tests only; refused otherwise
    faults.kill_together_with(intake)  # a kill point kills the whole server, as it means
    if role == WORKER:
        limit_memory(settings.worker_memory_limit_mb)
    try:
        if role == WORKER:
            _work(settings, stop, ready)
        else:
            _reconcile(settings, stop, ready)
    except MemoryError:
        # the frames holding the memory are gone with the exception: say so, then end
        log.error(
            "worker %d exceeded its memory ceiling (%d MB); ending it",
            index,
            settings.worker_memory_limit_mb,
        )
        os._exit(EXIT_MEMORY)


def _work(settings: Settings, stop: threading.Event, ready: Ready | None) -> None:
    from server.metrics import Metrics
    from server.state import open_state
    from server.worker import WorkerPool

    state = open_state(settings, "worker")
    store, queue = state.store, state.queue
    from pipeline.service import build_processor

    processor = build_processor(settings, store)
    pool = WorkerPool(
        None,
        queue,
        processor,
        store,
        settings,
        Metrics(),
        processor.lakefs,
        quarantine=state.quarantine(settings),
        fatal=(MemoryError,),
        job_nice=settings.worker_nice,
        job_idle=settings.worker_scheduling == "idle",
    )
    processor.before_dataset = pool.before_dataset
    log.info("worker process %d ready", os.getpid())
    if ready is not None:
        ready.set()
    pool.run_here(stop)


def _reconcile(settings: Settings, stop: threading.Event, ready: Ready | None) -> None:
    from pipeline.service import build_processor
    from server.metrics import Metrics
    from server.state import open_state
    from server.worker import Reconciler

    state = open_state(settings, "reconciler")
    store = state.store
    processor = build_processor(settings, store)
    reconciler = Reconciler(
        processor.lakefs,
        state.queue,
        store,
        Metrics(),
        processor=processor,
        max_refs=settings.reconcile_max_refs,
        discovery_interval=settings.discovery_interval,
        working_branch_grace=settings.working_branch_grace,
        server_url=settings.server_url,
        job_retention=settings.job_retention_days * 86400,
    )
    log.info("reconciler process %d ready", os.getpid())
    if ready is not None:
        ready.set()
    while not stop.wait(settings.reconcile_interval):
        try:
            reconciler.sweep()
        except Exception:  # never let the timer die
            log.exception("reconcile sweep crashed")
