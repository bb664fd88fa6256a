"""Read a SavedModel's ``saved_model.pb`` and refuse one whose graph reaches outside.

Nothing in a SavedModel runs before this check. It parses the protobuf
(TensorFlow's ``saved_model_pb2``; parsing runs nothing) and judges what the
loader will really run, found the way the loader finds it - through the
**object graph**, never through names that merely describe it:

* **TF2 SavedModels only** (an object graph): a TF1 SavedModel is restored by
  running ops its own graph names (``saver_def``), which cannot be checked.
* **The serving path** is the concrete function(s) ``loaded.signatures[name]``
  is built from (the root's ``signatures`` map in the object graph) and every
  function they reach: function-valued attributes of any name (``f`` of
  ``PartitionedCall`` / ``StatefulPartitionedCall``, ``While`` / ``If``
  bodies, a dataset op's functions, ...), functions called as ops, and the
  graphs embedded as serialized ``GraphDef`` constants in ``DatasetFromGraph``
  (with their own function libraries, recursively). Each op on it must be on
  the **allowlist** - an op tf2onnx can convert to ONNX (a model that runs
  other ops could not be exported anyway) or graph plumbing (calls, variable
  reads, control flow) - and none may be on the deny list.
* **What loading runs by itself** (each resource's create / initialise / destroy
  functions and each saveable's save / restore functions, and all they reach)
  is held to the same allowlist, plus variable and in-memory table ops
  (``STATE_OPS``): a deny list alone cannot name every op that reaches outside.
* **Everything else loading restores** (every function the object graph names,
  and all it reaches) may hold no denied op: Python callbacks, file-system
  access, processes, checkpoint I/O, summary writers, debug taps, readers and
  datasets (``DENIED_OPS``).
* The rest of the library and the graph's own nodes (the checkpoint save/restore
  functions TensorFlow writes, reached from ``saver_def``, which a TF2 load never
  runs) may hold checkpoint ops, and nothing else denied.
* **A name that resolves to nothing is a refusal**: a signature missing from the
  object graph, a function name that is not in the library, a ``signature_def``
  tensor that no node produces, keys that differ from what the function takes
  and returns, a ``DatasetFromGraph`` whose graph is computed while it runs.

A refusal names the op (or the name) and the function it is in.

Which functions loading calls is read in ``saved_model_objects``, what they reach
in ``saved_model_graph``; the op lists are in ``saved_model_ops``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError
from folding.sources.saved_model.graph import REFUSED, Body, own_ops, reach, reach_from
from folding.sources.saved_model.objects import (
    functions_run_on_load,
    object_graph_functions,
    signature_functions,
)
from folding.sources.saved_model.ops import CHECKPOINT_OPS, DENIED_OPS, PLUMBING_OPS, STATE_OPS

SAVED_MODEL_FILE = "saved_model.pb"
MAX_SAVED_MODEL_PB_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class SignatureSpec:
    """A serving signature as the protobuf declares it: input and output keys, sorted."""

    name: str
    inputs: list[str]
    outputs: list[str]


def convertible_ops() -> frozenset[str]:
    """Every TensorFlow op tf2onnx has a converter for, plus graph plumbing."""
    import folding.export.tf2onnx_convert  # noqa: F401 - registers this project's (Erfc)
    from folding._compat import tf2onnx_converted_ops

    return frozenset(tf2onnx_converted_ops()) | PLUMBING_OPS


def read_saved_model(directory: Path, label: str) -> Any:
    """The parsed ``saved_model.pb`` of ``directory``."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(directory) / SAVED_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"'{label}' is not a SavedModel: it has no {SAVED_MODEL_FILE}")
    if path.stat().st_size > MAX_SAVED_MODEL_PB_BYTES:
        raise ModelLoadError(
            f"'{label}': {SAVED_MODEL_FILE} is larger than {MAX_SAVED_MODEL_PB_BYTES} bytes"
        )
    message = saved_model_pb2.SavedModel()
    try:
        message.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError
        raise ModelLoadError(f"'{label}': {SAVED_MODEL_FILE} is unreadable: {error}") from None
    return message


def check_saved_model(directory: Path, signature: str, label: str) -> SignatureSpec:
    """Refuse what must not run (see the module docstring); the signature's keys."""
    saved = read_saved_model(directory, label)
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ModelLoadError(f"'{label}' has no MetaGraph tagged 'serve'")
    meta = graphs[0]
    if not meta.HasField("object_graph_def"):
        raise ModelLoadError(
            f"'{label}' is a TensorFlow 1 SavedModel (no object graph); only TensorFlow 2 "
            "SavedModels are accepted"
        )
    signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    if signature not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise ModelLoadError(f"'{label}' has no signature '{signature}' (signatures: {known})")
    objects = meta.object_graph_def
    library = {function.signature.name: function for function in meta.graph_def.library.function}

    served = signature_functions(objects, signature, library)
    serving = reach(served, library, strict=True)
    on_load = reach(functions_run_on_load(objects, library), library, strict=True)
    loadable = reach(object_graph_functions(objects, library), library, strict=True)
    reached = {body.where for body in (*serving, *on_load, *loadable)}
    rest = [
        body for body in reach(sorted(library), library, strict=False) if body.where not in reached
    ]
    graph = Body("the SavedModel's graph", meta.graph_def.node, library)
    rest += reach_from([graph], strict=False)

    for body in serving:
        _refuse_denied(body, "serving path")
    for body in on_load:
        _refuse_denied(
            body, "load path", " (run by loading: a resource's initialiser or a restore)"
        )
    for body in loadable:
        _refuse_denied(body, "load path")
    for body in rest:
        _refuse_denied(body, "graph", ignored=CHECKPOINT_OPS)
    allowed = convertible_ops()
    for body in serving:
        for op in own_ops(body):
            if op not in allowed:
                raise UnsafeModelError(
                    f"the SavedModel's serving path uses op '{op}' ({body.where}), which has "
                    "no ONNX form here; it is refused before anything runs"
                )
    for body in on_load:
        for op in own_ops(body):
            if op not in allowed and op not in STATE_OPS:
                raise UnsafeModelError(
                    f"loading the SavedModel would run op '{op}' (in {body.where}, a "
                    "resource's initialiser or a restore), which is neither a variable or "
                    f"table op nor one with an ONNX form; {REFUSED}"
                )

    declared = signatures[signature]
    _check_declared_names(declared, signature, meta.graph_def)
    for name in served:
        _check_keys(declared, signature, objects.concrete_functions.get(name))
    return SignatureSpec(signature, sorted(declared.inputs), sorted(declared.outputs))


def _refuse_denied(
    body: Body, path: str, note: str = "", ignored: frozenset[str] = frozenset()
) -> None:
    for op in own_ops(body):
        if op in DENIED_OPS and op not in ignored:
            raise UnsafeModelError(
                f"the SavedModel's {path} uses op '{op}' (in {body.where}{note}), which "
                f"reaches outside the model (files, processes or Python); {REFUSED}"
            )


def _check_declared_names(declared: Any, signature: str, graph: Any) -> None:
    """Every tensor the ``signature_def`` names must be produced by a node of the graph."""
    nodes = {node.name for node in graph.node}
    for kind, tensors in (("input", declared.inputs), ("output", declared.outputs)):
        for key in sorted(tensors):
            tensor = tensors[key].name
            if tensor.split(":")[0] not in nodes:
                raise UnsafeModelError(
                    f"signature '{signature}' {kind} '{key}' names tensor {tensor!r}, which no "
                    "node of the SavedModel's graph produces: the declared signature does not "
                    f"describe what loading would run; {REFUSED}"
                )


def _check_keys(declared: Any, signature: str, function: Any) -> None:
    """The signature's declared keys are those its function takes and returns."""
    if function is None:
        return
    expected = {"inputs": set(declared.inputs), "outputs": set(declared.outputs)}
    found = {}
    if function.output_signature.HasField("dict_value"):
        found["outputs"] = set(function.output_signature.dict_value.fields)
    arguments = function.canonicalized_input_signature.tuple_value.values
    keywords_only = len(arguments) == 2 and not arguments[0].tuple_value.values
    if keywords_only and arguments[1].HasField("dict_value"):  # as signatures are
        found["inputs"] = set(arguments[1].dict_value.fields)
    for kind, keys in found.items():
        if keys != expected[kind]:
            raise UnsafeModelError(
                f"signature '{signature}' declares {kind} {sorted(expected[kind])} but its "
                f"function in the object graph has {sorted(keys)}; {REFUSED}"
            )
