"""How fast a variant answers next to float32: median latencies, interleaved, on one
intra-op thread, within a time budget per batch size."""

from __future__ import annotations

import statistics
import time

import numpy as np

LATENCY_BATCHES = (1, 8)
LATENCY_BUDGET_S = 0.6  # per model and batch size


def latencies(
    fp32: bytes, variant: bytes, names: list[str], rows: list[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Median latency of float32 and the variant, interleaved, one intra-op thread."""
    first, second = _timing_session(fp32), _timing_session(variant)
    table = {}
    for batch in LATENCY_BATCHES:
        feed = {name: _rows_of(array, batch) for name, array in zip(names, rows, strict=True)}
        samples: dict[str, list[float]] = {"fp32": [], "variant": []}
        for runner in (first, second):
            runner.run(None, feed)  # warm-up
        deadline = time.perf_counter() + LATENCY_BUDGET_S
        while time.perf_counter() < deadline or len(samples["fp32"]) < 5:
            for key, runner in (("fp32", first), ("variant", second)):
                started = time.perf_counter()
                runner.run(None, feed)
                samples[key].append((time.perf_counter() - started) * 1e3)
            if len(samples["fp32"]) >= 200:
                break
        fp32_ms = statistics.median(samples["fp32"])
        variant_ms = statistics.median(samples["variant"])
        table[f"batch {batch}"] = {
            "fp32": fp32_ms,
            "variant": variant_ms,
            "speedup": fp32_ms / variant_ms if variant_ms else None,
        }
    return table


def _rows_of(array: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(array))
    return np.concatenate([array] * reps)[:batch]


def _timing_session(data: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
