"""Prometheus metrics of the server, in their own registry (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


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
        self.events = Counter(
            "lakehook_events",
            "Webhook events received",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "lakehook_job_duration_seconds",
            "Time to run a job",
            ["kind", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
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

    def watch_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobStates(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
