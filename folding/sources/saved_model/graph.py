"""The NodeDef bodies of a SavedModel that run together, and every body a set of
functions reaches: through function-valued attributes of any name, functions
called as ops, and graphs embedded as serialized ``GraphDef`` constants in
``DatasetFromGraph`` (with their own function libraries, recursively).
Everything here reads protobuf messages; nothing runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from folding.errors import UnsafeModelError

MAX_EMBEDDED_DEPTH = 4
"""How deeply ``DatasetFromGraph`` graphs may nest inside each other."""

EMBEDDING_OPS = frozenset({"DatasetFromGraph"})
"""Ops whose ``graph_def`` input is a serialized GraphDef that runs when they do."""

REFUSED = "it is refused and nothing in it was run"


@dataclass(frozen=True)
class Body:
    """NodeDefs that run together - a library function, or a graph embedded in a node -
    and the library their calls resolve in."""

    where: str
    nodes: Sequence[Any]
    library: Mapping[str, Any]
    depth: int = 0
    scope: str = ""  # the embedded graph this body belongs to, if any


def reach(roots: Iterable[str], library: Mapping[str, Any], *, strict: bool) -> list[Body]:
    """The library functions ``roots`` and every body they reach."""
    return reach_from(
        [Body(f"function '{name}'", library[name].node_def, library) for name in roots],
        strict=strict,
    )


def reach_from(start: list[Body], *, strict: bool) -> list[Body]:
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


def _reached_from_node(node: Any, body: Body, *, strict: bool) -> Iterator[Body]:
    names = list(_called(node))
    if node.op in body.library:  # a function called as an op
        names.append(node.op)
    for name in names:
        if name in body.library:
            where = f"function '{name}'" + (f" of {body.scope}" if body.scope else "")
            yield Body(where, body.library[name].node_def, body.library, body.depth, body.scope)
        elif strict:
            raise UnsafeModelError(
                f"node '{node.name}' (in {body.where}) calls function '{name}', which is not "
                f"in the SavedModel's function library; {REFUSED}"
            )
    if node.op in EMBEDDING_OPS:
        yield from _embedded(node, body)


def _embedded(node: Any, body: Body) -> Iterator[Body]:
    """The GraphDef a ``DatasetFromGraph`` node runs: a string constant of the same
    body, parsed (parsing runs nothing), with its own library in front of the outer one."""
    from tensorflow.core.framework import graph_pb2

    culprit = f"node '{node.name}' ({node.op}, in {body.where})"
    if body.depth >= MAX_EMBEDDED_DEPTH:
        raise UnsafeModelError(
            f"{culprit} embeds graphs more than {MAX_EMBEDDED_DEPTH} deep; {REFUSED}"
        )
    source = node.input[0].lstrip("^").split(":")[0] if node.input else ""
    constant = next((n for n in body.nodes if n.name == source and n.op == "Const"), None)
    tensor = constant.attr["value"].tensor if constant is not None else None
    if tensor is None or len(tensor.string_val) != 1:
        raise UnsafeModelError(
            f"{culprit} builds a dataset from a graph computed while it runs, which cannot "
            f"be checked; {REFUSED}"
        )
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(tensor.string_val[0])
    except Exception:  # protobuf's DecodeError
        raise UnsafeModelError(f"{culprit} embeds a graph that cannot be read; {REFUSED}") from None
    library = {**body.library, **{f.signature.name: f for f in graph.library.function}}
    where = f"the dataset graph of node '{node.name}' in {body.where}"
    yield Body(where, graph.node, library, body.depth + 1, where)
    for function in graph.library.function:  # every function it carries may run
        name = function.signature.name
        yield Body(
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


def own_ops(body: Body) -> Iterator[str]:
    """The ops of ``body`` that are not calls of library functions (checked on their own)."""
    for node in body.nodes:
        if node.op not in body.library:
            yield node.op
