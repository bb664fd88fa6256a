"""The driver: every BN-like node of an ONNX model folded where a rule allows, and
every ``BatchNormalization`` reported, folded or kept with a reason.

Backward first (into the node that produces the BN's input: ``into_conv``,
``into_gemm``, ``into_matmul``, ``through_layout``, ``through_concat``,
``through_add``), then
forward (``into_following``), then, for a ``BatchNormalization``, into a
convolution of the same input that it is added to (``into_sibling``).
Reported are the ``BatchNormalization`` nodes, the Mul + Add/Sub pairs exporters
decompose BNs into (``decomposed``), and a lone per-channel ``Mul`` folded beside a
linear node; a lone per-channel ``Add``
beside one is a bias, merged but not reported as a BN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner

from folding import math
from folding.diagnostics import BatchNormDiagnostics, diagnose
from folding.onnx_graph import (
    into_conv,
    into_following,
    into_gemm,
    into_matmul,
    into_sibling,
    through_add,
    through_concat,
    through_layout,
)
from folding.onnx_graph.affine import Affine, affine_of, batch_norm_affine
from folding.onnx_graph.channels_first import channels_first
from folding.onnx_graph.decomposed import LINEAR_OPS, Pair, find_pairs, is_bias
from folding.onnx_graph.graph import NotFoldable, OnnxGraph, article, node_key
from folding.onnx_graph.no_ops import drop_no_ops
from folding.onnx_graph.plan import Plan
from folding.report import BatchNormStats, FoldedEntry, NotFoldedEntry

PASS_THROUGH = ("Identity",)
BACKWARD = {
    "Conv": into_conv.plan,
    "ConvTranspose": into_conv.plan,
    "Gemm": into_gemm.plan,
    "MatMul": into_matmul.plan,
    "Add": lambda graph, affine, add: _after_add(graph, affine, add),
    "Concat": through_concat.plan,
    **{op: through_layout.plan for op in through_layout.LAYOUT_OPS},
}


@dataclass
class OnnxFoldResult:
    model: onnx.ModelProto
    folded: list[FoldedEntry] = field(default_factory=list)
    not_folded: list[NotFoldedEntry] = field(default_factory=list)
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    """Each reported BN's per-channel scale (float64), by its entry's name."""
    lone_scales: set[str] = field(default_factory=set)
    """The names of the ``folded`` entries that are a per-channel ``Mul`` alone (a
    layer scale, a rescaling): folded, but no BatchNormalization of the model's own."""
    norm_affines: set[str] = field(default_factory=set)
    """The names of the ``folded`` entries that are the ``Mul`` + ``Add`` affine of an
    InstanceNormalization / LayerNormalization (a GroupNorm's): folded, no BN either."""
    _described: dict[str, Callable[[], _Numbers]] = field(default_factory=dict, repr=False)

    def describe(self, name: str) -> _Numbers:
        """Entry ``name``'s full statistics and diagnostics (what ``describe=False``
        left out of it); (None, None) for an entry without numbers."""
        numbers = self._described.get(name)
        return (None, None) if numbers is None else numbers()


_Numbers = tuple[BatchNormStats | None, BatchNormDiagnostics | None]


def _numbers(
    result: OnnxFoldResult,
    name: str,
    params: math.BatchNormParams,
    scale: np.ndarray,
    arrays: list[np.ndarray],
    describe: bool,
) -> tuple[BatchNormStats, BatchNormDiagnostics | None]:
    """The statistics and diagnostics an entry carries: all of them, or (``describe``
    False) the value ranges only, the rest kept for ``OnnxFoldResult.describe``."""
    result.scales[name] = scale

    def full() -> tuple[BatchNormStats, BatchNormDiagnostics]:
        return BatchNormStats.of(params, scale), diagnose(params, arrays)

    result._described[name] = full
    if describe:
        return full()
    return BatchNormStats.of(params, scale, per_channel=False), None


@dataclass
class _Folded:
    """One fold made; its report entry is written only if it is reported (the
    statistics cost more than the fold)."""

    affine: Affine
    into: str
    into_class: str
    direction: str
    arrays: list[np.ndarray]

    def entry(
        self,
        result: OnnxFoldResult,
        describe: bool,
        name: str | None = None,
        affine: Affine | None = None,
    ) -> FoldedEntry:
        affine = affine or self.affine
        name = name or f"{affine.key} ({affine.node.op_type})"
        stats, diagnostics = _numbers(
            result, name, affine.params, affine.scale, self.arrays, describe
        )
        return FoldedEntry(name, self.into, self.into_class, self.direction, stats, diagnostics)


@dataclass
class _Outcome:
    folded: dict[str, _Folded] = field(default_factory=dict)
    reasons: dict[str, tuple[Affine | None, str]] = field(default_factory=dict)


def fold_onnx(model: onnx.ModelProto, *, describe: bool = True) -> OnnxFoldResult:
    """Fold every foldable BN-like node of ``model`` (a copy is changed and returned,
    without the nodes and initializers no output needs any more).

    ``describe=False``: the entries carry value ranges only, no per-channel numbers
    nor diagnostics, for a caller that takes those from elsewhere (the general
    exporter, from the Keras fold); ``OnnxFoldResult.describe`` computes them."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if _functions_hold_batch_norms(model):
        # TorchScript's ``export_modules_as_functions``: a BN inside a local function
        # is folded once the function's body is written out where it is called
        model = onnx.inliner.inline_local_functions(model)
        copy.CopyFrom(model)
    graph = OnnxGraph(copy, original=model)
    channels_first(graph)
    drop_no_ops(graph)
    pairs = find_pairs(graph)
    paired = {key for pair in pairs for key in pair.keys}
    outcome = _Outcome()
    progress = True
    while progress:
        progress = False
        for node in graph.nodes():
            if graph.contains(node) and _attempt(graph, node, paired, outcome):
                progress = True
    graph.commit()
    result = OnnxFoldResult(copy)
    for key, done in outcome.folded.items():
        if key not in paired and done.affine.node.op_type not in ("Add", "Sub"):
            result.folded.append(done.entry(result, describe))
            if done.affine.node.op_type == "Mul":
                result.lone_scales.add(result.folded[-1].bn)
    for pair in pairs:
        _report_pair(graph, pair, outcome, result, describe)
    for key, (affine, reason) in outcome.reasons.items():
        if key in paired:
            continue
        if affine is None:
            result.not_folded.append(NotFoldedEntry(key, reason))
        elif affine.node.op_type == "BatchNormalization":
            arrays = [affine.scale, affine.shift]
            numbers = _numbers(result, key, affine.params, affine.scale, arrays, describe)
            result.not_folded.append(NotFoldedEntry(key, reason, *numbers))
    result.not_folded.extend(_nested_batch_norms(copy.graph))
    return result


def _functions_hold_batch_norms(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "BatchNormalization" for f in model.functions for node in f.node)


def _attempt(graph: OnnxGraph, node: onnx.NodeProto, paired: set[str], outcome: _Outcome) -> bool:
    """Fold ``node`` if it is a BN-like node that folds; True when it did."""
    key = node_key(node)
    if node.op_type == "BatchNormalization":
        try:
            affine = batch_norm_affine(graph, node)
        except NotFoldable as reason:
            outcome.reasons[key] = (None, str(reason))
            return False
    else:
        affine = affine_of(graph, node)
        if affine is None or (key not in paired and not _beside_linear(graph, affine)):
            return False
    try:
        outcome.folded[key] = _fold(graph, affine)
    except NotFoldable as reason:
        outcome.reasons[key] = (affine, str(reason))
        return False
    outcome.reasons.pop(key, None)
    return True


def _fold(graph: OnnxGraph, affine: Affine) -> _Folded:
    plan: Plan
    try:
        plan, direction = _plan_backward(graph, affine), "backward"
    except NotFoldable as backward:
        try:
            plan, direction = into_following.plan(graph, affine), "forward"
        except NotFoldable as forward:
            users = graph.users(affine.node.output[0])
            beside = len(users) == 1 and users[0].op_type in ("Add", "Sub")
            if affine.node.op_type != "BatchNormalization" or not beside:
                raise NotFoldable(
                    f"cannot fold backward ({backward}) nor forward ({forward})"
                ) from None
            try:
                plan, direction = into_sibling.plan(graph, affine), "parallel"
            except NotFoldable as parallel:
                raise NotFoldable(
                    f"cannot fold backward ({backward}), forward ({forward}) nor into a "
                    f"convolution beside it ({parallel})"
                ) from None
    targets = plan()
    graph.bypass(affine.node, affine.input)
    arrays = [graph.constant(name) for target in targets for name in target.input[1:]]
    arrays = [array for array in arrays if array is not None]
    return _Folded(
        affine,
        ", ".join(node_key(target) for target in targets),
        "/".join(sorted({target.op_type for target in targets})),
        direction,
        arrays,
    )


def _after_add(graph: OnnxGraph, affine: Affine, add: onnx.NodeProto) -> Plan:
    """``MatMul -> Add(bias) -> BN`` (``into_matmul``), else a sum of convolutions
    (``through_add``)."""
    producers = [graph.producer(tensor) for tensor in add.input]
    if any(p is not None and p.op_type == "MatMul" for p in producers):
        return into_matmul.plan(graph, affine, add)
    return through_add.plan(graph, affine, add)


def _plan_backward(graph: OnnxGraph, affine: Affine) -> Plan:
    producer = graph.producer(affine.input)
    while producer is not None and producer.op_type in PASS_THROUGH:
        # ``Identity`` (the dynamo exporter's ``cat`` of one tensor): the BN sees the
        # tensor before it unchanged
        graph.sole_user(producer.output[0], f"the output of '{node_key(producer)}'")
        producer = graph.producer(producer.input[0])
    if producer is None:
        raise NotFoldable("its input is a graph input")
    rule = BACKWARD.get(producer.op_type)
    if rule is None:
        raise NotFoldable(
            f"'{node_key(producer)}' is {article(producer.op_type)}, which has no weights"
        )
    return rule(graph, affine, producer)


def _beside_linear(graph: OnnxGraph, affine: Affine) -> bool:
    """Mul/Add/Sub are folded only beside a linear node (elsewhere they are just arithmetic)."""
    producer = graph.producer(affine.input)
    users = graph.users(affine.node.output[0])
    if producer is not None and producer.op_type == "Add":
        biased = affine_of(graph, producer)  # MatMul -> Add(bias) -> this
        before = None if biased is None else graph.producer(biased.input)
        if before is not None and before.op_type == "MatMul":
            return True
    return (producer is not None and producer.op_type in LINEAR_OPS) or (
        len(users) == 1 and users[0].op_type in LINEAR_OPS
    )


def _report_pair(
    graph: OnnxGraph, pair: Pair, outcome: _Outcome, result: OnnxFoldResult, describe: bool
) -> None:
    scale_key, shift_key = pair.keys
    bn = pair.as_batch_norm()
    done = outcome.folded.get(scale_key)
    if done is not None and (shift_key in outcome.folded or is_bias(graph, pair.shift.node)):
        result.folded.append(done.entry(result, describe, pair.name, bn))
        if pair.normalizes:
            result.norm_affines.add(pair.name)
        return
    if pair.normalizes:  # a normalization's affine left in place: no BN to report
        return
    reason = outcome.reasons.get(scale_key, outcome.reasons.get(shift_key, (None, None)))[1]
    if reason is None:
        reason = "it is not beside a Conv, ConvTranspose, Gemm or MatMul"
    numbers = _numbers(result, pair.name, bn.params, bn.scale, [bn.scale, bn.shift], describe)
    result.not_folded.append(NotFoldedEntry(pair.name, reason, *numbers))


def _nested_batch_norms(graph: onnx.GraphProto) -> list[NotFoldedEntry]:
    """The BNs inside ``If`` / ``Loop`` / ``Scan`` bodies, which are not folded."""
    entries = []
    for node in graph.node:
        for entry in node.attribute:
            bodies = [entry.g] if entry.HasField("g") else list(entry.graphs)
            for body in bodies:
                inside = f"the {entry.name} of '{node_key(node)}' (a {node.op_type})"
                for inner in body.node:
                    if inner.op_type == "BatchNormalization":
                        entries.append(
                            NotFoldedEntry(
                                node_key(inner), f"it is inside {inside}, which is not folded"
                            )
                        )
                entries.extend(_nested_batch_norms(body))
    return entries
