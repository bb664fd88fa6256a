"""Which nodes are per-channel affine maps ``y = x * scale + shift``, and on which axis.

A ``BatchNormalization`` in inference mode with constant parameters is one (on
axis 1), and so is a ``Mul`` / ``Add`` / ``Sub`` of a tensor and a constant that
broadcasts per channel: ``[C]`` or ``[1, C]`` on the last axis, ``[C, 1, ...]`` or
``[1, C, 1, ...]`` on axis 1. The scale and shift come from ``folding.math``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx

from folding import math
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, attribute, node_key
from folding.report import BatchNormStats

BN_INPUTS = ("scale (gamma)", "bias (beta)", "mean", "variance")


@dataclass
class Affine:
    """One per-channel affine node: ``y = x * scale + shift`` on one axis."""

    node: onnx.NodeProto
    input: str  # x
    params: math.BatchNormParams
    axis_from_end: int | None  # None: the channel axis 1; 0: the last axis
    operand_rank: int | None = None  # a Mul/Add/Sub operand's rank (it may broadcast x up)
    trailing: int | None = None  # axes after the channel in that operand: axis 1 of a
    # rank-r output only when trailing == r - 2

    def fits(self, rank: int) -> bool:
        """The map scales axis 1 (or the last axis) of a rank-``rank`` output and
        leaves its shape alone."""
        if self.operand_rank is None:
            return True
        if self.operand_rank > rank:
            return False
        return self.axis_from_end == 0 or self.trailing == rank - 2

    @cached_property
    def scale(self) -> np.ndarray:
        return self.params.scale()

    @cached_property
    def shift(self) -> np.ndarray:
        return self.params.shift()

    @property
    def key(self) -> str:
        return node_key(self.node)

    def stats(self) -> BatchNormStats:
        return BatchNormStats.of(self.params, self.scale)

    def part(self, start: int, stop: int) -> Affine:
        """The same map on channels ``start:stop`` only."""
        params = math.channel_slice(self.params, start, stop)
        return Affine(
            self.node, self.input, params, self.axis_from_end, self.operand_rank, self.trailing
        )

    def on_last_axis(self) -> Affine:
        """The same map, read as scaling the last axis (after a layout change)."""
        return Affine(self.node, self.input, self.params, 0, self.operand_rank, 0)


def batch_norm_affine(graph: OnnxGraph, node: onnx.NodeProto) -> Affine:
    """A ``BatchNormalization`` node as an affine map; NotFoldable says why it is not one."""
    if attribute(node, "training_mode", 0):
        raise NotFoldable("it runs in training mode (training_mode=1)")
    if any(node.output[1:]):
        # opsets 7-13 have no training_mode: the extra outputs are what selects it, and
        # ONNX Runtime then normalises with each batch's own statistics
        raise NotFoldable(
            "it writes its running statistics as outputs (the training-mode form): it "
            "normalises with each batch's own statistics"
        )
    if not attribute(node, "spatial", 1):
        raise NotFoldable("it normalises each activation on its own (spatial=0), not per channel")
    arrays = []
    for role, name in zip(BN_INPUTS, node.input[1:5], strict=False):
        array = graph.constant(name)
        if array is None:
            raise NotFoldable(f"its {role} '{name}' is computed at run time, not a constant")
        arrays.append(np.asarray(array, np.float64).reshape(-1))
    if len(arrays) != 4 or len({a.shape for a in arrays}) != 1:
        raise NotFoldable("its parameters are not four vectors of one length")
    gamma, beta, mean, variance = arrays
    params = math.BatchNormParams(
        mean, variance, gamma, beta, float(attribute(node, "epsilon", 1e-5))
    )
    return Affine(node, node.input[0], params, None)


def affine_of(graph: OnnxGraph, node: onnx.NodeProto) -> Affine | None:
    """A ``Mul`` / ``Add`` / ``Sub`` node as a per-channel affine map, if it is one."""
    if node.op_type not in ("Mul", "Add", "Sub") or len(node.input) != 2:
        return None
    variable, operand_index = 0, 1
    operand = graph.constant(node.input[1])
    if operand is None:
        operand, variable, operand_index = graph.constant(node.input[0]), 1, 0
        if operand is None or graph.constant(node.input[1]) is not None:
            return None
    if operand.dtype.kind != "f":
        return None
    vector, axis = channel_vector(operand)
    if vector is None:
        return None
    trailing = operand.ndim - 1 - max(i for i, d in enumerate(operand.shape) if d != 1)
    vector = vector.astype(np.float64)
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    if node.op_type == "Mul":
        scale, shift = vector, zeros
    elif node.op_type == "Add":
        scale, shift = ones, vector
    elif operand_index == 1:  # x - c
        scale, shift = ones, -vector
    else:  # c - x
        scale, shift = -ones, vector
    params = math.affine_as_batch_norm(scale, shift)
    return Affine(node, node.input[variable], params, axis, operand.ndim, trailing)


def channel_vector(operand: np.ndarray) -> tuple[np.ndarray | None, int | None]:
    """A constant that broadcasts per channel: ``[C]``/``[1, C]`` (last axis, 0) or
    ``[C, 1, ...]``/``[1, C, 1, ...]`` (axis 1, None)."""
    shape = list(operand.shape)
    if not shape or int(np.prod(shape)) <= 1:
        return None, None
    squeezed = [d for d in shape if d != 1]
    if len(squeezed) != 1:
        return None, None
    if shape[-1] != 1:
        return operand.reshape(-1), 0
    while shape and shape[0] == 1 and len(shape) > 2:
        shape = shape[1:]
    if shape[0] != 1 and all(d == 1 for d in shape[1:]):
        return operand.reshape(-1), None
    if len(shape) >= 2 and shape[0] == 1 and shape[1] != 1 and all(d == 1 for d in shape[2:]):
        return operand.reshape(-1), None
    return None, None
