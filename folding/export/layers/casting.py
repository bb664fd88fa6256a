"""keras.ops calls that set a dtype or fill a tensor: cast, zeros_like, ones_like and
full_like, and the constants a traced-into layer computed. A cast keeps its input's layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto, helper

from folding.export.layers.base import (
    OP_HANDLERS,
    Handler,
    Refused,
    handles,
    sole_input,
    unsupported,
)
from folding.export.layers.operations import constant_array, is_tensor
from folding.keras_graph.graph import TracedConstant

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def onnx_dtype(dtype: Any) -> int:
    name = str(dtype).replace("keras.", "")
    if name == "bfloat16":
        return TensorProto.BFLOAT16
    try:
        return helper.np_dtype_to_tensor_dtype(np.dtype(name))
    except TypeError:
        raise Refused(f"casting to {name}") from None


def _cast(em: Emitter, call: Call) -> None:
    tensor = sole_input(call)
    layout = em.layout_of(tensor)
    to = onnx_dtype(call.layer.dtype)
    em.set(call, em.writer.op("Cast", [em.get(tensor, layout)], call.name, to=to), layout)


def _like(fill: float | None) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensor = call.args[0].id
        value = fill
        if value is None:
            raw = call.args[1] if len(call.args) > 1 else call.kwargs["fill_value"]
            if is_tensor(raw):
                raise unsupported(call, "a tensor fill value")
            value = float(constant_array(call, raw))
        w = em.writer
        dtype = call.layer.dtype or em.graph.dtypes.get(tensor, "float32")
        shape = w.op("Shape", [em.get(tensor, "keras")], "shape")
        filled = helper.make_tensor("value", onnx_dtype(dtype), [1], [value])
        em.set(call, w.op("ConstantOfShape", [shape], call.name, value=filled))

    return handler


OP_HANDLERS.update(
    {
        "Cast": _cast,
        "ZerosLike": _like(0.0),
        "OnesLike": _like(1.0),
        "FullLike": _like(None),
    }
)


@handles(TracedConstant)
def _traced_constant(em: Emitter, call: Call) -> None:
    """An array a traced-into layer computed from its inputs' shapes alone."""
    value = call.layer.value
    dtype = np.float32 if value.dtype.kind == "f" else value.dtype
    em.set(call, em.writer.const(value, call.name, dtype))
