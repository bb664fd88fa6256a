"""ONNX tensors whose bytes live in other files ("external data"), found wherever a
model can hold a tensor, and either refused or read strictly from the model's folder.

A tensor with ``data_location: EXTERNAL`` names a ``location`` that ONNX Runtime (and
``onnx.load``) resolve against the model file's folder - or, for a model given as bytes,
against the process's working directory. An uploaded model is one file, so any such
reference in it is refused (``refuse_external_data``), naming the tensor. A model the
operator names on the command line may keep its weights beside it; those are read by
``inline_external_data`` only from regular files inside the model's own folder (no
absolute path, no ``..``, no link leading out), and written into the model, so every
session is then built from bytes that need no other file.

Tensors are found in: initializers, sparse initializers (values and indices), every
node's tensor and sparse-tensor attributes (a ``Constant``'s ``value`` /
``sparse_value`` among them), the graphs held in attributes (``If`` / ``Loop`` /
``Scan`` bodies, recursively), the model's functions, and its training graphs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx

from folding.errors import ModelLoadError, UnsafeModelError

MAX_EXTERNAL_BYTES = 2 * 1024**3


def tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor ``model`` holds, each with words saying where it is."""
    yield from _graph_tensors(model.graph, "the graph")
    for function in model.functions:
        yield from _nodes_tensors(function.node, f"function '{function.name}'")
    for index, training in enumerate(model.training_info):
        yield from _graph_tensors(training.initialization, f"training graph {index}")
        yield from _graph_tensors(training.algorithm, f"training graph {index}")


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for tensor in graph.initializer:
        yield f"initializer '{tensor.name}' (in {where})", tensor
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        yield f"sparse initializer '{name}' (in {where})", sparse.values
        yield f"sparse initializer '{name}' indices (in {where})", sparse.indices
    yield from _nodes_tensors(graph.node, where)


def _nodes_tensors(nodes, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in nodes:
        label = f"node '{node.name or (node.output[0] if node.output else '')}'"
        for attribute in node.attribute:
            culprit = f"attribute '{attribute.name}' of {node.op_type} {label} (in {where})"
            if attribute.HasField("t"):
                yield culprit, attribute.t
            for tensor in attribute.tensors:
                yield culprit, tensor
            sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
            for tensor in [*sparse, *attribute.sparse_tensors]:
                yield f"sparse {culprit}", tensor.values
                yield f"sparse {culprit} indices", tensor.indices
            inner = f"the {attribute.name} graph of {node.op_type} {label} (in {where})"
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g, inner)
            for graph in attribute.graphs:
                yield from _graph_tensors(graph, inner)


def external(model: onnx.ModelProto) -> list[tuple[str, onnx.TensorProto]]:
    """The tensors of ``model`` whose bytes are in another file."""
    return [
        (culprit, tensor)
        for culprit, tensor in tensors(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data)
    ]


def location(tensor: onnx.TensorProto) -> str:
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


UPLOAD_HINT = (
    "upload one self-contained file: torch.onnx.export(..., external_data=False), or "
    "onnx.save(onnx.load(path), out_path, save_as_external_data=False)"
)


def refuse_external_data(model: onnx.ModelProto, label: str, hint: str = UPLOAD_HINT) -> None:
    """Refuse a model any of whose tensors keeps its bytes in another file."""
    found = external(model)
    if found:
        culprit, tensor = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UnsafeModelError(
            f"'{label}': {culprit} keeps its data in an external file "
            f"({location(tensor)!r}){more}; {hint}"
        )


def inline_external_data(model: onnx.ModelProto, path: Path, label: str) -> None:
    """Read every external tensor of ``model`` (loaded from ``path``) from a regular file
    inside ``path``'s folder into the tensor itself."""
    folder = Path(path).resolve().parent
    total = 0
    for culprit, tensor in external(model):
        entries = {entry.key: entry.value for entry in tensor.external_data}
        source = _inside(folder, entries.get("location", ""), culprit, label)
        try:
            offset = int(entries.get("offset") or 0)
            length = int(entries["length"]) if entries.get("length") else None
        except ValueError:
            raise ModelLoadError(
                f"'{label}': {culprit} has an unreadable external offset or length"
            ) from None
        size = source.stat().st_size
        if offset < 0 or offset > size or (length is not None and not 0 <= length <= size - offset):
            raise ModelLoadError(
                f"'{label}': {culprit} reads bytes {offset}..{offset + (length or 0)} of "
                f"{source.name}, which has {size}"
            )
        length = size - offset if length is None else length
        total += length
        if total > MAX_EXTERNAL_BYTES:
            raise ModelLoadError(
                f"'{label}': its external data is larger than {MAX_EXTERNAL_BYTES} bytes"
            )
        with source.open("rb") as stream:
            stream.seek(offset)
            tensor.raw_data = stream.read(length)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _inside(folder: Path, name: str, culprit: str, label: str) -> Path:
    """``name`` as a regular file inside ``folder``, or a refusal."""
    pure = Path(name)
    if (
        not name
        or "\\" in name
        or "\0" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or os.path.splitdrive(name)[0]
    ):
        raise UnsafeModelError(
            f"'{label}': {culprit} keeps its data in {name!r}, which is not a file beside it "
            "(inside the model's folder)"
        )
    candidate = folder / pure
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModelLoadError(
            f"'{label}': {culprit} keeps its data in {name!r}, which does not exist beside it"
        ) from None
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        raise UnsafeModelError(
            f"'{label}': {culprit} keeps its data in {name!r}, which leads outside the "
            "model's folder or is not a regular file"
        )
    return resolved


def refuse_external_file(path: Path, label: str) -> None:
    """Refuse the ONNX file ``path`` if any tensor in it refers to another file (what
    builds a session from a path calls first)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelLoadError(f"'{label}' is not a valid ONNX model: {first}") from None
    refuse_external_data(model, label, "no session reads another file")
