"""Element-wise keras.ops operations recorded in a functional graph, by class name.

An element-wise operation keeps its input's layout: a channels-first tensor
stays channels-first, and a constant operand (a number, an array, a layer's own
variable) is broadcast and transposed to match, so ``conv -> x * self.scale ->
conv`` needs no transposes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from folding.export.layers.activations import ACTIVATIONS, clip, gelu, mish, swish
from folding.export.layers.base import OP_HANDLERS, Handler, Refused, common_layout, unsupported

if TYPE_CHECKING:
    from folding.export.direct import Emitter
    from folding.keras_graph.graph import Call


def constant_array(call: Call, value: Any) -> np.ndarray:
    """A non-tensor operand (number, array, Keras variable, backend tensor) as numpy."""
    if isinstance(value, (bool, int, float, np.ndarray, np.generic)):
        return np.asarray(value)
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # anything convert_to_numpy refuses
        raise unsupported(call, f"operand of type {type(value).__name__}") from None


def is_tensor(leaf: Any) -> bool:
    from folding.keras_graph.graph import Ref

    return isinstance(leaf, Ref)


def operand_dtype(em: Emitter, operands: list[Any]) -> np.dtype:
    """The dtype constants take: the first tensor operand's (float32 by default)."""
    for operand in operands:
        if is_tensor(operand):
            name = em.graph.dtypes.get(operand.id, "float32")
            if name == "bool":
                continue
            return np.dtype("float32") if name in ("float16", "bfloat16") else np.dtype(name)
    return np.dtype("float32")


def operand_names(
    em: Emitter, call: Call, operands: list[Any], layout: str, rank: int
) -> list[str]:
    """Every operand as an ONNX name in ``layout``: tensors through the emitter,
    constants broadcast to ``rank`` and, for channels-first, transposed."""
    from folding.export.direct import to_cf

    dtype = operand_dtype(em, operands)
    names = []
    for operand in operands:
        if is_tensor(operand):
            names.append(em.get(operand.id, layout))
            continue
        array = constant_array(call, operand)
        if array.dtype.kind in "fiu":
            array = array.astype(dtype)
        if layout == "cf" and array.ndim > 0:
            array = array.reshape((1,) * (rank - array.ndim) + array.shape)
            array = np.ascontiguousarray(array.transpose(to_cf(rank)))
        names.append(em.writer.const(array, "operand", array.dtype))
    return names


def elementwise_layout(em: Emitter, operands: list[Any]) -> tuple[str, int]:
    tensors = [o.id for o in operands if is_tensor(o)]
    if not tensors:
        return "keras", 0
    rank = max(em.value(t).rank for t in tensors)
    layout = common_layout(em, tensors)
    if layout == "cf":
        for operand in operands:
            if not is_tensor(operand) and np.ndim(constant_array_or_none(operand)) > rank:
                return "keras", rank
    return layout, rank


def constant_array_or_none(value: Any) -> Any:
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # not convertible: the writer refuses it with a reason later
        return None


def nary(build: Callable[[Emitter, list[str], Any], str], arity: int | None = None) -> Handler:
    """An element-wise operation of tensors and constants, broadcasting like numpy."""

    def handler(em: Emitter, call: Call) -> None:
        operands = [*call.args, *call.kwargs.values()]
        if arity is not None and len(operands) != arity:
            raise unsupported(call, f"expected {arity} operands, got {len(operands)}")
        layout, rank = elementwise_layout(em, operands)
        names = operand_names(em, call, operands, layout, rank)
        em.set(call, build(em, names, call.layer), layout)

    return handler


def unary(build: Callable[[Emitter, str, Any], str]) -> Handler:
    return nary(lambda em, names, op: build(em, names[0], op), 1)


def binary(op_type: str) -> Handler:
    return nary(lambda em, names, op: em.writer.op(op_type, names, op_type.lower()), 2)


def simple(op_type: str, **attributes: Any) -> Handler:
    return unary(lambda em, x, op: em.writer.op(op_type, [x], op_type.lower(), **attributes))


def _floor_mod(em: Emitter, names: list[str], op: Any) -> str:
    """numpy's mod on floats: x - floor(x / y) * y (the sign of the divisor)."""
    w = em.writer
    x, y = names
    floored = w.op("Floor", [w.op("Div", [x, y], "quotient")], "floored")
    return w.op("Sub", [x, w.op("Mul", [floored, y], "multiple")], "mod")


def _threshold(em: Emitter, x: str, op: Any) -> str:
    w = em.writer
    above = w.op("Greater", [x, w.const(float(op.threshold), "threshold")], "above")
    return w.op("Where", [above, x, w.const(float(op.default_value), "default")], "threshold")


def _shrink(em: Emitter, x: str, op: Any, soft: bool) -> str:
    threshold = float(getattr(op, "threshold", 0.5))
    return em.writer.op("Shrink", [x], "shrink", lambd=threshold, bias=threshold if soft else 0.0)


def _squareplus(em: Emitter, x: str, op: Any) -> str:
    w = em.writer
    square = w.op("Mul", [x, x], "square")
    root = w.op("Sqrt", [w.op("Add", [square, w.const(float(op.b), "b")], "shifted")], "root")
    return w.op("Mul", [w.op("Add", [x, root], "sum"), w.const(0.5, "half")], "squareplus")


def _log_sigmoid(em: Emitter, x: str, op: Any) -> str:
    w = em.writer
    softplus = w.op("Softplus", [w.op("Neg", [x], "neg")], "softplus")
    return w.op("Neg", [softplus], "log_sigmoid")


def _trunc(em: Emitter, x: str, op: Any) -> str:
    w = em.writer
    floor = w.op("Floor", [w.op("Abs", [x], "abs")], "floor")
    return w.op("Mul", [w.op("Sign", [x], "sign"), floor], "trunc")


def _round(em: Emitter, x: str, op: Any) -> str:
    if getattr(op, "decimals", 0):
        raise Refused("rounding to decimals")
    return em.writer.op("Round", [x], "round")


def _clip(em: Emitter, x: str, op: Any) -> str:
    return clip(em, x, float(op.x_min), float(op.x_max))


def _plus_const(em: Emitter, x: str, value: float, hint: str) -> str:
    return em.writer.op("Add", [x, em.writer.const(value, "c")], hint)


def _logical_xor(em: Emitter, names: list[str], op: Any) -> str:
    w = em.writer
    a, b = (w.op("Cast", [n], "bool", to=9) for n in names)
    return w.op("Xor", [a, b], "xor")


def _logical(op_type: str) -> Callable[[Emitter, list[str], Any], str]:
    def build(em: Emitter, names: list[str], op: Any) -> str:
        w = em.writer
        return w.op(op_type, [w.op("Cast", [n], "bool", to=9) for n in names], op_type.lower())

    return build


def _where(em: Emitter, names: list[str], op: Any) -> str:
    w = em.writer
    condition = w.op("Cast", [names[0]], "condition", to=9)
    return w.op("Where", [condition, *names[1:]], "where")


OP_HANDLERS.update(
    {
        "Add": binary("Add"),
        "Subtract": binary("Sub"),
        "Multiply": binary("Mul"),
        "Divide": binary("Div"),
        "TrueDivide": binary("Div"),
        "Maximum": binary("Max"),
        "Minimum": binary("Min"),
        "Fmax": binary("Max"),
        "Fmin": binary("Min"),
        "Power": binary("Pow"),
        "Mod": nary(_floor_mod, 2),
        "FloorDivide": nary(
            lambda em, n, op: em.writer.op("Floor", [em.writer.op("Div", n, "div")], "floordiv"),
            2,
        ),
        "Greater": binary("Greater"),
        "GreaterEqual": binary("GreaterOrEqual"),
        "Less": binary("Less"),
        "LessEqual": binary("LessOrEqual"),
        "Equal": binary("Equal"),
        "NotEqual": nary(
            lambda em, n, op: em.writer.op("Not", [em.writer.op("Equal", n, "eq")], "ne"), 2
        ),
        "LogicalAnd": nary(_logical("And"), 2),
        "LogicalOr": nary(_logical("Or"), 2),
        "LogicalXor": nary(_logical_xor, 2),
        "LogicalNot": unary(
            lambda em, x, op: em.writer.op("Not", [em.writer.op("Cast", [x], "bool", to=9)], "not")
        ),
        "Where": nary(_where, 3),
        "Clip": unary(_clip),
        "Gelu": unary(lambda em, x, op: gelu(em, x, bool(getattr(op, "approximate", True)))),
        "LeakyRelu": unary(
            lambda em, x, op: em.writer.op(
                "LeakyRelu", [x], "leaky_relu", alpha=float(getattr(op, "negative_slope", 0.2))
            )
        ),
        "Celu": unary(
            lambda em, x, op: em.writer.op(
                "Celu", [x], "celu", alpha=float(getattr(op, "alpha", 1.0))
            )
        ),
        "Relu": simple("Relu"),
        "Relu6": unary(lambda em, x, op: clip(em, x, 0.0, 6.0)),
        "HardTanh": unary(lambda em, x, op: clip(em, x, -1.0, 1.0)),
        "Sigmoid": simple("Sigmoid"),
        "Silu": unary(lambda em, x, op: swish(em, x)),
        "Tanh": simple("Tanh"),
        "HardSigmoid": unary(lambda em, x, op: ACTIVATIONS["hard_sigmoid"](em, x)),
        "HardSilu": unary(lambda em, x, op: ACTIVATIONS["hard_silu"](em, x)),
        "Elu": unary(
            lambda em, x, op: em.writer.op(
                "Elu", [x], "elu", alpha=float(getattr(op, "alpha", 1.0))
            )
        ),
        "Selu": unary(lambda em, x, op: ACTIVATIONS["selu"](em, x)),
        "Softplus": simple("Softplus"),
        "Softsign": simple("Softsign"),
        "Mish": unary(lambda em, x, op: mish(em, x)),
        "LogSigmoid": unary(_log_sigmoid),
        "Threshold": unary(_threshold),
        "SoftShrink": unary(lambda em, x, op: _shrink(em, x, op, soft=True)),
        "HardShrink": unary(lambda em, x, op: _shrink(em, x, op, soft=False)),
        "TanhShrink": unary(
            lambda em, x, op: em.writer.op("Sub", [x, em.writer.op("Tanh", [x], "tanh")], "ts")
        ),
        "Squareplus": unary(_squareplus),
        "Exp": simple("Exp"),
        "Exp2": unary(
            lambda em, x, op: em.writer.op("Pow", [em.writer.const(2.0, "two"), x], "exp2")
        ),
        "Expm1": unary(lambda em, x, op: _plus_const(em, em.writer.op("Exp", [x], "e"), -1.0, "m")),
        "Log": simple("Log"),
        "Log1p": unary(lambda em, x, op: em.writer.op("Log", [_plus_const(em, x, 1.0, "p")], "l")),
        "Log2": unary(
            lambda em, x, op: em.writer.op(
                "Div", [em.writer.op("Log", [x], "ln"), em.writer.const(np.log(2.0), "ln2")], "l2"
            )
        ),
        "Log10": unary(
            lambda em, x, op: em.writer.op(
                "Div", [em.writer.op("Log", [x], "ln"), em.writer.const(np.log(10.0), "ln10")], "lg"
            )
        ),
        "Sqrt": simple("Sqrt"),
        "Rsqrt": unary(
            lambda em, x, op: em.writer.op("Reciprocal", [em.writer.op("Sqrt", [x], "s")], "rs")
        ),
        "Square": unary(lambda em, x, op: em.writer.op("Mul", [x, x], "square")),
        "Reciprocal": simple("Reciprocal"),
        "Abs": simple("Abs"),
        "Absolute": simple("Abs"),
        "Fabs": simple("Abs"),
        "Negative": simple("Neg"),
        "Sign": simple("Sign"),
        "Floor": simple("Floor"),
        "Ceil": simple("Ceil"),
        "Round": unary(_round),
        "Trunc": unary(_trunc),
        "Erf": simple("Erf"),
        "Sin": simple("Sin"),
        "Cos": simple("Cos"),
        "Tan": simple("Tan"),
        "Arcsin": simple("Asin"),
        "Arccos": simple("Acos"),
        "Arctan": simple("Atan"),
        "Sinh": simple("Sinh"),
        "Cosh": simple("Cosh"),
        "Arcsinh": simple("Asinh"),
        "Arccosh": simple("Acosh"),
        "Arctanh": simple("Atanh"),
        "Isnan": simple("IsNaN"),
        "Isinf": simple("IsInf"),
        "StopGradient": unary(lambda em, x, op: x),
        "ConvertToTensor": unary(lambda em, x, op: x),
        "Copy": unary(lambda em, x, op: x),
    }
)
