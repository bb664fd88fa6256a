"""The handler registry and what every handler shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call

Handler = Callable[["Emitter", "Call"], None]
HANDLERS: dict[type, Handler] = {}
NAMED_HANDLERS: dict[str, Handler] = {}  # keras.applications' own layers, by class name
OP_HANDLERS: dict[str, Handler] = {}  # keras.ops operations in a functional graph, by class name
# other libraries' layers, by "module.ClassName" (the library need not be imported to look one up)
PATH_HANDLERS: dict[str, Handler] = {}

BIG = np.iinfo(np.int64).max  # an ONNX Slice end meaning "to the end"
SMALL = np.iinfo(np.int64).min  # and, stepping backwards, "past the start"


def _registers(table: dict, keys: tuple) -> Callable[[Handler], Handler]:
    """A decorator entering its function in ``table`` under each of ``keys``."""

    def register(function: Handler) -> Handler:
        for key in keys:
            table[key] = function
        return function

    return register


def handles(*classes: type) -> Callable[[Handler], Handler]:
    return _registers(HANDLERS, classes)


def handles_named(*names: str) -> Callable[[Handler], Handler]:
    return _registers(NAMED_HANDLERS, names)


def handles_path(*paths: str) -> Callable[[Handler], Handler]:
    return _registers(PATH_HANDLERS, paths)


class Refused(Exception):
    """Raised by a handler's helper that has no call at hand: a setting it cannot write."""


def writer_of(layer: Any) -> Handler | None:
    """The handler that writes ``layer`` (a layer or a keras.ops operation), if any."""
    import folding.export.layers  # noqa: F401 - registers every handler
    from folding._compat import is_applications_class, is_ops_class

    handler = HANDLERS.get(type(layer))
    if handler is None and is_applications_class(type(layer)):
        handler = NAMED_HANDLERS.get(type(layer).__name__)
    if handler is None and is_ops_class(type(layer)):
        handler = OP_HANDLERS.get(type(layer).__name__)
    if handler is None:
        handler = PATH_HANDLERS.get(f"{type(layer).__module__}.{type(layer).__qualname__}")
    return handler


def has_writer(layer: Any) -> bool:
    return writer_of(layer) is not None


def emit(em: Emitter, call: Call) -> None:
    from folding.export.direct import Unsupported

    layer = call.layer
    if getattr(layer, "quantization_mode", None):
        raise Unsupported(call, "quantized layers are exported by the general exporter")
    if getattr(layer, "lora_enabled", False):
        raise Unsupported(call, "LoRA layers are exported by the general exporter")
    handler = writer_of(layer)
    if handler is None:
        reason = "no direct ONNX form"
        if call.opaque:
            reason += f"; its call could not be traced into ({call.opaque})"
        raise Unsupported(call, reason)
    try:
        handler(em, call)
    except Refused as refused:
        raise Unsupported(call, str(refused)) from None


def inputs_of(call: Call) -> list[int]:
    from folding.export.direct import refs

    return refs((call.args, call.kwargs))


def sole_input(call: Call) -> int:
    """The one tensor ``call`` reads; a call reading several is refused."""
    tensors = inputs_of(call)
    if len(tensors) != 1:
        raise unsupported(call, f"expected one tensor argument, got {len(tensors)}")
    return tensors[0]


def rank_of(em: Emitter, tensor: int) -> int:
    return em.value(tensor).rank


def channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def conv_layout(layer: Any) -> str:
    """The layout an ONNX conv/pool needs its input in: channels-first."""
    return "cf" if channels_last(layer) else "keras"


def unsupported(call: Call, reason: str) -> Exception:
    from folding.export.direct import Unsupported

    return Unsupported(call, reason)


def same_pads(
    call: Call, in_shape: tuple, kernel: tuple, strides: tuple, dilation: tuple
) -> list[int] | None:
    """TensorFlow's "same" padding as explicit ONNX pads (odd pixel at the end), or
    None when a spatial size is unknown (then SAME_UPPER, which is the same rule)."""
    spatial = in_shape[1:-1] if channels_last(call.layer) else in_shape[2:]
    if any(size is None for size in spatial):
        return None
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilation, strict=True):
        effective = (k - 1) * d + 1
        out = -(-size // s)
        total = max((out - 1) * s + effective - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def padding_attributes(
    call: Call, in_shape: tuple, kernel: tuple, strides: tuple, dilation: tuple
) -> dict[str, Any]:
    padding = call.layer.padding
    spatial = len(kernel)
    if padding == "valid":
        return {"pads": [0] * (2 * spatial)}
    if padding == "same":
        pads = same_pads(call, in_shape, kernel, strides, dilation)
        return {"auto_pad": "SAME_UPPER"} if pads is None else {"pads": pads}
    if padding == "causal" and spatial == 1:
        return {"pads": [(kernel[0] - 1) * dilation[0], 0]}
    raise unsupported(call, f"padding {padding!r}")


def common_layout(em: Emitter, tensors: list[int]) -> str:
    ranks = {rank_of(em, t) for t in tensors}
    if len(ranks) == 1 and any(em.layout_of(t) == "cf" for t in tensors):
        return "cf"
    return "keras"


def cf_axis(keras_axis: int, rank: int) -> int:
    """Where Keras axis ``keras_axis`` of a channels-last tensor sits channels-first."""
    from folding.export.direct import to_cf

    return to_cf(rank).index(keras_axis)
