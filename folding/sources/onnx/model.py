"""An ONNX model in memory with its serialised bytes, and what it is made of.

Shared by every path that writes ONNX (the Keras exporters, the ONNX and
SavedModel folds); imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx


@dataclass(frozen=True)
class OnnxModel:
    """An exported model and its serialised bytes (serialising a large model takes
    longer than running it: it is done once)."""

    proto: onnx.ModelProto
    data: bytes


def summarize(model: OnnxModel) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for node in model.proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {"nodes": len(model.proto.graph.node), "bytes": len(model.data), "op_counts": counts}
