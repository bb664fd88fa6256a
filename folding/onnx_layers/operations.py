"""Keras operations recorded in a functional graph (``keras.ops.*``), by class name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from folding.onnx_layers.base import (
    OP_HANDLERS,
    Handler,
    common_layout,
    inputs_of,
    unsupported,
)

if TYPE_CHECKING:
    from folding.emit import Emitter
    from folding.graph import Call

from folding.onnx_layers.activations import ACTIVATIONS, clip, gelu, mish, swish


def _op_unary(build: Callable[[Emitter, str, Any], str], keep_layout: bool = True) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        tensors = inputs_of(call)
        if len(tensors) != 1:
            raise unsupported(call, "expected one tensor argument")
        layout = em.layout_of(tensors[0]) if keep_layout else "keras"
        em.set(call, build(em, em.get(tensors[0], layout), call.layer), layout)

    return handler


def _op_binary(op_type: str) -> Handler:
    def handler(em: Emitter, call: Call) -> None:
        from folding.graph import Ref

        operands = list(call.args)
        if len(operands) != 2 or call.kwargs:
            raise unsupported(call, "expected two operands")
        tensors = [o.id for o in operands if isinstance(o, Ref)]
        layout = common_layout(em, tensors) if tensors else "keras"
        if layout == "cf" and any(not isinstance(o, Ref) and np.ndim(o) > 0 for o in operands):
            layout = "keras"
        names = []
        for operand in operands:
            if isinstance(operand, Ref):
                names.append(em.get(operand.id, layout))
            elif isinstance(operand, (int, float, np.ndarray, np.generic)):
                names.append(em.writer.const(operand, "operand"))
            else:
                raise unsupported(call, f"operand of type {type(operand).__name__}")
        em.set(call, em.writer.op(op_type, names, call.name), layout)

    return handler


OP_HANDLERS.update(
    {
        "Add": _op_binary("Add"),
        "Subtract": _op_binary("Sub"),
        "Multiply": _op_binary("Mul"),
        "Divide": _op_binary("Div"),
        "TrueDivide": _op_binary("Div"),
        "Maximum": _op_binary("Max"),
        "Minimum": _op_binary("Min"),
        "Gelu": _op_unary(lambda em, x, op: gelu(em, x, bool(getattr(op, "approximate", True)))),
        "LeakyRelu": _op_unary(
            lambda em, x, op: em.writer.op(
                "LeakyRelu", [x], "leaky_relu", alpha=float(getattr(op, "negative_slope", 0.2))
            )
        ),
        "Celu": _op_unary(
            lambda em, x, op: em.writer.op(
                "Celu", [x], "celu", alpha=float(getattr(op, "alpha", 1.0))
            )
        ),
        "Relu": _op_unary(lambda em, x, op: em.writer.op("Relu", [x], "relu")),
        "Relu6": _op_unary(lambda em, x, op: clip(em, x, 0.0, 6.0)),
        "Sigmoid": _op_unary(lambda em, x, op: em.writer.op("Sigmoid", [x], "sigmoid")),
        "Silu": _op_unary(lambda em, x, op: swish(em, x)),
        "Tanh": _op_unary(lambda em, x, op: em.writer.op("Tanh", [x], "tanh")),
        "HardSigmoid": _op_unary(lambda em, x, op: ACTIVATIONS["hard_sigmoid"](em, x)),
        "HardSilu": _op_unary(lambda em, x, op: ACTIVATIONS["hard_silu"](em, x)),
        "Elu": _op_unary(
            lambda em, x, op: em.writer.op(
                "Elu", [x], "elu", alpha=float(getattr(op, "alpha", 1.0))
            )
        ),
        "Selu": _op_unary(lambda em, x, op: ACTIVATIONS["selu"](em, x)),
        "Softplus": _op_unary(lambda em, x, op: em.writer.op("Softplus", [x], "softplus")),
        "Softsign": _op_unary(lambda em, x, op: em.writer.op("Softsign", [x], "softsign")),
        "Mish": _op_unary(lambda em, x, op: mish(em, x)),
        "Exp": _op_unary(lambda em, x, op: em.writer.op("Exp", [x], "exp")),
        "Sqrt": _op_unary(lambda em, x, op: em.writer.op("Sqrt", [x], "sqrt")),
        "Abs": _op_unary(lambda em, x, op: em.writer.op("Abs", [x], "abs")),
        "Negative": _op_unary(lambda em, x, op: em.writer.op("Neg", [x], "neg")),
    }
)
