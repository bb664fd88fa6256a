"""Add, Multiply, Concatenate and the rest of the merging layers; applications' scale layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from keras import layers

from folding.export.layers.base import (
    HANDLERS,
    Handler,
    cf_axis,
    common_layout,
    handles,
    handles_named,
    inputs_of,
    rank_of,
)

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _merge(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensors = inputs_of(call)
        layout = common_layout(em, tensors)
        names = [em.get(t, layout) for t in tensors]
        y = names[0]
        for other in names[1:]:
            y = em.writer.op(op_type, [y, other], call.name)
        em.set(call, y, layout)

    return handler


HANDLERS[layers.Add] = _merge("Add")
HANDLERS[layers.Multiply] = _merge("Mul")
HANDLERS[layers.Maximum] = _merge("Max")
HANDLERS[layers.Minimum] = _merge("Min")


@handles(layers.Subtract)
def _subtract(em: Emitter, call: Call) -> None:
    first, second = inputs_of(call)
    layout = common_layout(em, [first, second])
    y = em.writer.op("Sub", [em.get(first, layout), em.get(second, layout)], call.name)
    em.set(call, y, layout)


@handles(layers.Average)
def _average(em: Emitter, call: Call) -> None:
    tensors = inputs_of(call)
    layout = common_layout(em, tensors)
    w = em.writer
    total = w.op("Sum", [em.get(t, layout) for t in tensors], "sum")
    em.set(call, w.op("Mul", [total, w.const(1.0 / len(tensors), "inv_n")], call.name), layout)


@handles(layers.Concatenate)
def _concatenate(em: Emitter, call: Call) -> None:
    tensors = inputs_of(call)
    rank = rank_of(em, tensors[0])
    axis = call.layer.axis % rank
    layout = common_layout(em, tensors)
    onnx_axis = axis if layout == "keras" or rank < 3 else cf_axis(axis, rank)
    names = [em.get(t, layout) for t in tensors]
    em.set(call, em.writer.op("Concat", names, call.name, axis=onnx_axis), layout)


@handles_named("CustomScaleLayer")
def _custom_scale(em: Emitter, call: Call) -> None:
    shortcut, residual = inputs_of(call)
    layout = common_layout(em, [shortcut, residual])
    w = em.writer
    scaled = w.op("Mul", [em.get(residual, layout), w.const(call.layer.scale, "scale")], "scaled")
    em.set(call, w.op("Add", [em.get(shortcut, layout), scaled], call.name), layout)


@handles_named("LayerScale")
def _layer_scale(em: Emitter, call: Call) -> None:
    (tensor,) = inputs_of(call)
    gamma = np.asarray(call.layer.gamma.numpy())
    w = em.writer
    y = w.op("Mul", [em.get(tensor, "keras"), w.const(gamma, f"{call.name}_gamma")], call.name)
    em.set(call, y)
