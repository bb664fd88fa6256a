"""What folding a Keras model gives: the folded graph, its new weights, the report's
entries, and the folded Keras model rebuilt from them on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from folding.keras_graph.graph import Call, Graph, InputSpec, rebuild
from folding.report import FoldedEntry, NotFoldedEntry, Recalibration, RemovedEntry


@dataclass
class FoldResult:
    """The folded graph, its new weights, and what was done to get it.

    ``graph`` is the traced graph with every folded BatchNormalization (and every
    Dropout-like layer) bypassed; ``weights(call)`` gives each layer's arrays, the
    folded ones for layers that absorbed a BatchNormalization. ``model`` rebuilds
    the folded graph as a Keras model (on first use: exporting does not need it).
    """

    source: keras.Model
    graph: Graph
    inputs: list[InputSpec]
    output_names: list[str]
    folded: list[FoldedEntry] = field(default_factory=list)
    not_folded: list[NotFoldedEntry] = field(default_factory=list)
    removed: list[RemovedEntry] = field(default_factory=list)
    recalibration: Recalibration | None = None
    edits: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    _model: keras.Model | None = None

    def weights(self, call: Call) -> dict[str, np.ndarray]:
        edited = self.edits.get(id(call.layer))
        if edited is not None:
            return edited
        return {variable.name: np.asarray(variable.numpy()) for variable in call.layer.weights}

    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = _build_keras(self)
        return self._model


def _build_keras(result: FoldResult) -> keras.Model:
    replacements: dict[int, keras.layers.Layer] = {}

    def layer_for(call: Call) -> keras.layers.Layer:
        if id(call.layer) not in result.edits:
            return call.layer
        config = call.layer.get_config()
        config["use_bias"] = True
        replacement = type(call.layer).from_config(config)
        replacements[id(call.layer)] = replacement
        return replacement

    model = rebuild(result.graph, layer_for)
    for layer_id, replacement in replacements.items():
        arrays = result.edits[layer_id]
        for variable in replacement.weights:
            variable.assign(arrays[variable.name])
    return model
