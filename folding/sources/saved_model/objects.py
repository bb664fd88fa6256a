"""The functions a SavedModel's **object graph** says loading will call, found the way
``tf.saved_model.load`` finds them: the serving signature's concrete functions,
what loading runs by itself (resources, saveables), and every function the object
graph names. A name that resolves to nothing is a refusal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from folding.errors import UnsafeModelError
from folding.sources.saved_model.graph import REFUSED

_RESOURCE_FUNCTIONS = ("_create_resource", "_initialize", "_destroy_resource")


def signature_functions(objects: Any, signature: str, library: Mapping[str, Any]) -> list[str]:
    """The concrete functions ``loaded.signatures[signature]`` runs: the root's
    ``signatures`` child (a signature map) and, in it, the child named ``signature``."""
    nodes = objects.nodes
    signature_map = _child(objects, 0, "signatures")
    if signature_map is None or nodes[signature_map].user_object.identifier != "signature_map":
        raise UnsafeModelError(
            "the SavedModel's object graph has no signature map, so the functions loading "
            f"would run for signature '{signature}' are unknown; {REFUSED}"
        )
    node_id = _child(objects, signature_map, signature)
    if node_id is None:
        raise UnsafeModelError(
            f"signature '{signature}' is declared but is not in the SavedModel's object graph "
            f"(what loading would run); {REFUSED}"
        )
    names = _concrete_functions_of(nodes[node_id])
    if not names:
        raise UnsafeModelError(
            f"signature '{signature}' in the SavedModel's object graph is not a function; {REFUSED}"
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
                f"function library; {REFUSED}"
            )


def functions_run_on_load(objects: Any, library: Mapping[str, Any]) -> list[str]:
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


def object_graph_functions(objects: Any, library: Mapping[str, Any]) -> list[str]:
    """Every function the object graph names: its nodes' functions, its concrete
    functions, and those captured tensors are read from."""
    names = set(objects.concrete_functions)
    for node in objects.nodes:
        names.update(_concrete_functions_of(node))
        if node.WhichOneof("kind") == "captured_tensor":
            names.add(node.captured_tensor.concrete_function)
    _require_in_library(names, library, "the SavedModel's object graph")
    return sorted(names)
