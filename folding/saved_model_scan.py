"""Read a SavedModel's ``saved_model.pb`` and refuse one whose graph reaches outside.

Nothing in a SavedModel runs before this check. It parses the protobuf
(TensorFlow's ``saved_model_pb2``; parsing runs nothing) and walks the function
library:

* **TF2 SavedModels only** (an object graph): a TF1 SavedModel is restored by
  running ops its own graph names (``saver_def``), which cannot be checked.
* **The serving path** is every function reachable from the chosen signature's
  output nodes (through ``f`` / ``then_branch`` / ``body`` / ... function
  attributes). Each of its ops must be on the **allowlist**: an op tf2onnx can
  convert to ONNX (a model that runs other ops could not be exported anyway)
  or graph plumbing (calls, variable reads, control flow); and none may be on
  the deny list.
* **Everything that loading can run** (the object graph's functions: signatures,
  restored methods, resource initialisers, and what they call) may hold no
  denied op: Python callbacks, file-system access, processes, checkpoint I/O,
  summary writers, debug taps, readers and datasets (``DENIED_OPS``).
* **What loading runs by itself** (each resource's create / initialise / destroy
  functions and each saveable's save / restore functions, and what they call)
  is held to the same allowlist as the serving path, plus variable and
  in-memory table ops (``STATE_OPS``): a deny list alone cannot name every op
  that reaches outside.
* The checkpoint save/restore functions TensorFlow itself writes beside the
  model (reached only from the graph's ``saver_def`` nodes, which a TF2 load
  never runs) may hold checkpoint ops, and nothing else denied.

A refusal names the op and the function it is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError

SAVED_MODEL_FILE = "saved_model.pb"
MAX_SAVED_MODEL_PB_BYTES = 512 * 1024**2

CHECKPOINT_OPS = frozenset(
    {
        "Save",
        "SaveV2",
        "SaveSlices",
        "Restore",
        "RestoreV2",
        "RestoreSlice",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "ShardedFilespec",
    }
)
"""Checkpoint I/O: only in TensorFlow's own save/restore functions, never on a load path."""

DENIED_OPS = frozenset(
    {
        # Python callbacks: code outside the graph
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        # the file system
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "MatchingFilesDataset",
        "ImmutableConst",  # memory-maps a file named by an attribute
        "LoadAndRemapMatrix",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
        "ParseExampleDataset",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "IdentityReader",
        "IdentityReaderV2",
        "LMDBReader",
        "TextLineReader",
        "TextLineReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "WholeFileReader",
        "WholeFileReaderV2",
        "ReaderRead",
        "ReaderReadV2",
        "ReaderReadUpTo",
        "ReaderReadUpToV2",
        "TextLineDataset",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "LMDBDataset",
        "SqlDataset",
        "CSVDataset",
        "CSVDatasetV2",
        "SnapshotDataset",
        "SnapshotDatasetV2",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "CacheDataset",
        "CacheDatasetV2",
        "DatasetToTFRecord",
        # summaries and printing, which write to files or streams
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        "SummaryWriter",
        "WriteSummary",
        "WriteScalarSummary",
        "WriteHistogramSummary",
        "WriteImageSummary",
        "WriteAudioSummary",
        "WriteGraphSummary",
        "WriteRawProtoSummary",
        "ImportEvent",
        "FlushSummaryWriter",
        "CloseSummaryWriter",
        "Print",
        "PrintV2",
        # debug taps (they can send tensors to files or gRPC endpoints)
        "DebugIdentity",
        "DebugIdentityV2",
        "DebugIdentityV3",
        "DebugNanCount",
        "DebugNumericSummary",
        "DebugNumericSummaryV2",
        "Copy",
        "CopyHost",
        # other processes and devices: RPC, collectives, send/receive
        "Rpc",
        "TryRpc",
        "RpcClient",
        "RpcCall",
        "RpcServer",
        "RpcServerStart",
        "RpcServerRegister",
        "_Send",
        "_Recv",
        "_HostSend",
        "_HostRecv",
        "CollectiveReduce",
        "CollectiveGather",
        "CollectiveBcastSend",
        "CollectiveBcastRecv",
        "SendTPUEmbeddingGradients",
        "Send",
        "Recv",
        "RemoteCall",
        "RpcCheckStatus",
        "RpcGetValue",
        "CollectiveReduceV2",
        "CollectiveReduceV3",
        "CollectiveGatherV2",
        "CollectiveBcastSendV2",
        "CollectiveBcastRecvV2",
        "CollectiveAllToAllV2",
        "CollectiveAllToAllV3",
        "CollectiveReduceScatterV2",
        "CollectiveInitializeCommunicator",
        "CollectivePermute",
        "DataServiceDataset",
        "DataServiceDatasetV2",
        "DataServiceDatasetV3",
        "DataServiceDatasetV4",
        "RegisterDataset",
        "RegisterDatasetV2",
        # more of the file system: experimental readers and writers, snapshots, settings
        "ExperimentalCSVDataset",
        "ExperimentalLMDBDataset",
        "ExperimentalSqlDataset",
        "ExperimentalMatchingFilesDataset",
        "ExperimentalParseExampleDataset",
        "ExperimentalDatasetToTFRecord",
        "DistributedSave",
        "SnapshotDatasetReader",
        "SnapshotNestedDatasetReader",
        "SnapshotChunkDataset",
        "ListSnapshotChunksDataset",
        "RecordInput",
        "CalibrationStatisticsSaver",
        "DTensorRestoreV2",
        "FileSystemSetConfiguration",
        "StatsAggregatorSetSummaryWriter",
        "DecodeProtoV2",  # descriptor_source may name a file
        "EncodeProto",
        *CHECKPOINT_OPS,
    }
)
"""Refused on every path a load or a prediction can run."""

PLUMBING_OPS = frozenset(
    {
        "Placeholder",
        "PlaceholderWithDefault",
        "Const",
        "Identity",
        "IdentityN",
        "NoOp",
        "PartitionedCall",
        "StatefulPartitionedCall",
        "ReadVariableOp",
        "ResourceGather",  # a lookup in a variable (embeddings): frozen into GatherV2
        "ResourceGatherNd",  # frozen into GatherNd
        "VarHandleOp",
        "VarIsInitializedOp",
        "If",
        "StatelessIf",
        "While",
        "StatelessWhile",
        "Case",
        "StatelessCase",
        "StopGradient",
        "PreventGradient",
        "Enter",
        "Exit",
        "Merge",
        "Switch",
        "NextIteration",
        "LoopCond",
    }
)
"""Calls, variable reads and lookups, control flow: frozen or inlined before conversion."""

STATE_OPS = frozenset(
    {
        "AssignVariableOp",
        "AssignAddVariableOp",
        "AssignSubVariableOp",
        "DestroyResourceOp",
        "HashTableV2",
        "MutableHashTableV2",
        "MutableHashTableOfTensorsV2",
        "MutableDenseHashTableV2",
        "InitializeTableV2",
        "LookupTableImportV2",
        "LookupTableExportV2",
        "LookupTableFindV2",
        "LookupTableInsertV2",
        "LookupTableSizeV2",
    }
)
"""Variables and in-memory lookup tables: what a resource's initialiser may do."""

_RESOURCE_FUNCTIONS = ("_create_resource", "_initialize", "_destroy_resource")

_FUNCTION_ATTRS = ("f", "then_branch", "else_branch", "cond", "body", "branches")


@dataclass(frozen=True)
class SignatureSpec:
    """A serving signature as the protobuf declares it: input and output keys, sorted."""

    name: str
    inputs: list[str]
    outputs: list[str]


def convertible_ops() -> frozenset[str]:
    """Every TensorFlow op tf2onnx has a converter for, plus graph plumbing."""
    import tf2onnx.onnx_opset  # noqa: F401 - registers the handlers
    from tf2onnx.handler import tf_op

    import folding.tf2onnx_convert  # noqa: F401 - registers this project's (Erfc)

    names: set[str] = set()
    for versions in tf_op.get_opsets().values():
        for handlers in versions:
            names.update(handlers)
    return frozenset(names) | PLUMBING_OPS


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
    declared = signatures[signature]
    library = {function.signature.name: function for function in meta.graph_def.library.function}
    main_nodes = {node.name: node for node in meta.graph_def.node}

    serving_roots = set()
    for tensor in declared.outputs.values():
        node = main_nodes.get(tensor.name.split(":")[0].lstrip("^"))
        if node is not None:
            serving_roots.update(_called(node))
            _check_op(node.op, "the serving signature's graph", serving=True)
    serving = _reachable(serving_roots, library)
    allowed = convertible_ops()
    for function_name in sorted(serving):
        for op in _ops(library[function_name]):
            if op not in library:  # a function called as an op is checked on its own
                _check_op(op, f"function '{function_name}'", serving=True, allowed=allowed)

    run_on_load = _reachable(_functions_run_on_load(meta.object_graph_def), library)
    for function_name in sorted(run_on_load):
        for op in _ops(library[function_name]):
            if op not in library and op not in STATE_OPS:
                _check_op(op, f"function '{function_name}'", allowed=allowed, on_load=True)

    loadable = _reachable(set(meta.object_graph_def.concrete_functions), library)
    for function_name in sorted(loadable | serving):
        for op in _ops(library[function_name]):
            _check_op(op, f"function '{function_name}'")
    for function_name in sorted(set(library) - loadable - serving):
        for op in _ops(library[function_name]):
            if op not in CHECKPOINT_OPS:
                _check_op(op, f"function '{function_name}'")
    for node in meta.graph_def.node:
        if node.op not in CHECKPOINT_OPS:
            _check_op(node.op, "the SavedModel's graph")
    return SignatureSpec(signature, sorted(declared.inputs), sorted(declared.outputs))


def _functions_run_on_load(objects: Any) -> set[str]:
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
        if not 0 <= node_id < len(objects.nodes):
            continue
        node = objects.nodes[node_id]
        if node.WhichOneof("kind") == "function":
            names.update(node.function.concrete_functions)
        elif node.WhichOneof("kind") == "bare_concrete_function":
            names.add(node.bare_concrete_function.concrete_function_name)
    return names


def _check_op(
    op: str,
    where: str,
    *,
    serving: bool = False,
    allowed: frozenset[str] | None = None,
    on_load: bool = False,
) -> None:
    if op in DENIED_OPS:
        path = "serving path" if serving else "load path"
        raise UnsafeModelError(
            f"the SavedModel's {path} uses op '{op}' (in {where}), which reaches outside the "
            "model (files, processes or Python); it is refused and nothing in it was run"
        )
    if on_load and allowed is not None and op not in allowed:
        raise UnsafeModelError(
            f"loading the SavedModel would run op '{op}' (in {where}, a resource's "
            "initialiser), which is neither a variable or table op nor one with an ONNX form; "
            "it is refused and nothing in it was run"
        )
    if allowed is not None and op not in allowed:
        raise UnsafeModelError(
            f"the SavedModel's serving path uses op '{op}' ({where}), which has no ONNX "
            "form here; it is refused before anything runs"
        )


def _called(node: Any) -> Iterator[str]:
    """Names of the functions a NodeDef calls through its attributes."""
    for key, value in node.attr.items():
        if key in _FUNCTION_ATTRS or value.HasField("func") or value.list.func:
            if value.HasField("func") and value.func.name:
                yield value.func.name
            for function in value.list.func:
                yield function.name


def _ops(function: Any) -> Iterator[str]:
    for node in function.node_def:
        yield node.op


def _reachable(roots: Iterable[str], library: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    stack = [name for name in roots if name in library]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in library[name].node_def:
            stack.extend(c for c in _called(node) if c in library and c not in seen)
            if node.op in library and node.op not in seen:  # a function called as an op
                stack.append(node.op)
    return seen
