"""Vision transformers' patch embeddings: keras-hub's ``ViTPatchingAndEmbedding`` and
kimm's ``PositionEmbedding``.

The layer cuts the image into patches with a strided Conv2D, flattens the patch grid,
puts a learned class token first and adds a learned position embedding. Its ``call``
cannot be traced into: it tiles its class-token variable by the batch size, which on
symbolic inputs is unknown, so Keras computes that tile eagerly and fails. Written
here instead: Conv, Reshape and Transpose to (batch, patches, hidden), the class token
``Expand``-ed to the batch read off the tensor at run time, Concat, and the position
embeddings (a constant: the layer's ids are fixed) added. kimm's ``PositionEmbedding``
does the class token and position half of that on patches made outside it, and cannot
be traced into for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from folding.export.layers.base import channels_last, handles_path, sole_input, unsupported
from folding.export.layers.linear import _bias, _conv, _conv_kernel_to_onnx

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


@handles_path("keras_hub.src.models.vit.vit_layers.ViTPatchingAndEmbedding")
def _vit_patching_and_embedding(em: Emitter, call: Call) -> None:
    layer = call.layer
    tensor = sole_input(call)
    conv = layer.patch_embedding
    plain = getattr(conv.activation, "__name__", "") == "linear"
    if conv.padding != "valid" or tuple(conv.dilation_rate) != (1, 1) or not plain:
        raise unsupported(call, "a patch convolution other than a plain strided one")
    kernel = _array(conv.kernel)
    hidden = int(kernel.shape[-1])
    w = em.writer
    bias = _bias(em, call, {"bias": _array(conv.bias)} if conv.use_bias else {})
    x = em.get(tensor, "cf" if channels_last(layer) else "keras")  # the Conv reads NCHW
    grid = _conv(
        em,
        call,
        x,
        em.value(tensor).shape,
        _conv_kernel_to_onnx(kernel),
        bias,
        strides=tuple(conv.strides),
        dilation=(1, 1),
        groups=1,
        pad_from_layer=False,
        hint=f"{call.name}_patches",
    )
    flat = w.op("Reshape", [grid, w.ints([0, hidden, -1], "patch_grid")], "patch_rows")
    patches = w.op("Transpose", [flat], "patch_tokens", perm=[0, 2, 1])  # (N, patches, hidden)
    if layer.use_class_token:
        token = w.const(_array(layer.class_token), f"{call.name}_class_token")
        batch = w.op("Shape", [patches], "batch", start=0, end=1)
        size = w.op("Concat", [batch, w.ints([1, hidden], "token_shape")], "tokens_shape", axis=0)
        tokens = w.op("Expand", [token, size], "class_tokens")
        patches = w.op("Concat", [tokens, patches], "with_class_token", axis=1)
    table = _array(layer.position_embedding.embeddings)
    positions = np.take(table, np.asarray(layer.position_ids, dtype=np.int64), axis=0)
    added = w.op("Add", [patches, w.const(positions, f"{call.name}_positions")], call.name)
    em.set(call, added)


@handles_path("kimm._src.layers.position_embedding.PositionEmbedding")
def _kimm_position_embedding(em: Emitter, call: Call) -> None:
    """``concatenate([tile(cls_token, (batch, 1, 1)), x], axis=1) + pos_embed``."""
    layer = call.layer
    tensor = sole_input(call)
    if em.value(tensor).rank != 3:
        raise unsupported(call, f"a rank-{em.value(tensor).rank} input")
    patches = em.get(tensor, "keras")  # (N, patches, hidden)
    hidden = int(em.value(tensor).shape[-1])
    with_token = _class_token_first(em, call, patches, _array(layer.cls_token), hidden)
    added = em.writer.op(
        "Add",
        [with_token, em.writer.const(_array(layer.pos_embed), f"{call.name}_positions")],
        call.name,
    )
    em.set(call, added)


def _class_token_first(
    em: Emitter, call: Call, patches: str, token: np.ndarray, hidden: int
) -> str:
    """A learned (1, 1, hidden) class token, ``Expand``-ed to the batch read off
    ``patches`` at run time, put before them."""
    w = em.writer
    token_name = w.const(token.reshape(1, 1, hidden), f"{call.name}_class_token")
    batch = w.op("Shape", [patches], "batch", start=0, end=1)
    size = w.op("Concat", [batch, w.ints([1, hidden], "token_shape")], "tokens_shape", axis=0)
    tokens = w.op("Expand", [token_name, size], "class_tokens")
    return w.op("Concat", [tokens, patches], "with_class_token", axis=1)


def _array(variable: object) -> np.ndarray:
    return np.asarray(variable.numpy(), dtype=np.float32)  # type: ignore[attr-defined]
