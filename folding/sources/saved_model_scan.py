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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError
from folding.sources.saved_model_ops import CHECKPOINT_OPS, DENIED_OPS, PLUMBING_OPS, STATE_OPS

SAVED_MODEL_FILE = "saved_model.pb"
MAX_SAVED_MODEL_PB_BYTES = 512 * 1024**2
MAX_EMBEDDED_DEPTH = 4
"""How deeply ``DatasetFromGraph`` graphs may nest inside each other."""

EMBEDDING_OPS = frozenset({"DatasetFromGraph"})
"""Ops whose ``graph_def`` input is a serialized GraphDef that runs when they do."""

_RESOURCE_FUNCTIONS = ("_create_resource", "_initialize", "_destroy_resource")
_REFUSED = "it is refused and nothing in it was run"


@dataclass(frozen=True)
class SignatureSpec:
    """A serving signature as the protobuf declares it: input and output keys, sorted."""

    name: str
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class _Body:
    """NodeDefs that run together - a library function, or a graph embedded in a node -
    and the library their calls resolve in."""

    where: str
    nodes: Sequence[Any]
    library: Mapping[str, Any]
    depth: int = 0
    scope: str = ""  # the embedded graph this body belongs to, if any


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

    served = _signature_functions(objects, signature, library)
    serving = _reach(served, library, strict=True)
    on_load = _reach(_functions_run_on_load(objects, library), library, strict=True)
    loadable = _reach(_object_graph_functions(objects, library), library, strict=True)
    reached = {body.where for body in (*serving, *on_load, *loadable)}
    rest = [
        body for body in _reach(sorted(library), library, strict=False) if body.where not in reached
    ]
    graph = _Body("the SavedModel's graph", meta.graph_def.node, library)
    rest += _reach_from([graph], strict=False)

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
        for op in _own_ops(body):
            if op not in allowed:
                raise UnsafeModelError(
                    f"the SavedModel's serving path uses op '{op}' ({body.where}), which has "
                    "no ONNX form here; it is refused before anything runs"
                )
    for body in on_load:
        for op in _own_ops(body):
            if op not in allowed and op not in STATE_OPS:
                raise UnsafeModelError(
                    f"loading the SavedModel would run op '{op}' (in {body.where}, a "
                    "resource's initialiser or a restore), which is neither a variable or "
                    f"table op nor one with an ONNX form; {_REFUSED}"
                )

    declared = signatures[signature]
    _check_declared_names(declared, signature, meta.graph_def)
    for name in served:
        _check_keys(declared, signature, objects.concrete_functions.get(name))
    return SignatureSpec(signature, sorted(declared.inputs), sorted(declared.outputs))


def _signature_functions(objects: Any, signature: str, library: Mapping[str, Any]) -> list[str]:
    """The concrete functions ``loaded.signatures[signature]`` runs: the root's
    ``signatures`` child (a signature map) and, in it, the child named ``signature``."""
    nodes = objects.nodes
    signature_map = _child(objects, 0, "signatures")
    if signature_map is None or nodes[signature_map].user_object.identifier != "signature_map":
        raise UnsafeModelError(
            "the SavedModel's object graph has no signature map, so the functions loading "
            f"would run for signature '{signature}' are unknown; {_REFUSED}"
        )
    node_id = _child(objects, signature_map, signature)
    if node_id is None:
        raise UnsafeModelError(
            f"signature '{signature}' is declared but is not in the SavedModel's object graph "
            f"(what loading would run); {_REFUSED}"
        )
    names = _concrete_functions_of(nodes[node_id])
    if not names:
        raise UnsafeModelError(
            f"signature '{signature}' in the SavedModel's object graph is not a function; "
            f"{_REFUSED}"
        )
    _require_in_library(names, library, f"signature '{signature}'")
    return names


def _child(objects: Any, node_id: int, local_name: str) -> int | None:
    for child in objects.nodes[node_id].children:
        if child.local_name == local_name and 0 <= child.node_id < len(objects.nodes):
            return child.node_id
    return None


def _concrete_functions_of(node: Any) -> list[str]:
    kind = node.WhichOneof("kind")
    if kind == "function":
        return list(node.function.concrete_functions)
    if kind == "bare_concrete_function":
        return [node.bare_concrete_function.concrete_function_name]
    return []


def _require_in_library(names: Iterable[str], library: Mapping[str, Any], owner: str) -> None:
    for name in names:
        if name not in library:
            raise UnsafeModelError(
                f"{owner} names function '{name}', which is not in the SavedModel's "
                f"function library; {_REFUSED}"
            )


def _functions_run_on_load(objects: Any, library: Mapping[str, Any]) -> list[str]:
    """The concrete functions loading itself calls: each resource's create / initialise /
    destroy functions and each saveable's save / restore functions."""
    node_ids: set[int] = set()
    for node in objects.nodes:
        if node.WhichOneof("kind") == "resource":
            node_ids.update(
                child.node_id for child in node.children if child.local_name in _RESOURCE_FUNCTIONS
            )
        for saveable in node.saveable_objects.values():
            node_ids.update((saveable.save_function, saveable.restore_function))
    names: set[str] = set()
    for node_id in node_ids:
        if 0 <= node_id < len(objects.nodes):
            names.update(_concrete_functions_of(objects.nodes[node_id]))
    _require_in_library(names, library, "the SavedModel's object graph")
    return sorted(names)


def _object_graph_functions(objects: Any, library: Mapping[str, Any]) -> list[str]:
    """Every function the object graph names: its nodes' functions, its concrete
    functions, and those captured tensors are read from."""
    names = set(objects.concrete_functions)
    for node in objects.nodes:
        names.update(_concrete_functions_of(node))
        if node.WhichOneof("kind") == "captured_tensor":
            names.add(node.captured_tensor.concrete_function)
    _require_in_library(names, library, "the SavedModel's object graph")
    return sorted(names)


def _reach(roots: Iterable[str], library: Mapping[str, Any], *, strict: bool) -> list[_Body]:
    """The library functions ``roots`` and every body they reach."""
    return _reach_from(
        [_Body(f"function '{name}'", library[name].node_def, library) for name in roots],
        strict=strict,
    )


def _reach_from(start: list[_Body], *, strict: bool) -> list[_Body]:
    """``start`` and every body reachable from it. ``strict``: a call to a function the
    library does not hold is a refusal (on what loading runs it would be resolved some
    other way, or fail)."""
    seen = {body.where for body in start}
    bodies, stack = [], list(start)
    while stack:
        body = stack.pop()
        bodies.append(body)
        for node in body.nodes:
            for reached in _reached_from_node(node, body, strict=strict):
                if reached.where not in seen:
                    seen.add(reached.where)
                    stack.append(reached)
    return bodies


def _reached_from_node(node: Any, body: _Body, *, strict: bool) -> Iterator[_Body]:
    names = list(_called(node))
    if node.op in body.library:  # a function called as an op
        names.append(node.op)
    for name in names:
        if name in body.library:
            where = f"function '{name}'" + (f" of {body.scope}" if body.scope else "")
            yield _Body(where, body.library[name].node_def, body.library, body.depth, body.scope)
        elif strict:
            raise UnsafeModelError(
                f"node '{node.name}' (in {body.where}) calls function '{name}', which is not "
                f"in the SavedModel's function library; {_REFUSED}"
            )
    if node.op in EMBEDDING_OPS:
        yield from _embedded(node, body)


def _embedded(node: Any, body: _Body) -> Iterator[_Body]:
    """The GraphDef a ``DatasetFromGraph`` node runs: a string constant of the same
    body, parsed (parsing runs nothing), with its own library in front of the outer one."""
    from tensorflow.core.framework import graph_pb2

    culprit = f"node '{node.name}' ({node.op}, in {body.where})"
    if body.depth >= MAX_EMBEDDED_DEPTH:
        raise UnsafeModelError(
            f"{culprit} embeds graphs more than {MAX_EMBEDDED_DEPTH} deep; {_REFUSED}"
        )
    source = node.input[0].lstrip("^").split(":")[0] if node.input else ""
    constant = next((n for n in body.nodes if n.name == source and n.op == "Const"), None)
    tensor = constant.attr["value"].tensor if constant is not None else None
    if tensor is None or len(tensor.string_val) != 1:
        raise UnsafeModelError(
            f"{culprit} builds a dataset from a graph computed while it runs, which cannot "
            f"be checked; {_REFUSED}"
        )
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(tensor.string_val[0])
    except Exception:  # protobuf's DecodeError
        raise UnsafeModelError(
            f"{culprit} embeds a graph that cannot be read; {_REFUSED}"
        ) from None
    library = {**body.library, **{f.signature.name: f for f in graph.library.function}}
    where = f"the dataset graph of node '{node.name}' in {body.where}"
    yield _Body(where, graph.node, library, body.depth + 1, where)
    for function in graph.library.function:  # every function it carries may run
        name = function.signature.name
        yield _Body(
            f"function '{name}' of {where}", function.node_def, library, body.depth + 1, where
        )


def _called(node: Any) -> Iterator[str]:
    """Names of the functions a NodeDef calls through any function-valued attribute,
    including those passed on to a called function in its own attributes."""
    yield from _functions_in(node.attr.values())


def _functions_in(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        functions = [value.func] if value.HasField("func") else []
        for function in [*functions, *value.list.func]:
            if function.name:
                yield function.name
            yield from _functions_in(function.attr.values())


def _own_ops(body: _Body) -> Iterator[str]:
    """The ops of ``body`` that are not calls of library functions (checked on their own)."""
    for node in body.nodes:
        if node.op not in body.library:
            yield node.op


def _refuse_denied(
    body: _Body, path: str, note: str = "", ignored: frozenset[str] = frozenset()
) -> None:
    for op in _own_ops(body):
        if op in DENIED_OPS and op not in ignored:
            raise UnsafeModelError(
                f"the SavedModel's {path} uses op '{op}' (in {body.where}{note}), which "
                f"reaches outside the model (files, processes or Python); {_REFUSED}"
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
                    f"describe what loading would run; {_REFUSED}"
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
                f"function in the object graph has {sorted(keys)}; {_REFUSED}"
            )
