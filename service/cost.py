"""How long a session run takes, measured once when a version is loaded.

The executor runs a request on the event loop when it is cheaper than a thread
hop (see ``BatchPolicy.inline_threshold_us``), so it needs an estimate per row
count: one run of 1 row and one of 16, on zeros, medians of 5, a line through
them. Measuring takes a few session runs: the caller does it off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from service.runtime import Session


@dataclass(frozen=True)
class RunCost:
    """Microseconds a run of ``rows`` rows takes: ``single + per_row * (rows - 1)``."""

    single_us: float
    per_row_us: float

    @classmethod
    def unknown(cls) -> RunCost:
        """For shapes that vary or a model that refuses zeros: never inline."""
        return cls(float("inf"), 0.0)

    def micros(self, rows: int) -> float:
        return self.single_us + self.per_row_us * (rows - 1)


def measure(session: Session) -> RunCost:
    if any(dim < 0 for meta in session.inputs for dim in meta.shape[1:]):
        return RunCost.unknown()

    def median_us(rows: int) -> float:
        feed = {meta.name: np.zeros((rows, *meta.shape[1:]), meta.dtype) for meta in session.inputs}
        session.run(feed)
        samples = []
        for _ in range(5):
            start = time.perf_counter_ns()
            session.run(feed)
            samples.append(time.perf_counter_ns() - start)
        return sorted(samples)[2] / 1000

    try:
        single = median_us(1)
        wide = median_us(16)
    except Exception:  # a model that rejects zeros
        return RunCost.unknown()
    return RunCost(single, max(wide - single, 0.0) / 15)
