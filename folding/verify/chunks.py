"""The probe rows run a few at a time, so that verifying a large network shows progress.

One reference call of ResNet50 on its probes takes seconds with nothing to report. In
inference mode a row's answer does not depend on the rows beside it, so the rows are
run in chunks, each followed by a progress report, and the answers concatenated. Every
model of one verification (the reference and each ONNX variant) runs over the same
chunks, so even a model that did mix rows would be compared like with like.

The chunk size is measured, not guessed: the first chunk is small, and the rest are
sized from its time so that each takes about ``CHUNK_SECONDS``; a small model's
probes thus run in two calls. Rows are not chunked when an input's batch axis is
static, or when an output has no batch axis (its first dimension is not the rows) or
its chunks do not line up (their other dimensions differ).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from folding.specs import Fraction

Run = Callable[[list[np.ndarray]], Sequence[np.ndarray]]
"""A model as a function from its input arrays to its output arrays."""

CHUNK_SECONDS = 0.5
"""About how long one chunk after the first runs."""
FIRST_CHUNKS = 8
"""The first chunk is this fraction of the rows (1/8), or one row."""


def _silent(fraction: float) -> None:
    pass


@dataclass(frozen=True)
class Chunks:
    """Row ranges ``[start, stop)`` covering the probes in order."""

    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def measured(
        cls,
        run: Run,
        arrays: Sequence[np.ndarray],
        progress: Fraction = _silent,
        *,
        batched: bool = True,
        seconds: float = CHUNK_SECONDS,
    ) -> tuple[Chunks, list[np.ndarray]]:
        """``run``'s answers on ``arrays`` and the chunks they were computed over,
        sized by timing the first; ``batched``: whether every input's first axis is
        the rows (else one chunk)."""
        rows = len(arrays[0]) if arrays else 0
        first = max(1, rows // FIRST_CHUNKS)
        if not batched or rows <= 1:
            return cls(((0, rows),)), _as_arrays(run(list(arrays)))
        started = time.perf_counter()
        head = _as_arrays(run([array[:first] for array in arrays]))
        per_row = (time.perf_counter() - started) / first
        if any(np.ndim(output) == 0 or len(output) != first for output in head):
            return cls(((0, rows),)), _as_arrays(run(list(arrays)))  # not one answer per row
        progress(first / rows)
        size = max(first, math.floor(seconds / per_row)) if per_row > 0 else rows
        bounds = [(0, first)] + [
            (start, min(start + size, rows)) for start in range(first, rows, size)
        ]
        chunks = cls(tuple(bounds))
        rest = chunks._map(run, arrays, progress, skip=1)
        joined = _joined([[h, *r] for h, r in zip(head, rest, strict=True)])
        if joined is None:  # answers shaped by the rows beside them: run them together
            return cls(((0, rows),)), _as_arrays(run(list(arrays)))
        return chunks, joined

    def map(
        self, run: Run, arrays: Sequence[np.ndarray], progress: Fraction = _silent
    ) -> list[np.ndarray]:
        """``run``'s answers on ``arrays``, computed chunk by chunk and concatenated."""
        if len(self.bounds) > 1:
            joined = _joined(self._map(run, arrays, progress))
            if joined is not None:
                return joined
        answers = _as_arrays(run(list(arrays)))
        progress(1.0)
        return answers

    def _map(
        self, run: Run, arrays: Sequence[np.ndarray], progress: Fraction, skip: int = 0
    ) -> list[list[np.ndarray]]:
        """Per output, its answer on each chunk after the first ``skip``."""
        rows = self.bounds[-1][1]
        parts: list[list[np.ndarray]] = []
        for start, stop in self.bounds[skip:]:
            answers = _as_arrays(run([array[start:stop] for array in arrays]))
            if not parts:
                parts = [[] for _ in answers]
            for collected, answer in zip(parts, answers, strict=True):
                collected.append(answer)
            progress(stop / rows)
        return parts


def _joined(parts: list[list[np.ndarray]]) -> list[np.ndarray] | None:
    """Each output's chunks concatenated along the rows; None when an output's chunks
    differ past the first axis (padded to the longest row of its chunk, say)."""
    for chunks in parts:
        if any(np.ndim(c) == 0 or c.shape[1:] != chunks[0].shape[1:] for c in chunks):
            return None
    return [np.concatenate(chunks) for chunks in parts]


def _as_arrays(outputs: Sequence[object]) -> list[np.ndarray]:
    return [np.asarray(output) for output in outputs]
