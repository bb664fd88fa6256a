"""Timing two sessions like with like: interleaved rounds in one thread, paired ratios.

``:compare`` reports how much faster the folded model runs than the unfolded one.
Both run here the same way (each session called directly, in the same worker
thread, no batching queue in front of either), alternating which goes first, so
a drift of the machine falls on both alike. The ratio is the median of the
per-round ratios, and its spread the interquartile range of those: a pair of
runs shares the machine's state of the moment, so their ratio is steadier than
a ratio of two medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_ROUNDS_TIME_S = 0.25  # keep timing small models until this much time was spent...
MAX_ROUNDS = 500  # ...or this many rounds


@dataclass(frozen=True)
class Spread:
    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if len(values) < 2:
            return cls(values[0], values[0], values[0])
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3)

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "iqr": self.q3 - self.q1}


@dataclass(frozen=True)
class Timing:
    rounds: int
    milliseconds: dict[str, Spread]
    ratio: Spread  # second / first, per round
    outputs: dict[str, list[Any]]  # each run's first answer
    ratios: dict[str, Spread] | None = None  # every run but the first: it / the first


def interleaved(
    runs: dict[str, Callable[[], list[Any]]],
    min_rounds: int,
    min_time_s: float = MIN_ROUNDS_TIME_S,
    max_rounds: int = MAX_ROUNDS,
) -> Timing:
    """Time the callables of ``runs`` (the first is the baseline of the ratios) in
    rounds that rotate which goes first; one warm-up each."""
    names = list(runs)
    outputs = {name: runs[name]() for name in names}  # warm-up, and the answers compared
    samples: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    started = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (
        rounds < max_rounds and time.perf_counter() - started < min_time_s
    ):
        shift = rounds % len(names)
        this_round = {}
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            runs[name]()
            this_round[name] = (time.perf_counter() - began) * 1e3
            samples[name].append(this_round[name])
        if this_round[names[0]] > 0:
            for name in names[1:]:
                ratios[name].append(this_round[name] / this_round[names[0]])
        rounds += 1
    spreads = {name: Spread.of(values or [float("nan")]) for name, values in ratios.items()}
    return Timing(
        rounds,
        {name: Spread.of(values) for name, values in samples.items()},
        spreads[names[1]],
        outputs,
        spreads,
    )
