"""Measure what each BatchNormalization's input really looks like at inference, and
re-estimate the moving statistics from it.

The model runs in inference mode (``training=False``: Dropout and the other
noise layers are identities, every BN normalises with its moving statistics) up
to each BN's input. The mean and the (biased, as Keras's own training update
uses) variance over every axis but the BN's own become its new ``moving_mean``
and ``moving_variance``. A BN's input depends on the BNs before it, so BNs are
re-estimated in waves: each wave holds the BNs with no unfinished BN upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from folding.diagnostics import variance_shift
from folding.errors import FoldingError, ProbeError
from folding.keras_graph.batch_norm import batch_norm_params, batch_norm_stats
from folding.keras_graph.graph import Call, Graph, rebuild, trace
from folding.report import RecalibratedLayer, Recalibration

BATCH_SIZE = 256


@dataclass(frozen=True)
class InputStatistics:
    """Per-channel mean and variance of one BN's input on the calibration data."""

    mean: np.ndarray
    variance: np.ndarray
    samples: int


def load_calibration(model: keras.Model, path: Path) -> list[np.ndarray]:
    """The ``.npy`` (one input) or ``.npz`` (by input name) at ``path``, checked
    against the model's inputs like a probe file."""
    from folding.verify.probes import load_user_probes

    try:
        arrays = load_user_probes(trace(model).inputs, Path(path))
    except FoldingError as error:
        raise ProbeError(f"calibration data: {error}") from None
    return arrays


def input_statistics(
    model: keras.Model, calibration: Sequence[np.ndarray]
) -> dict[str, InputStatistics]:
    """Each BN's input statistics (by the BN's name in the fold report) on ``calibration``,
    with the model's weights as they are."""
    graph = trace(model)
    return _measure(graph, _batch_norms(graph), calibration)


def recalibrate(model: keras.Model, calibration: Sequence[np.ndarray]) -> Recalibration:
    """Set every BN's moving mean and variance to its input's statistics on
    ``calibration``; return each BN's statistics before and after."""
    graph = trace(model)
    calls = _batch_norms(graph)
    initial = _measure(graph, calls, calibration)
    before = {call.name: batch_norm_params(call.layer) for call in calls}
    pending = list(calls)
    while pending:
        wave = [call for call in pending if not _upstream(graph, call) & {id(c) for c in pending}]
        if not wave:  # cannot happen in a traced (acyclic) graph
            raise FoldingError("BatchNormalizations depend on each other in a cycle")
        measured = initial if len(wave) == len(calls) else _measure(graph, wave, calibration)
        for call in wave:
            statistics = measured[call.name]
            bn = call.layer
            bn.moving_mean.assign(statistics.mean.reshape(bn.moving_mean.shape))
            bn.moving_variance.assign(statistics.variance.reshape(bn.moving_variance.shape))
        pending = [call for call in pending if call not in wave]
    return Recalibration(
        samples=len(calibration[0]),
        layers=[
            RecalibratedLayer(
                bn=call.name,
                before=batch_norm_stats(before[call.name]),
                after=batch_norm_stats(batch_norm_params(call.layer)),
                variance_shift_before=variance_shift(
                    before[call.name], initial[call.name].variance
                ),
            )
            for call in calls
        ],
    )


def _batch_norms(graph: Graph) -> list[Call]:
    """The BNs that normalise with moving statistics (not those called with training=True)."""
    return [
        call
        for call in graph.calls
        if type(call.layer) is layers.BatchNormalization and call.kwargs.get("training") is not True
    ]


def _upstream(graph: Graph, call: Call) -> set[int]:
    """ids of the calls that ``call`` depends on."""
    producers = graph.producers()
    seen: set[int] = set()
    stack = list(call.input_ids)
    while stack:
        producer = producers.get(stack.pop())
        if producer is not None and id(producer) not in seen:
            seen.add(id(producer))
            stack.extend(producer.input_ids)
    return seen


def _measure(
    graph: Graph, calls: Sequence[Call], calibration: Sequence[np.ndarray]
) -> dict[str, InputStatistics]:
    if not calls:
        return {}
    if len(calibration) != len(graph.inputs):
        raise FoldingError(
            f"calibration data has {len(calibration)} arrays; the model has "
            f"{len(graph.inputs)} inputs"
        )
    probe = Graph(
        name=f"{graph.name}_bn_inputs",
        inputs=graph.inputs,
        calls=graph.calls,
        outputs=[call.first_input for call in calls],
        output_names=[call.name for call in calls],
        shapes=graph.shapes,
    )
    submodel = rebuild(probe, lambda call: call.layer)
    sums = [np.zeros(0)] * len(calls)
    squares = [np.zeros(0)] * len(calls)
    counts = [0] * len(calls)
    samples = len(calibration[0])
    for start in range(0, samples, BATCH_SIZE):
        batch = [np.asarray(array[start : start + BATCH_SIZE]) for array in calibration]
        outputs = submodel(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for index, (call, output) in enumerate(zip(calls, outputs, strict=True)):
            values = np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float64)
            axes = _reduction_axes(call.layer, values.ndim)
            total, total_squares = values.sum(axis=axes), np.square(values).sum(axis=axes)
            first = counts[index] == 0
            sums[index] = total if first else sums[index] + total
            squares[index] = total_squares if first else squares[index] + total_squares
            counts[index] += values.size // total.size
    result = {}
    for index, call in enumerate(calls):
        mean = sums[index] / counts[index]
        variance = np.maximum(squares[index] / counts[index] - np.square(mean), 0.0)
        result[call.name] = InputStatistics(mean, variance, samples)
    return result


def _reduction_axes(bn: layers.BatchNormalization, rank: int) -> tuple[int, ...]:
    kept = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    kept = {axis % rank for axis in kept}
    return tuple(axis for axis in range(rank) if axis not in kept)
