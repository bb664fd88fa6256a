"""Keras -> ONNX with a dynamic batch axis and Keras names.

Two exporters: the direct one (``folding.export.direct``) writes each known layer as
ONNX operators from the traced graph, in milliseconds, and keeps every
BatchNormalization it is given as its own node; the general one (tf2onnx over
the model's TensorFlow graph) takes any model TensorFlow can trace, and is the
fallback when a layer has no direct form.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import onnx

from folding.errors import ExportError
from folding.export.direct import Weights, emit_graph, keras_weights
from folding.keras_graph.graph import Graph, InputSpec
from folding.sources.onnx.model import OnnxModel, summarize  # noqa: F401 - part of this module's API
from folding.specs import Fraction, no_progress

DEFAULT_OPSET = 17
EXPORT_STEPS = (0.45, 0.65, 0.97)
"""Where a direct export's progress stands once its layer calls are written, once the
model is assembled and once it is serialised (ResNet50: the layers take about 45% of
the time, ``make_model`` 20%, ``SerializeToString`` 32%, the checker the rest)."""


def export_direct(
    graph: Graph,
    opset: int = DEFAULT_OPSET,
    weights: Weights = keras_weights,
    *,
    layer_fallback: Callable[..., onnx.ModelProto] | None = None,
    spliced: list[Any] | None = None,
    progress: Fraction = no_progress,
) -> OnnxModel:
    """``graph`` through the direct exporter (the caller writes the bytes). With a
    ``layer_fallback`` (``layer_exporter()``) a layer it has no form for is
    exported alone by the general exporter (``spliced`` lists those); else raises
    ``Unsupported`` naming the first such layer. ``progress(fraction)`` hears of the
    layer calls written, then of the model assembled, serialised and checked, each
    step weighted by its share of the time (``EXPORT_STEPS``)."""
    written, assembled, serialised = EXPORT_STEPS
    proto = emit_graph(
        graph,
        opset=opset,
        output_dtypes=graph.output_dtypes or ["float32"] * len(graph.outputs),
        weights=weights,
        name=graph.name,
        fallback=layer_fallback,
        spliced=spliced,
        progress=lambda fraction: progress(written * fraction),
    )
    progress(assembled)
    data = proto.SerializeToString()
    progress(serialised)
    try:
        onnx.checker.check_model(data)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ExportError(f"direct ONNX export produced an invalid graph: {first_line}") from None
    progress(1.0)
    return OnnxModel(proto, data)


def layer_exporter() -> Callable[[Any, Graph, int], onnx.ModelProto]:
    """``export_layer``, remembering each layer's export: the folded and the
    unfolded graph share the layers neither exporter can trace into."""
    done: dict[tuple, onnx.ModelProto] = {}

    def export(call: Any, graph: Graph, opset: int) -> onnx.ModelProto:
        key = (id(call.layer), tuple(graph.shapes[t] for t in call.input_ids), opset)
        if key not in done:
            done[key] = export_layer(call, graph, opset)
        return done[key]

    return export


def export_layer(call: Any, graph: Graph, opset: int) -> onnx.ModelProto:
    """One traced call's layer alone through tf2onnx: inputs are its tensor
    arguments (in order, each once), outputs its outputs."""
    from keras import tree

    from folding.keras_graph.graph import Ref

    tensors = list(dict.fromkeys(call.input_ids))
    specs = [
        InputSpec(t, f"input_{i}", graph.shapes[t], graph.dtypes.get(t, "float32"))
        for i, t in enumerate(tensors)
    ]

    def run(values: list[Any]) -> list[Any]:
        by_id = dict(zip(tensors, values, strict=True))

        def resolve(leaf: Any) -> Any:
            return by_id[leaf.id] if isinstance(leaf, Ref) else leaf

        args, kwargs = tree.map_structure(resolve, (tuple(call.args), dict(call.kwargs)))
        return tree.flatten(call.layer(*args, **kwargs))

    names = [f"output_{i}" for i in range(len(call.outputs))]
    return export_onnx(run, specs, names, opset)


def export_onnx(
    call: Callable[[list[Any]], list[Any]],
    inputs: Sequence[InputSpec],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    *,
    check: bool = True,
    on_traced: Callable[[Callable[[list[Any]], list[Any]]], None] | None = None,
) -> onnx.ModelProto:
    """Trace ``call`` (flat list of tensors in, flat list out) with tf2onnx.

    Every input gets a dynamic batch axis; graph inputs and outputs carry the
    given names, in order. ``check=False`` leaves the ONNX checker to the caller
    (``check_onnx`` on the bytes it writes anyway: the checker serialises the
    model, weights and all, once more). ``on_traced(run)``, once ``call`` is traced
    and before it is converted, is handed the traced function as a function of
    arrays (flat list of numpy arrays in, flat list out), which runs ``call`` in
    graph mode, as ``model.predict`` does.
    """
    import tensorflow as tf

    from folding._compat import patch_tf2onnx_for_keras

    signature = [
        tf.TensorSpec((None, *spec.shape[1:]), tf.as_dtype(spec.dtype), name=spec.name)
        for spec in inputs
    ]

    @tf.function(input_signature=signature, autograph=False)
    def forward(*tensors: Any) -> list[Any]:
        return list(call(list(tensors)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch_tf2onnx_for_keras()
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("tf2onnx"):
            concrete = forward.get_concrete_function()
            if on_traced is not None:
                on_traced(graph_runner(concrete, signature))
            proto = _convert(concrete, len(signature), opset)
    except Exception as error:  # tf2onnx raises bare exceptions of many kinds
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"ONNX conversion failed: {type(error).__name__}: {first_line}") from None
    _outputs_from_nodes(proto.graph)
    _rename_outputs(proto.graph, list(output_names))
    if check:
        check_onnx(proto)
    return proto


def graph_runner(concrete: Any, signature: list[Any]) -> Callable[[list[Any]], list[Any]]:
    """A traced function (``concrete``, of the tensors ``signature`` describes) as a
    function of numpy arrays, returning numpy arrays; it runs as traced, without
    grappler's rewrites (``functions_run_as_traced``: they take longer than a few
    rows' run and would only make it differ from the eager model by rounding)."""
    import numpy as np
    import tensorflow as tf

    from folding._compat import functions_run_as_traced

    def run(arrays: list[Any]) -> list[Any]:
        tensors = [
            tf.convert_to_tensor(array, dtype=spec.dtype)
            for array, spec in zip(arrays, signature, strict=True)
        ]
        with functions_run_as_traced():
            return [np.asarray(output) for output in concrete(*tensors)]

    return run


def check_onnx(model: onnx.ModelProto | bytes) -> None:
    """ExportError when tf2onnx's output is not a valid ONNX model."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ExportError(f"ONNX conversion produced an invalid graph: {first_line}") from None


@contextlib.contextmanager
def _quiet_loggers(prefix: str) -> Iterator[None]:
    """Silence a library's loggers (it logs each unsupported op before raising)."""
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(f"{prefix}."))]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _convert(concrete: Any, input_count: int, opset: int) -> onnx.ModelProto:
    """``concrete`` through ``folding.export.tf2onnx_convert`` (every BN kept as its own ops);
    only the signature's own inputs become graph inputs: tensors the function captures
    (a Normalization layer's mean and variance, say) are frozen into constants."""
    from folding._compat import tensor_renames
    from folding.export.tf2onnx_convert import convert_function

    input_names = [tensor.name for tensor in concrete.inputs[:input_count]]
    output_names = [tensor.name for tensor in concrete.outputs]
    renames = tensor_renames(concrete, input_names, output_names)
    return convert_function(concrete, input_names, output_names, renames, opset)


def _outputs_from_nodes(graph: onnx.GraphProto) -> None:
    """Each graph output that tf2onnx left as a constant or an input (a layer returning
    an empty attention-score tensor, say) given an Identity node of its own: ONNX wants
    a graph output to be some node's output."""
    from onnx import helper

    produced = {name for node in graph.node for name in node.output}
    for output in graph.output:
        if output.name in produced:
            continue
        source, output.name = output.name, f"{output.name}__output"
        graph.node.append(helper.make_node("Identity", [source], [output.name], name=output.name))
        produced.add(output.name)


def _rename_outputs(graph: onnx.GraphProto, names: list[str]) -> None:
    if len(graph.output) != len(names):
        raise ExportError(f"ONNX graph has {len(graph.output)} outputs, expected {len(names)}")
    taken = {out for node in graph.node for out in node.output} | {i.name for i in graph.input}
    for output, new in zip(graph.output, names, strict=True):
        old = output.name
        if old == new:
            continue
        if new in taken:
            _rename_tensor(graph, new, f"{new}__internal")
        _rename_tensor(graph, old, new)
        taken.add(new)


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
