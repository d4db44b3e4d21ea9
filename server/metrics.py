"""Prometheus metrics of the server, in their own registry (``GET /metrics``).

``lakehook serve`` runs the intake and the workers in separate processes
(``server.supervisor``): ``use_directory`` switches this process and every process it starts to
prometheus_client's multiprocess mode, where each process writes its counters and histograms to
files in one directory under the state dir and the intake's ``GET /metrics`` adds them up. The
in-process server of the unit tests keeps plain in-memory metrics.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_directory(path: Path) -> None:
    """Make this process, and the processes it starts, keep their metrics in ``path``.

    Called by the intake before it starts its workers; the directory is emptied (metrics of a
    previous run are not this run's).
    """
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the worker processes
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class _JobStates(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("lakehook_jobs", "Jobs in the queue by state", labels=["state"])
        for state, n in self.counts().items():
            family.add_metric([state], n)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._views: list[Collector] = []  # collectors computed at scrape time (job states)
        self.events = Counter(
            "lakehook_events",
            "Webhook events received",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "lakehook_http_request_seconds",
            "Time the intake took to answer a request, from its start to the response sent, "
            "by route (webhook, gate, api, health, metrics, other)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "lakehook_job_duration_seconds",
            "Time to run a job",
            ["kind", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.job_steps = Histogram(
            "lakehook_job_step_seconds",
            "Seconds a job spent per step (pipeline/steps.py: lakefs_reads, processing, upload, "
            "commit_merge, metastore, verification)",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.retries = Counter(
            "lakehook_job_retries", "Transient failures retried", ["kind"], registry=self.registry
        )
        self.sweeps = Counter(
            "lakehook_reconcile_sweeps", "Reconciler sweeps", ["outcome"], registry=self.registry
        )
        self.reconcile_enqueued = Counter(
            "lakehook_reconcile_enqueued", "Jobs enqueued by the reconciler", registry=self.registry
        )
        self.metastore_repairs = Counter(
            "lakehook_metastore_repairs",
            "Refs whose metastore differed from their manifests without an event (re-synced)",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "lakehook_reconcile_errors",
            "Errors of reconciler sweeps (a ref, a repository or the whole sweep)",
            registry=self.registry,
        )
        self.working_branches_deleted = Counter(
            "lakehook_working_branches_deleted",
            "Stale _lakehook-* working branches deleted by the reconciler",
            registry=self.registry,
        )
        self.worker_errors = Counter(
            "lakehook_worker_errors",
            "Errors of the worker loop itself (claiming or ending a job)",
            ["where"],
            registry=self.registry,
        )
        self.lease_lost = Counter(
            "lakehook_lease_lost",
            "Jobs whose lease was lost (taken over, renewal failed) and jobs stopped for it",
            ["reason"],
            registry=self.registry,
        )
        self.failures = Counter(
            "lakehook_job_failures",
            "Job failures by kind (input, service, internal)",
            ["kind"],
            registry=self.registry,
        )
        self.gate = Counter(
            "lakehook_gate_decisions", "Merge gate decisions", ["allowed"], registry=self.registry
        )
        self.worker_restarts = Counter(
            "lakehook_worker_restarts",
            "Worker processes replaced after they ended, by role and why",
            ["role", "reason"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "lakehook_quarantined_jobs",
            "Jobs quarantined after killing or exhausting two workers, by limit",
            ["limit"],
            registry=self.registry,
        )

    def watch_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        self.watch(_JobStates(counts))

    def watch(self, view: Collector) -> None:
        """Add a collector computed at scrape time (in multiprocess mode too)."""
        self._views.append(view)
        self.registry.register(view)

    def render(self) -> bytes:
        """Prometheus text: this process's metrics, or every process's in multiprocess mode."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        for view in self._views:
            registry.register(view)
        return generate_latest(registry)
