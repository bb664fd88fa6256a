"""Both variants of a folded Keras model as ONNX: the direct exporter, a layer it cannot
write spliced in from the general one (tf2onnx), or the general one for the whole model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from folding.export.direct import Unsupported
from folding.export.exporters import (
    OnnxModel,
    export_direct,
    layer_exporter,
)
from folding.export.fallback import export_general
from folding.keras_graph.fold import FoldResult
from folding.keras_graph.graph import Graph
from folding.specs import Fraction, no_progress


def flat_caller(model: Any) -> Callable[[list[Any]], list[Any]]:
    """``model`` as a function from a flat list of inputs to a flat list of outputs."""
    from keras import tree

    from folding._compat import input_structure

    structure = input_structure(model)

    def call(inputs: list[Any]) -> list[Any]:
        packed = tree.pack_sequence_as(structure, inputs) if structure is not None else inputs[0]
        return tree.flatten(model(packed, training=False))

    return call


@dataclass(frozen=True)
class ExportedPair:
    folded: OnnxModel
    unfolded: OnnxModel
    exporter: str
    fallback_reason: str | None = None  # why the general exporter wrote the model
    spliced: list[Unsupported] = field(default_factory=list)  # layers it wrote alone


EXPORTERS = ("auto", "tf2onnx")

Traced = Callable[[Callable[[list[Any]], list[Any]]], None]
"""``on_traced(run)``: told of the model traced for the general exporter; ``run`` is
the traced model as a function of numpy arrays (flat lists in and out)."""


def export_pair(
    result: FoldResult,
    unfolded_graph: Graph,
    opset: int,
    exporter: str = "auto",
    progress: Fraction = no_progress,
    on_traced: Traced | None = None,
) -> ExportedPair:
    """Both models as ONNX: directly from the traced graphs (``exporter`` "auto"), a
    layer with no direct form exported alone by the general exporter and spliced in;
    when even that fails, or ``exporter`` is "tf2onnx", both models whole through the
    general exporter. ``progress(fraction)`` hears how far the direct exports got (the
    unfolded model the first half, the folded one the second)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "tf2onnx":
        return _export_general(result, opset, None, on_traced)
    try:
        spliced: list[Unsupported] = []
        fallback = layer_exporter()
        unfolded = export_direct(
            unfolded_graph,
            opset,
            layer_fallback=fallback,
            spliced=spliced,
            progress=lambda fraction: progress(fraction / 2),
        )
        folded = export_direct(
            result.graph,
            opset,
            result.weights,
            layer_fallback=fallback,
            progress=lambda fraction: progress((1 + fraction) / 2),
        )
        return ExportedPair(folded, unfolded, "direct", spliced=spliced)
    except Unsupported as unsupported:
        reason = unsupported
    except ValueError as error:  # an opset the direct exporter does not write
        reason = error
    return _export_general(result, opset, reason, on_traced)


def _export_general(
    result: FoldResult, opset: int, reason: object | None, on_traced: Traced | None
) -> ExportedPair:
    """The unfolded model through tf2onnx once, folded on its ONNX graph
    (``folding.export.fallback``); ``result``'s entries become what that fold did.
    ``reason`` says why the direct exporter could not (None: the general one was asked for)."""
    general = export_general(flat_caller(result.source), result, opset, reason, on_traced)
    result.folded, result.not_folded = general.folded_entries, general.not_folded_entries
    return ExportedPair(
        general.folded,
        general.unfolded,
        "tf2onnx",
        None if reason is None else f"the direct exporter cannot write {reason}",
    )
