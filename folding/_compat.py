"""Every private framework API the folding package uses, and nothing else.

Keras internals (the layer graph behind a model), tf2onnx internals (its handler registry,
its converter and optimiser entry points), TensorFlow's ``tensorflow.python`` modules
(freezing, the op registry, grappler) and the two stdlib hooks (argparse's sub-parser
type, tarfile's extension-header readers) are reached only through the functions below.
Each says what it does and which library version it was written against; those versions
are pinned exactly in pyproject.toml (the ``fold`` extra) and ``WRITTEN_AGAINST`` names
them, and ``tests/test_compat.py`` runs every function for real, so that an upgrade that
moves or changes one of these internals fails that test, not a fold.

TensorFlow, Keras and tf2onnx are imported inside the functions: importing this module
costs nothing (the serving process imports ``folding.sources`` without TensorFlow).
"""

from __future__ import annotations

import argparse
import contextlib
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

WRITTEN_AGAINST = {"keras": "3.15.1", "tensorflow": "2.21.0", "tf2onnx": "1.17.0"}
"""The distributions whose internals this module uses, at the versions it was written
against (and that pyproject.toml pins). The stdlib hooks were written against CPython
3.10-3.12 (``requires-python``)."""

Subparsers: TypeAlias = argparse._SubParsersAction
"""The object ``ArgumentParser.add_subparsers()`` returns, for annotations (argparse
documents the method, not the class; CPython 3.10-3.12)."""


# -- Keras 3.15.1: the layer graph behind a model ------------------------------------------


def is_functional(model: Any) -> bool:
    """``model`` is a Functional model (``keras.Model(inputs, outputs)``, or a subclass of
    it such as keras-hub's ``Backbone``). Keras 3.15.1 exports no name for the class:
    ``keras.src.models.functional.Functional``."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def functional_of_sequential(model: Any) -> Any:
    """The Functional model a built ``keras.Sequential`` runs (None until it is built).
    Keras 3.15.1: ``Sequential._functional``, set by ``Sequential.build``."""
    return getattr(model, "_functional", None)


def nodes_by_depth(functional: Any) -> dict[int, list[Any]]:
    """A Functional model's call nodes by depth (0: the outputs' nodes). Keras 3.15.1:
    ``Function._nodes_by_depth``; each node has ``operation`` and ``input_tensors``."""
    return functional._nodes_by_depth


@contextlib.contextmanager
def nested_models_take_any_shape() -> Iterator[None]:
    """While open, a Functional (or Sequential) model called on symbolic tensors accepts
    inputs of other shapes than it was built on, as it does on real tensors: a custom
    layer may build a sublayer ``Sequential`` on one shape and call it on another (kimm's
    ``ReparameterizableConv2D`` builds its 1x1 branch on the padded input and runs it on
    the unpadded one). Keras 3.15.1: ``Functional.compute_output_spec`` checks the shapes
    through ``Functional._assert_input_compatibility``; ``Functional.call`` does not."""
    from keras.src.models.functional import Functional

    checked = Functional.__dict__["_assert_input_compatibility"]
    Functional._assert_input_compatibility = lambda self, *args: None
    try:
        yield
    finally:
        Functional._assert_input_compatibility = checked


def nested_layers(layer: Any) -> list[Any]:
    """Every layer nested in ``layer`` (not ``layer`` itself), depth first; [] for an
    object that is not a layer. Keras 3.15.1: ``Layer._flatten_layers``."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=True))


def input_structure(model: Any) -> Any:
    """The nesting of a model's inputs (a tensor, list or dict of them), for
    ``keras.tree.pack_sequence_as``; None when the model has none recorded. Keras 3.15.1:
    ``Function._inputs_struct``, a Sequential's through its ``_functional``."""
    structure = getattr(model, "_inputs_struct", None)
    inner = functional_of_sequential(model)
    if structure is None and inner is not None:
        structure = getattr(inner, "_inputs_struct", None)
    return structure


_VARIABLE_OPERATORS = {
    "__add__": ("add", False),
    "__radd__": ("add", True),
    "__sub__": ("subtract", False),
    "__rsub__": ("subtract", True),
    "__mul__": ("multiply", False),
    "__rmul__": ("multiply", True),
    "__truediv__": ("divide", False),
    "__rtruediv__": ("divide", True),
    "__pow__": ("power", False),
    "__rpow__": ("power", True),
    "__matmul__": ("matmul", False),
    "__rmatmul__": ("matmul", True),
}


@contextlib.contextmanager
def symbolic_variable_operators() -> Iterator[None]:
    """While inside: ``variable * keras_tensor`` (a layer's weight on the left of an
    operator, as in ``self.scale * x + self.bias``) records a ``keras.ops`` operation.
    Keras 3.15.1's ``KerasVariable.__mul__`` and the other operators call the backend on
    ``self.value`` directly, which refuses a symbolic tensor; its reflected operators and
    a KerasTensor on the left already go through ``keras.ops``."""
    import keras

    saved = {name: getattr(keras.Variable, name) for name in _VARIABLE_OPERATORS}

    def symbolic(name: str, function_name: str, reflected: bool) -> Callable[..., Any]:
        original, function = saved[name], getattr(keras.ops, function_name)

        def operator(self: Any, other: Any) -> Any:
            if isinstance(other, keras.KerasTensor):
                return function(other, self) if reflected else function(self, other)
            return original(self, other)

        return operator

    for name, (function_name, reflected) in _VARIABLE_OPERATORS.items():
        setattr(keras.Variable, name, symbolic(name, function_name, reflected))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(keras.Variable, name, original)


def is_applications_class(cls: type) -> bool:
    """``cls`` is defined by ``keras.applications`` (whose custom layers, such as
    EfficientNet's, have no public class). Keras 3.15.1 module layout:
    ``keras.src.applications``."""
    return cls.__module__.startswith("keras.src.applications")


def is_ops_class(cls: type) -> bool:
    """``cls`` is a ``keras.ops`` operation class (what a Functional model records for a
    ``keras.ops.*`` call, or for ``keras.activations.relu``/``mish``, which are operations
    of their own). Keras 3.15.1 module layout: ``keras.src.ops``, ``keras.src.activations``."""
    return cls.__module__.startswith(("keras.src.ops", "keras.src.activations"))


KERAS3_MODEL_MODULES = {
    "Functional": "keras.src.models.functional",
    "Model": "keras.src.models.model",
    "Sequential": "keras.src.models.sequential",
}
"""The ``module`` a Keras 3.15.1 config records for each model class."""


def keras3_module(tf_keras_module: str, class_name: str) -> str:
    """The ``module`` a Keras 3.15.1 config gives the class that a tf.keras (Keras 2)
    config places in ``tf_keras_module`` (``tf_keras.src.layers.core.dense`` ->
    ``keras.src.layers.core.dense``; Keras 2's ``engine`` is Keras 3's ``models``)."""
    module = KERAS3_MODEL_MODULES.get(class_name, "keras" + tf_keras_module[len("tf_keras") :])
    return module.replace("keras.src.engine.", "keras.src.models.")


def patch_tf2onnx_for_keras() -> None:
    """Apply the fixes Keras makes to tf2onnx before its own ONNX export (numpy 2's
    removed aliases, which tf2onnx 1.17 still uses; once per process). Keras 3.15.1:
    ``keras.src.export.tf2onnx_lib.patch_tf2onnx``."""
    import warnings

    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    with warnings.catch_warnings():  # numpy's FutureWarning on the np.object it sets
        warnings.simplefilter("ignore")
        patch_tf2onnx()


# -- tf2onnx 1.17.0: its handler registry, converter and optimisers --------------------------


def tf2onnx_handler(op_type: str) -> Callable[[type], type]:
    """A class decorator registering a converter for the TensorFlow op ``op_type`` (its
    ``version_N`` classmethods, ``(ctx, node, **kwargs)``). tf2onnx 1.17.0:
    ``tf2onnx.handler.tf_op``."""
    from tf2onnx.handler import tf_op

    return tf_op(op_type)


def unique_node_name(base: str) -> str:
    """A name no other node of the graph being converted has. tf2onnx 1.17.0:
    ``tf2onnx.utils.make_name``."""
    from tf2onnx import utils

    return utils.make_name(base)


def numpy_dtype_of(onnx_dtype: int) -> Any:
    """The numpy dtype of an ONNX ``TensorProto`` element type. tf2onnx 1.17.0:
    ``tf2onnx.utils.map_onnx_to_numpy_type``."""
    from tf2onnx import utils

    return utils.map_onnx_to_numpy_type(onnx_dtype)


def tf2onnx_converted_ops() -> set[str]:
    """Every TensorFlow op type some registered converter handles, at any opset (those
    registered with ``tf2onnx_handler`` included). tf2onnx 1.17.0: importing
    ``tf2onnx.onnx_opset`` registers its converters in ``tf_op.get_opsets()``, a list per
    ONNX domain of ``{op type: handler}`` per opset."""
    import tf2onnx.onnx_opset  # noqa: F401 - registers the handlers
    from tf2onnx.handler import tf_op

    names: set[str] = set()
    for versions in tf_op.get_opsets().values():
        for handlers in versions:
            names.update(handlers)
    return names


def tensor_renames(concrete: Any, input_names: list[str], output_names: list[str]) -> Any:
    """The graph tensor -> structured name map of a concrete function's inputs and outputs,
    for ``tf_graph_to_onnx(renames=...)``. tf2onnx 1.17.0:
    ``tf2onnx.convert.tensor_names_from_structed``."""
    from tf2onnx.convert import tensor_names_from_structed

    return tensor_names_from_structed(concrete, input_names, output_names)


def tf_graph_to_onnx(
    tf_graph: Any,
    *,
    opset: int,
    input_names: list[str],
    output_names: list[str],
    renames: dict[str, str],
    large_constants: dict[str, bytes] | None = None,
) -> Any:
    """A ``tf.Graph`` converted op by op into tf2onnx's graph (not yet optimised: no
    optimiser runs here); ops without a converter are kept and reported, not raised.
    ``large_constants``: the contents ``strip_large_constants`` took out of the
    graph's constants before it was imported. tf2onnx 1.17.0:
    ``tf2onnx.tfonnx.process_tf_graph`` (its ``const_node_values``)."""
    from tf2onnx import tfonnx

    _scan_for_functions_only_where_there_are_some(tfonnx)
    _rewrite_loops_only_where_there_are_some(tfonnx)
    return tfonnx.process_tf_graph(
        tf_graph,
        continue_on_error=True,
        opset=opset,
        input_names=input_names,
        output_names=output_names,
        tensors_to_rename=renames,
        const_node_values=large_constants or None,
    )


def strip_large_constants(graph_def: Any) -> dict[str, bytes]:
    """Empty the contents of ``graph_def``'s large constants (over 1000 bytes: the
    weights), in place; returns them by node name, for ``tf_graph_to_onnx``. Their
    shapes and dtypes stay, so TensorFlow imports the graph and infers its shapes
    without copying the weights into it and out again for tf2onnx. tf2onnx 1.17.0:
    ``tf2onnx.tf_utils.compress_graph_def``, what its ``large_model`` conversion does."""
    from tf2onnx.tf_utils import compress_graph_def

    return compress_graph_def(graph_def)


def _scan_for_functions_only_where_there_are_some(tfonnx: Any) -> None:
    """``process_tf_graph`` first converts every op of the graph once only to list the
    functions it calls (``tf_loader.resolve_functions``), then converts them all again;
    a graph whose library holds no function (the frozen, inlined graphs converted here)
    calls none, so the first pass is skipped there: it returns [] for them anyway.
    Installed once per process. tf2onnx 1.17.0: ``tfonnx.graphs_from_tf`` calls
    ``resolve_functions`` (imported into ``tfonnx``), which reads ``tf.Graph._functions``."""
    resolve = tfonnx.resolve_functions
    if getattr(resolve, "skips_graphs_without_functions", False):
        return

    def resolve_functions(tf_graph: Any) -> list[Any]:
        if not tf_graph._functions:
            return []
        return resolve(tf_graph)

    resolve_functions.skips_graphs_without_functions = True  # type: ignore[attr-defined]
    tfonnx.resolve_functions = resolve_functions


LOOP_REWRITERS = frozenset(
    {
        "rewriter_lstm_tf2",
        "rewrite_gru_tf2",
        "rewrite_single_direction_lstm",
        "rewrite_bi_direction_lstm",
        "rewrite_single_direction_gru",
        "rewrite_bi_direction_gru",
        "rewrite_custom_rnn_cell",
        "rewrite_generic_loop",
        "rewrite_cond",
    }
)
"""tf2onnx's rewriters of loops, conditionals and the recurrent cells inside loops."""

LOOP_OPS = frozenset(
    {
        *("TensorListGetItem", "TensorListSetItem", "While", "StatelessWhile", "If"),
        *("StatelessIf", "LoopCond", "Switch", "Merge", "Enter", "Exit", "NextIteration"),
        *("LSTM", "GRU"),
    }
)
"""Ops one of ``LOOP_REWRITERS`` starts from: TensorFlow 1 and 2 control flow, the
tensor lists of a TensorFlow 2 loop's body, the LSTM/GRU nodes the bidirectional
rewriters pair up."""


def _rewrite_loops_only_where_there_are_some(tfonnx: Any) -> None:
    """tf2onnx runs every rewriter on every graph, each matching its patterns against
    every op (building the LSTM patterns alone takes a third of a second); a graph
    with none of ``LOOP_OPS`` (a convolutional network) skips ``LOOP_REWRITERS``,
    which match nothing there. Installed once per process. tf2onnx 1.17.0:
    ``tfonnx.process_parsed_graph`` calls ``tfonnx.run_rewriters(g, funcs, ...)``, which
    calls itself for subgraphs."""
    run = tfonnx.run_rewriters
    if getattr(run, "skips_loop_rewriters", False):
        return

    def run_rewriters(graph: Any, funcs: list[Any], *args: Any) -> Any:
        if not {node.type for node in graph.get_nodes()} & LOOP_OPS:
            funcs = [func for func in funcs if func.__name__ not in LOOP_REWRITERS]
        return run(graph, funcs, *args)

    run_rewriters.skips_loop_rewriters = True  # type: ignore[attr-defined]
    tfonnx.run_rewriters = run_rewriters


def tf2onnx_optimizers() -> OrderedDict[str, type]:
    """tf2onnx's optimisers by name, in the order it runs them; each class is made with no
    arguments and has ``optimize(graph, iteration)``. tf2onnx 1.17.0:
    ``tf2onnx.optimizer._get_optimizers``."""
    from tf2onnx import optimizer

    return OrderedDict(optimizer._get_optimizers())


def run_tf2onnx_optimizer(factory: type, graph: Any) -> Any:
    """One tf2onnx optimiser's rewrite of ``graph`` (in place; the graph it returns),
    nodes nothing uses any more deleted, without writing every node back into its
    protobuf first (each write copies every constant, the weights; ``make_model`` writes
    them once at the end) or counting the nodes before and after for a log line.
    tf2onnx 1.17.0: ``GraphOptimizerBase.optimize`` less its ``update_proto`` and
    ``dump_node_statistics``; the optimisers read and write the nodes' own fields, not
    their protobufs."""
    optimizer = factory()
    optimizer.opt_iteration = 0
    graph = optimizer._optimize(graph) or graph
    graph.delete_unused_nodes(graph.outputs)
    return graph


def optimize_to_fixed_point(graph: Any, optimizers: OrderedDict[str, type]) -> Any:
    """``graph`` with ``optimizers`` run to a fixed point, each on a copy, one that fails
    skipped. tf2onnx 1.17.0: ``tf2onnx.optimizer.optimize_graph(catch_errors=True)``."""
    from tf2onnx import optimizer

    return optimizer.optimize_graph(graph, catch_errors=True, optimizers=optimizers)


# -- TensorFlow 2.21.0: freezing, the op registry, grappler ---------------------------------


def freeze_variables(concrete: Any) -> Any:
    """A concrete function's GraphDef with its variables (and captured tensors) as
    constants, functions inlined where TensorFlow can, without building a new concrete
    function from it (``convert_variables_to_constants_v2`` does, which takes longer than
    the rest). TensorFlow 2.21.0: ``tensorflow.python.framework.convert_to_constants``'s
    ``_FunctionConverterDataInEager`` and ``_replace_variables_by_constants``; then
    tf2onnx 1.17.0's ``tf_loader.fix_freezing_errors_part2``, as tf2onnx's loader does."""
    from tensorflow.python.framework.convert_to_constants import (
        _FunctionConverterDataInEager,
        _replace_variables_by_constants,
    )
    from tf2onnx import tf_loader

    data = _FunctionConverterDataInEager(
        func=concrete, lower_control_flow=False, aggressive_inlining=True
    )
    graph_def, _ = _replace_variables_by_constants(converter_data=data)
    return tf_loader.fix_freezing_errors_part2(graph_def)


@contextlib.contextmanager
def functions_run_as_traced() -> Iterator[None]:
    """Within this, the ``tf.function``s this thread calls run without grappler's
    rewrites (on a ResNet50, instantiating the optimised function costs about as much
    as running it on a few rows), as in ``fold_constants``'s sessions; other threads
    keep TensorFlow's settings. TensorFlow 2.21.0: the eager context's per-thread
    ``function_call_options`` (``tensorflow.python.eager.context.FunctionCallOptions``),
    whose ``ConfigProto`` a function's instantiation reads."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    eager = context.context()
    previous = eager.function_call_options
    config = config_pb2.ConfigProto.FromString(previous.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    eager.function_call_options = context.FunctionCallOptions(
        executor_type=previous.executor_type, config_proto=config
    )
    try:
        yield
    finally:
        eager.function_call_options = previous


def tf_op_def(op_type: str) -> Any:
    """The registered ``OpDef`` of a TensorFlow op type (None for a function call or an op
    this TensorFlow does not have). TensorFlow 2.21.0:
    ``tensorflow.python.framework.op_def_registry.get``."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def grappler_optimize(config: Any, meta_graph: Any) -> Any:
    """The GraphDef grappler makes of ``meta_graph`` with the rewriters ``config``
    (a ``ConfigProto``) enables. TensorFlow 2.21.0:
    ``tensorflow.python.grappler.tf_optimizer.OptimizeGraph``."""
    from tensorflow.python.grappler import tf_optimizer

    return tf_optimizer.OptimizeGraph(config, meta_graph)


# -- CPython 3.10-3.12: tarfile's extension headers -----------------------------------------


def tar_info_checking_extensions(check: Callable[[int], None]) -> type[tarfile.TarInfo]:
    """A ``TarInfo`` class (for ``tarfile.open(tarinfo=...)``) that calls ``check(size)``
    with the size of each pax or GNU long-name extension header before tarfile reads it,
    so that ``check`` can refuse one by raising. CPython 3.10-3.12: ``TarInfo._proc_pax``
    and ``TarInfo._proc_gnulong``, which ``_proc_member`` calls for those header types."""

    class CheckedTarInfo(tarfile.TarInfo):
        def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            check(self.size)
            return super()._proc_pax(tar)  # type: ignore[misc]

        def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            check(self.size)
            return super()._proc_gnulong(tar)  # type: ignore[misc]

    return CheckedTarInfo
