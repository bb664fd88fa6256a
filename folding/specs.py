"""What the fold pipelines share without importing TensorFlow: a model input's
description and the stage callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class InputSpec:
    id: int
    name: str
    shape: tuple[int | None, ...]
    dtype: str


StageCallback = Callable[[str, "float | None"], None]
"""``on_stage(stage, progress)``: told when a stage ("folding", "exporting",
"verifying") starts, and of the fraction of it done (0..1) where that is known."""


def no_stages(stage: str, progress: float | None) -> None:
    """The default ``on_stage``: nobody is told."""


Fraction = Callable[[float], None]
"""``progress(fraction)``: how much of one step is done (0..1)."""

MIN_INTERVAL = 0.1
"""Least time between two reports of one stage's progress: a fold worker's report
crosses a process boundary (``service.jobs.in_worker.StageReporter``)."""


def no_progress(fraction: float) -> None:
    """The default ``progress``: nobody is told."""


class StageProgress:
    """``on_stage(stage, fraction)`` told of one stage's progress at most once every
    ``interval`` seconds; ``part(start, end)`` maps a step's own fraction onto
    ``start..end`` of the stage, so several steps share the stage's bar and its limit."""

    def __init__(self, on_stage: StageCallback, stage: str, interval: float = MIN_INTERVAL):
        self.on_stage = on_stage
        self.stage = stage
        self.interval = interval
        self.last_report = time.monotonic()  # the stage's start was just reported

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last_report < self.interval:
            return
        self.last_report = now
        self.on_stage(self.stage, min(max(fraction, 0.0), 1.0))

    def part(self, start: float, end: float) -> Fraction:
        return lambda fraction: self(start + (end - start) * fraction)
