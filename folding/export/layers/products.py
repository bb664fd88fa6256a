"""keras.ops products: matmul and dot, einsum, and dot-product attention. All read
channels-last."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from folding.export.layers.base import OP_HANDLERS, unsupported
from folding.export.layers.operations import constant_array, is_tensor, operand_names

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def _matmul(em: Emitter, call: Call) -> None:
    operands = list(call.args)
    if len(operands) != 2:
        raise unsupported(call, "expected two operands")
    tensors = [o for o in operands if is_tensor(o)]
    rank = max(em.value(t.id).rank for t in tensors)
    names = operand_names(em, call, operands, "keras", rank)
    ranks = [
        em.value(o.id).rank if is_tensor(o) else np.ndim(constant_array(call, o)) for o in operands
    ]
    if type(call.layer).__name__ == "Dot" and min(ranks) < 2:
        raise unsupported(call, "a dot product with a vector")
    em.set(call, em.writer.op("MatMul", names, call.name))


def _einsum(em: Emitter, call: Call) -> None:
    operands = [*call.args]
    names = []
    for operand in operands:  # constants keep their own rank here
        if is_tensor(operand):
            names.append(em.get(operand.id, "keras"))
        else:
            array = constant_array(call, operand).astype(np.float32)
            names.append(em.writer.const(array, "operand"))
    equation = str(call.layer.subscripts).replace(" ", "")
    em.set(call, em.writer.op("Einsum", names, call.name, equation=equation))


def _dot_product_attention(em: Emitter, call: Call) -> None:
    """softmax(q k^T * scale + bias, masked) v on (batch, length, heads, depth) tensors."""
    op = call.layer
    names = ["query", "key", "value", "bias", "mask", "scale"]
    given = dict(zip(names, call.args, strict=False)) | call.kwargs
    if getattr(op, "attn_logits_soft_cap", None) is not None:
        raise unsupported(call, "soft-capped attention logits")
    if op.is_causal:
        raise unsupported(call, "causal attention")
    query, key, value = (given[n] for n in names[:3])
    if not all(is_tensor(t) and em.value(t.id).rank == 4 for t in (query, key, value)):
        raise unsupported(call, "attention on other than (batch, length, heads, depth) tensors")
    depth = em.value(query.id).shape[-1]
    scale = given.get("scale")
    if is_tensor(scale) or (scale is None and depth is None):
        raise unsupported(call, "a tensor or unknown scale")
    scale = 1.0 / float(np.sqrt(depth)) if scale is None else float(scale)
    w = em.writer
    q = w.op("Transpose", [em.get(query.id, "keras")], "q", perm=[0, 2, 1, 3])
    k = w.op("Transpose", [em.get(key.id, "keras")], "k", perm=[0, 2, 3, 1])
    v = w.op("Transpose", [em.get(value.id, "keras")], "v", perm=[0, 2, 1, 3])
    logits = w.op("Mul", [w.op("MatMul", [q, k], "qk"), w.const(scale, "scale")], "logits")
    bias = given.get("bias")
    if bias is not None:
        bias_name = operand_names(em, call, [bias], "keras", 4)[0]
        logits = w.op("Add", [logits, bias_name], "biased")
    mask = given.get("mask")
    if mask is not None:
        allowed = w.op("Cast", operand_names(em, call, [mask], "keras", 4), "allowed", to=9)
        floor = w.const(np.float32(np.finfo(np.float32).min), "masked")
        logits = w.op("Where", [allowed, logits, floor], "masked_logits")
    probabilities = w.op("Softmax", [logits], "attention", axis=-1)
    out = w.op("MatMul", [probabilities, v], "attended")
    em.set(call, w.op("Transpose", [out], call.name, perm=[0, 2, 1, 3]))


OP_HANDLERS.update(
    {
        "Matmul": _matmul,
        "Dot": _matmul,
        "Einsum": _einsum,
        "DotProductAttention": _dot_product_attention,
    }
)
