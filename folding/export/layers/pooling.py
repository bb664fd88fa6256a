"""Pooling layers: max and average pooling ("same" average pooling does not count
the padding) and their global forms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keras import layers

from folding.export.layers.base import HANDLERS, Handler, conv_layout, inputs_of, padding_attributes

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _pool(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        layer = call.layer
        layout = conv_layout(layer)
        pool = tuple(layer.pool_size)
        strides = tuple(layer.strides)
        attributes: dict[str, Any] = {"kernel_shape": list(pool), "strides": list(strides)}
        attributes.update(
            padding_attributes(call, em.value(tensor).shape, pool, strides, (1,) * len(pool))
        )
        if op_type == "AveragePool":
            attributes["count_include_pad"] = 0
        y = em.writer.op(op_type, [em.get(tensor, layout)], call.name, **attributes)
        em.set(call, y, layout)

    return handler


for _cls in (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D):
    HANDLERS[_cls] = _pool("MaxPool")
for _cls in (layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D):
    HANDLERS[_cls] = _pool("AveragePool")


def _global_pool(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        (tensor,) = inputs_of(call)
        layout = conv_layout(call.layer)
        w = em.writer
        pooled = w.op(op_type, [em.get(tensor, layout)], call.name)
        if call.layer.keepdims:
            em.set(call, pooled, layout)
        else:
            flat = w.op("Flatten", [pooled], f"{call.name}_flat", axis=1)
            if layout == "cf":
                em.pooled[flat] = pooled
            em.set(call, flat)

    return handler


for _cls in (
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
):
    HANDLERS[_cls] = _global_pool("GlobalAveragePool")
for _cls in (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D):
    HANDLERS[_cls] = _global_pool("GlobalMaxPool")
