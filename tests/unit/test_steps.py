"""Seconds per step of a job (``pipeline/steps.py``): exclusive, and free outside a job."""

from __future__ import annotations

import time

import pytest

from pipeline import steps


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_nested_step_pauses_the_outer_one(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    with steps.recording() as times:
        with steps.step(steps.PROCESSING):
            clock.now += 1.0
            with steps.step(steps.LAKEFS_READS):  # a download inside processing
                clock.now += 0.25
            clock.now += 2.0
        clock.now += 5.0  # outside any step: "other"
        with steps.step(steps.LAKEFS_READS):
            clock.now += 0.5
    assert times.seconds == {steps.PROCESSING: 3.0, steps.LAKEFS_READS: 0.75}
    assert times.rounded() == {"lakefs_reads": 0.75, "processing": 3.0}


def test_steps_outside_a_recording_record_nothing() -> None:
    with steps.recording() as times:
        pass
    with steps.step(steps.UPLOAD):
        pass
    assert times.seconds == {}


def test_a_step_that_raises_is_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)

    def failing_sync() -> None:
        with steps.step(steps.METASTORE):
            clock.now += 1.5
            raise RuntimeError("HMS down")

    with steps.recording() as times:
        with pytest.raises(RuntimeError):
            failing_sync()
        with steps.step(steps.VERIFICATION):
            clock.now += 0.5
    assert times.seconds == {steps.METASTORE: 1.5, steps.VERIFICATION: 0.5}
