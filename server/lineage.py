"""The lineage deliverer's life in ``lakehook serve``: a CherryPy bus plugin.

Started with the server's bus and stopped with it, in the intake process. It reads the
journal (``pipeline/lineage/journal.py``), so events written by any process (workers in their
own processes included) reach Marquez within a poll interval. Without ``LAKEHOOK_MARQUEZ_URL``
there is no plugin: events are journaled only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from cherrypy.process.plugins import SimplePlugin
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.lineage.delivery import Deliverer

log = logging.getLogger(__name__)


class LineageDeliveryPlugin(SimplePlugin):  # type: ignore[misc]
    """Runs ``deliverer``'s thread while the bus runs."""

    def __init__(self, bus: Any, deliverer: Deliverer) -> None:
        super().__init__(bus)
        self.deliverer = deliverer

    def start(self) -> None:
        self.deliverer.start()
        log.info(
            "lineage: delivering %s to %s", self.deliverer.journal.path, self.deliverer.endpoint.url
        )

    start.priority = 70  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.deliverer.stop()

    stop.priority = 30  # type: ignore[attr-defined]


class LineageMetrics(Collector):
    """``lakehook_lineage_events_{delivered,failed}_total`` and ``..._pending`` at scrape time."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        d = self.deliverer
        yield CounterMetricFamily(
            "lakehook_lineage_events_delivered",
            "Lineage events Marquez accepted (2xx) since the server started",
            value=d.delivered_total,
        )
        yield GaugeMetricFamily(
            "lakehook_lineage_events_pending",
            "Lineage events in the journal not delivered yet",
            value=d.pending(),
        )
        yield CounterMetricFamily(
            "lakehook_lineage_events_failed",
            "Lineage events Marquez refused for good (4xx; kept in rejected.jsonl)",
            value=d.rejected_total,
        )
        yield CounterMetricFamily(
            "lakehook_lineage_delivery_errors",
            "Delivery passes stopped because Marquez did not answer (retried with backoff)",
            value=d.failed_passes,
        )
