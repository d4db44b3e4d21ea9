"""Lineage: OpenLineage runs for processed tables, journaled and delivered to Marquez.

``naming`` (dataset and job names, run ids), ``events`` (pure ``RunEvent`` construction from
``pipeline.model.TableRun``), ``recorder`` (context managers around processing), ``journal``
and ``delivery`` (the JSON Lines journal and the background Marquez deliverer), ``commands``
(``lakehook lineage flush|status``). See docs/lineage.md.

Composition (the server's bus plugin owns the deliverer's thread)::

    recorder = build_recorder(settings)   # LineageRecorder on build_sink(settings)
    recorder.start()                      # background delivery, if Marquez is configured
    ...
    recorder.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakehook.settings import Settings
    from pipeline.lineage.delivery import JournalSink
    from pipeline.lineage.recorder import LineageRecorder


def build_sink(settings: Settings) -> JournalSink:
    """The production ``LineageSink``: journal plus (not started) Marquez deliverer."""
    from pipeline.lineage.delivery import build_sink as _build_sink

    return _build_sink(settings)


def build_recorder(settings: Settings) -> LineageRecorder:
    """A ``LineageRecorder`` on ``build_sink(settings)``; ``start()``/``stop()`` its delivery."""
    from pipeline.lineage.recorder import LineageRecorder

    return LineageRecorder(build_sink(settings), settings)


__all__ = ["build_recorder", "build_sink"]
