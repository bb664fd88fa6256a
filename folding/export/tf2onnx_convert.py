"""A TensorFlow concrete function as ONNX through tf2onnx, every BatchNormalization
still its own ops (the general exporter and the SavedModel path both come here); the
private tf2onnx and TensorFlow conversion APIs it needs are called through ``folding._compat``.

What is left out of tf2onnx's usual pipeline, and why:

- **TensorFlow's constant folding** (grappler's ``constfold``, which tf2onnx's
  loader runs) multiplies a constant ``Mul`` into the ``Conv2D`` before it: only
  function inlining runs here.
- **tf2onnx's transpose and back-to-back optimisers** merge a BN's ``Mul`` /
  ``BatchNormalization`` into the ``Conv``.

What is added:

- Functions TensorFlow must compile with XLA (Keras 3 runs a grouped convolution
  as a ``jit_compile`` function on the TF backend) lose that mark, so that grappler
  inlines them and tf2onnx sees their ops instead of a ``StatefulPartitionedCall``.
- ``Erfc`` (exact gelu on the TF backend is ``0.5 x erfc(-x / sqrt 2)``), which
  tf2onnx has no converter for, is written ``1 - Erf(x)``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

import numpy as np
import onnx

from folding._compat import (
    freeze_variables,
    grappler_optimize,
    numpy_dtype_of,
    optimize_to_fixed_point,
    run_tf2onnx_optimizer,
    strip_large_constants,
    tf2onnx_handler,
    tf2onnx_optimizers,
    tf_graph_to_onnx,
    tf_op_def,
    unique_node_name,
)

FUSING_OPTIMIZERS = ("optimize_transpose", "remove_back_to_back")
"""tf2onnx optimisers that merge a BN's Mul / BatchNormalization into a Conv."""

OPTIMIZER_OPS = {
    "remove_redundant_upsample": {"Upsample", "Resize"},
    "const_dequantize_optimizer": {"DequantizeLinear"},
    "loop_optimizer": {"Loop"},
    "reshape_optimizer": {"Reshape"},
    "global_pool_optimizer": {"ReduceMean", "ReduceMax"},
    "q_dq_optimizer": {"QuantizeLinear", "DequantizeLinear"},
    "einsum_optimizer": {"Einsum"},
}
"""tf2onnx optimisers that only rewrite these ops: skipped when the graph has none."""

XLA_ATTRIBUTES = ("_XlaMustCompile", "_noinline")
"""Marks that keep grappler from inlining a function (XLA compiles it whole)."""


@tf2onnx_handler("Erfc")
class Erfc:
    """``Erfc(x) = 1 - Erf(x)``: ONNX has Erf (opset 9) but no Erfc."""

    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        dtype = ctx.get_dtype(node.input[0])
        one = ctx.make_const(
            unique_node_name(f"{node.name}_one"), np.array(1, numpy_dtype_of(dtype))
        )
        node.type = "Erf"
        complement = ctx.insert_new_node_on_output(
            "Sub",
            node.output[0],
            name=unique_node_name(f"{node.name}_complement"),
            inputs=[one.output[0], node.output[0]],
        )
        ctx.set_dtype(complement.output[0], dtype)
        ctx.copy_shape(node.output[0], complement.output[0])


def convert_function(
    concrete: Any,
    input_names: list[str],
    output_names: list[str],
    renames: dict[str, str],
    opset: int,
) -> onnx.ModelProto:
    """``concrete`` as ONNX: its variables and captured tensors frozen into constants,
    ``input_names`` its graph inputs, tensors renamed by ``renames``."""
    import tensorflow as tf

    with tf.device("/cpu:0"):
        graph_def = freeze(concrete)
        if graph_def.library.function:  # calls freezing did not inline (XLA ones)
            _allow_inlining(graph_def)
            graph_def = _inline(graph_def, input_names, output_names)
        graph_def = fold_constants(graph_def, output_names)
        return _to_onnx(graph_def, concrete.name, input_names, output_names, renames, opset)


def freeze(concrete: Any) -> Any:
    """The function's GraphDef with its variables as constants (what
    ``convert_variables_to_constants_v2`` computes, without building a new
    concrete function from it, which takes longer than the rest)."""
    return freeze_variables(concrete)


def fold_constants(graph_def: Any, output_names: list[str]) -> Any:
    """Every op whose inputs are all constants computed once, in one session run, and
    written as a Const; ops nothing needs any more dropped.

    tf2onnx would compute them itself, one session per op (seconds on a ResNet).
    Unlike grappler's constant folding, this never rewrites an op that has a
    non-constant input: a Conv2D stays a Conv2D and the BN's Mul after it a Mul."""
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    fetch_ops = {name.split(":")[0] for name in output_names}
    for node in graph_def.node:  # ordering edges: meaningless once frozen, and ONNX has none
        if any(name.startswith("^") for name in node.input):
            kept = [name for name in node.input if not name.startswith("^")]
            del node.input[:]
            node.input.extend(kept)
    nodes = {node.name: node for node in graph_def.node}
    constant = _constant_nodes(nodes)
    needed_by_others = set(fetch_ops)
    for node in graph_def.node:
        if node.name not in constant:
            needed_by_others.update(name.split(":")[0] for name in node.input)
    frontier = [
        name
        for name in needed_by_others & constant
        if nodes[name].op not in ("Const", "ConstV2") and _numeric_single_output(nodes[name])
    ]
    replaced = {}
    moved: dict[str, str] = {}  # a weight's Const -> the name of the read it replaces
    computed = []
    uses = Counter(name.split(":")[0] for node in graph_def.node for name in node.input)
    for name in frontier:
        node = nodes[name]
        source = _through_identities(node, nodes) if node.op == "Identity" else None
        if source is None or source.op not in ("Const", "ConstV2"):
            computed.append(name)
        elif _only_reader(node, source, nodes, uses, fetch_ops):  # renamed, not copied
            moved[source.name] = name
        else:  # a read variable
            alias = node_def_pb2.NodeDef()
            alias.CopyFrom(source)
            alias.name = name
            replaced[name] = alias
    try:
        values = _evaluate(graph_def, computed)
    except tf.errors.OpError:  # an op TensorFlow cannot run alone: tf2onnx's way then
        return graph_def
    for name, (dtype, value) in zip(computed, values, strict=True):
        node = node_def_pb2.NodeDef(name=name, op="Const", device=nodes[name].device)
        node.attr["dtype"].type = dtype.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype))
        replaced[name] = node
    if not replaced and not moved:
        return graph_def
    reads = set(moved.values())
    for index in reversed(range(len(graph_def.node))):
        node = graph_def.node[index]
        if node.name in reads:  # its Const takes its name below
            del graph_def.node[index]
        elif node.name in replaced:
            node.CopyFrom(replaced[node.name])
    for node in graph_def.node:
        if node.name in moved:
            node.name = moved[node.name]
    _keep_nodes(graph_def, fetch_ops)
    return graph_def


def _only_reader(
    read: Any, source: Any, nodes: dict[str, Any], uses: Counter, fetch_ops: set[str]
) -> bool:
    """Whether ``read`` (a chain of Identity ops from the Const ``source``) is all that
    reads ``source``, through no op read by another: then the Const can take the
    read's name (and the chain be dropped) instead of being copied into its place,
    weights and all."""
    node = read
    while node is not source:
        name = node.input[0].split(":")[0]
        if uses[name] != 1 or name in fetch_ops:
            return False
        node = nodes[name]
    return True


def _through_identities(node: Any, nodes: dict[str, Any]) -> Any:
    """What a chain of ``Identity`` ops passes on (a SavedModel's variable reaches its
    reader through two: the call's input and the read), or None. A weight found so is
    aliased, not computed: computing it would run every weight through a session."""
    seen = 0
    while node is not None and node.op == "Identity" and node.input and seen < len(nodes):
        name, _, index = node.input[0].partition(":")
        if index not in ("", "0"):
            return None
        node, seen = nodes.get(name), seen + 1
    return node


def _evaluate(graph_def: Any, names: list[str]) -> list[tuple[Any, Any]]:
    """(dtype, value) of each op of ``names`` (all constant), from a graph of just what
    they need."""
    import tensorflow as tf

    if not names:
        return []
    needed = _with_nodes(graph_def, set(names), keep_placeholders=False)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(needed, name="")
    fetches = [graph.get_operation_by_name(name).outputs[0] for name in names]
    with tf.compat.v1.Session(graph=graph, config=_plain_session()) as session:
        values = session.run(fetches)
    return [(tensor.dtype, value) for tensor, value in zip(fetches, values, strict=True)]


def _constant_nodes(nodes: dict[str, Any]) -> set[str]:
    """Names of the nodes whose value is fixed: constants, and stateless ops of them."""
    constant = {name for name, node in nodes.items() if node.op in ("Const", "ConstV2")}
    candidates = []
    for name, node in nodes.items():
        op_def = tf_op_def(node.op)
        if (
            name not in constant
            and node.input
            and op_def is not None  # a function call is not an op of the registry
            and not op_def.is_stateful
            and node.op not in ("Placeholder", "PlaceholderWithDefault")
        ):
            candidates.append((name, [i.split(":")[0] for i in node.input]))
    changed = True
    while changed:  # as many rounds as the longest chain of constant ops
        changed = False
        remaining = []
        for name, inputs in candidates:
            if all(i in constant for i in inputs):
                constant.add(name)
                changed = True
            else:
                remaining.append((name, inputs))
        candidates = remaining
    return constant


def _numeric_single_output(node: Any) -> bool:
    """The op has one output, of a numeric dtype (not a resource, variant or string)."""
    from tensorflow.core.framework import types_pb2

    op_def = tf_op_def(node.op)
    if op_def is None or len(op_def.output_arg) != 1:
        return False
    output = op_def.output_arg[0]
    if output.number_attr or output.type_list_attr:
        return False
    dtype = node.attr[output.type_attr].type if output.type_attr else output.type
    return dtype not in (
        types_pb2.DT_INVALID,
        types_pb2.DT_RESOURCE,
        types_pb2.DT_VARIANT,
        types_pb2.DT_STRING,
    )


def _plain_session() -> Any:
    """A session config that runs the graph as it is: no grappler, no graph optimiser
    (they would spend longer rewriting a ResNet than computing its constants)."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    config.graph_options.optimizer_options.opt_level = config_pb2.OptimizerOptions.L0
    config.graph_options.optimizer_options.do_constant_folding = False
    return config


def _with_nodes(graph_def: Any, roots: set[str], keep_placeholders: bool = True) -> Any:
    """A GraphDef of the nodes of ``graph_def`` that ``roots`` depend on (and its
    placeholders, the model's inputs, unless told otherwise)."""
    needed = _needed(graph_def, roots, keep_placeholders)
    result = type(graph_def)()
    result.versions.CopyFrom(graph_def.versions)
    result.library.CopyFrom(graph_def.library)
    result.node.extend(node for node in graph_def.node if node.name in needed)
    return result


def _keep_nodes(graph_def: Any, roots: set[str]) -> None:
    """``_with_nodes`` in place: the nodes nothing of ``roots`` needs deleted, the
    others (the weights among them, ~100 MB on a ResNet) never copied."""
    needed = _needed(graph_def, roots, keep_placeholders=True)
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name not in needed:
            del graph_def.node[index]


def _needed(graph_def: Any, roots: set[str], keep_placeholders: bool) -> set[str]:
    nodes = {node.name: node for node in graph_def.node}
    needed: set[str] = set()
    inputs = [n.name for n in graph_def.node if n.op == "Placeholder" and keep_placeholders]
    stack = [*roots, *inputs]
    while stack:
        name = stack.pop()
        if name in needed or name not in nodes:
            continue
        needed.add(name)
        stack.extend(i.lstrip("^").split(":")[0] for i in nodes[name].input)
    return needed


def _to_onnx(
    graph_def: Any,
    name: str,
    input_names: list[str],
    output_names: list[str],
    renames: dict[str, str],
    opset: int,
) -> onnx.ModelProto:
    """tf2onnx's conversion, then its optimisers (less the BN-merging ones) once each,
    those that act on ops the graph does not hold skipped. The weights go to tf2onnx
    beside the graph, not through TensorFlow's import of it (``strip_large_constants``).
    tf2onnx itself loops the optimisers to a fixed point and copies the whole graph
    before each, weights and all; here it is never copied: only if an optimiser fails
    is the graph converted again and they are run tf2onnx's way."""
    import tensorflow as tf

    optimizers = OrderedDict(
        (key, value) for key, value in tf2onnx_optimizers().items() if key not in FUSING_OPTIMIZERS
    )
    large_constants = strip_large_constants(graph_def)
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")

        def convert() -> Any:
            return tf_graph_to_onnx(
                tf_graph,
                opset=opset,
                input_names=input_names,
                output_names=output_names,
                renames=renames,
                large_constants=large_constants,
            )

        optimized = convert()
        try:
            for key, factory in optimizers.items():
                wanted = OPTIMIZER_OPS.get(key)
                if wanted is None or wanted & {node.type for node in optimized.get_nodes()}:
                    optimized = run_tf2onnx_optimizer(factory, optimized)
            optimized.topological_sort(optimized.get_nodes())
        except Exception:  # an optimiser failed midway: converted anew, tf2onnx's careful way
            optimized = optimize_to_fixed_point(convert(), optimizers)
        return optimized.make_model(f"converted from {name}")


def _allow_inlining(graph_def: Any) -> None:
    """Drop the XLA marks from call nodes and function definitions, in place."""
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    for node in nodes:
        for key in XLA_ATTRIBUTES:
            if key in node.attr:
                del node.attr[key]
    for function in graph_def.library.function:
        for key in XLA_ATTRIBUTES:
            if key in function.attr:
                del function.attr[key]


def _inline(graph_def: Any, input_names: list[str], output_names: list[str]) -> Any:
    """Grappler with function inlining only (what tf2onnx's loader runs, minus
    'constfold' and the rest)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

    config = config_pb2.ConfigProto()
    config.graph_options.infer_shapes = True
    config.graph_options.rewrite_options.optimizers[:] = ["function", "dependency"]
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name="")
        meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def)
        fetch = meta_graph_pb2.CollectionDef()
        fetch.node_list.value.extend(input_names + output_names)
        meta_graph.collection_def["train_op"].CopyFrom(fetch)
        return grappler_optimize(config, meta_graph)
