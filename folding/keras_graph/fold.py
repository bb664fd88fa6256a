"""Fold every BatchNormalization of a Keras model that can be folded (``fold_model``).

The rules (applied in ``rules``; the outcome is a ``result.FoldResult``):

* **backward** into the layer before it (Dense, ConvND, DepthwiseConvND,
  SeparableConvND, ConvNDTranspose) when that layer's activation is linear,
  its output feeds nothing but the BatchNormalization, it is not shared, and
  the BatchNormalization normalises its channel axis;
* otherwise **forward** into the layer after it: a Dense (possibly through a
  Flatten) or a ConvND with ``valid`` padding and one group, when the
  BatchNormalization's output feeds nothing else;
* otherwise it stays, and the report says why.

Dropout-like layers, identities at inference, are removed first.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from folding.keras_graph.batch_norm import batch_norm_params, batch_norm_stats
from folding.keras_graph.graph import Graph, layers_inside, trace
from folding.keras_graph.result import FoldResult
from folding.keras_graph.rules import BatchNormFolder
from folding.report import NotFoldedEntry, RemovedEntry
from folding.specs import Fraction, no_progress

INFERENCE_IDENTITIES: tuple[type, ...] = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
)


def fold_model(
    model: keras.Model,
    calibration: list[np.ndarray] | None = None,
    recalibrate_on: list[np.ndarray] | None = None,
    progress: Fraction = no_progress,
) -> FoldResult:
    """Fold every BatchNormalization of ``model`` that can be folded.

    With ``recalibrate_on`` (one array per input), every BN's moving statistics
    are first re-estimated on that data (``folding.keras_graph.recalibrate``; ``model`` is
    changed in place). With ``calibration`` (or else ``recalibrate_on``), each
    BN's diagnostics include its variance shift on that data. ``progress(fraction)``
    hears of the BatchNormalizations handled so far over all of them (the fold's
    time goes into computing each one's folded weights and diagnostics).
    """
    from folding.keras_graph import recalibrate

    recalibration = None
    if recalibrate_on is not None:
        recalibration = recalibrate.recalibrate(model, recalibrate_on)
    data = calibration if calibration is not None else recalibrate_on
    observed = {} if data is None else recalibrate.input_statistics(model, data)
    graph = trace(model)
    never_called = _never_called(model, graph)  # before folding takes calls out
    result = FoldResult(
        source=model,
        graph=graph,
        inputs=list(graph.inputs),
        output_names=list(graph.output_names),
        recalibration=recalibration,
    )
    for call in [c for c in graph.calls if type(c.layer) in INFERENCE_IDENTITIES]:
        graph.bypass(call)
        result.removed.append(RemovedEntry(call.name, type(call.layer).__name__))
    observed_variance = {name: stats.variance for name, stats in observed.items()}
    folder = BatchNormFolder(graph, observed_variance, progress)
    folder.run()
    result.folded, result.not_folded = (
        folder.folded,
        folder.not_folded + _inside_whole_layers(graph) + never_called,
    )
    result.edits = {layer_id: edit.arrays for layer_id, edit in folder.edits.items()}
    return result


def _inside_whole_layers(graph: Graph) -> list[NotFoldedEntry]:
    """The BatchNormalizations hidden inside layers kept as one call (their ``call``
    could not be traced into): not folded, each with the reason."""
    entries = []
    for call in graph.calls:
        if not isinstance(call.layer, keras.layers.Layer):
            continue
        why = f"its call could not be traced ({call.opaque})" if call.opaque else "it is kept whole"
        for inner in layers_inside(call.layer):
            if type(inner) is not layers.BatchNormalization:
                continue
            stats = batch_norm_stats(batch_norm_params(inner)) if inner.built else None
            entries.append(
                NotFoldedEntry(
                    f"{call.name}/{inner.name}",
                    f"inside layer '{call.name}' ({type(call.layer).__name__}), whose "
                    f"BatchNormalizations cannot be reached: {why}",
                    stats,
                    None,
                )
            )
    return entries


def _never_called(model: keras.Model, graph: Graph) -> list[NotFoldedEntry]:
    """The BatchNormalizations the model holds but never calls (a layer of a nested
    model that no path from the inputs to the outputs goes through, as keras-hub's
    BASNet leaves its ResNet encoder's stem): not folded, since they compute nothing."""
    reached = {id(call.layer) for call in graph.calls}
    for call in graph.calls:
        if isinstance(call.layer, keras.layers.Layer):
            reached.update(id(inner) for inner in layers_inside(call.layer))
    entries = []
    for layer in layers_inside(model):
        if not isinstance(layer, layers.BatchNormalization) or id(layer) in reached:
            continue
        reached.add(id(layer))
        stats = batch_norm_stats(batch_norm_params(layer)) if layer.built else None
        reason = (
            "never called: the model holds it but no path from its inputs to its "
            "outputs goes through it"
        )
        holder = _traced_holder(model, layer, graph)
        if holder is not None:  # a TimeDistributed, say: its call traced as operations
            reason = (
                f"inside layer '{holder.name}' ({type(holder).__name__}), whose call was traced "
                "as operations: the normalisation is exported as arithmetic, not folded"
            )
        entries.append(NotFoldedEntry(layer.name, reason, stats, None))
    return entries


def _traced_holder(model: keras.Model, layer: Any, graph: Graph) -> Any:
    """The wrapper (TimeDistributed, Bidirectional) holding ``layer`` whose call the graph
    holds as operations named after it (``{holder}_batch_norm``), if any. A custom layer
    traced into keeps its inner layers' calls, so a BN it holds and does not call is
    really never called."""
    for holder in layers_inside(model):
        if not isinstance(holder, layers.Wrapper):
            continue
        if any(inner is layer for inner in layers_inside(holder)) and any(
            call.name.startswith(f"{holder.name}_") for call in graph.calls
        ):
            return holder
    return None
