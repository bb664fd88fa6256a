"""ONNX files written with a newer IR version than ONNX Runtime reads.

onnx 1.23's ``helper.make_model`` stamps IR 14 on every model; an ONNX Runtime
that reads fewer refuses the file with "Unsupported" and nothing else. The IR
version a model *needs* is the one its opsets came with (onnx's
``helper.VERSION_TABLE``): when that is within what the runtime reads, the model
is stamped with the runtime's newest IR version (nothing it uses can be newer
than its opsets); otherwise it is refused with what to do.
"""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto, helper

from folding.errors import ModelLoadError

DOMAINS = {"": 2, "ai.onnx": 2, "ai.onnx.ml": 3, "ai.onnx.training": 4}
"""Opset domain -> its column in ``onnx.helper.VERSION_TABLE`` rows
``(release, ir_version, ai.onnx, ai.onnx.ml, ai.onnx.training)``."""


def probe_model(ir_version: int = 8) -> onnx.ModelProto:
    """The smallest model a runtime can be asked to load: one Identity, opset 13."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    return model


@functools.cache
def runtime_ir_version() -> int:
    """The newest IR version the installed ONNX Runtime loads (asked of it: a
    one-node model at each version, newest first)."""
    import onnxruntime

    model = probe_model()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    for version in range(onnx.IR_VERSION, 7, -1):
        model.ir_version = version
        try:
            onnxruntime.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # ONNX Runtime's own kinds: this version is not read
            continue
        return version
    return 7


def needed_ir_version(model: onnx.ModelProto) -> int:
    """The oldest IR version whose onnx release had every opset ``model`` imports."""
    needed = 3
    for opset in model.opset_import:
        column = DOMAINS.get(opset.domain)
        if column is None:
            continue  # a vendor domain (com.microsoft, ...): the runtime's own concern
        versions = [row[1] for row in helper.VERSION_TABLE if row[column] >= opset.version]
        needed = max(needed, min(versions, default=onnx.IR_VERSION))
    return needed


def readable_by_runtime(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """``model`` (changed in place) with an IR version ONNX Runtime reads, or
    ModelLoadError saying what to do."""
    readable = runtime_ir_version()
    if model.ir_version <= readable:
        return model
    needed = needed_ir_version(model)
    if needed > readable:
        import onnxruntime

        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
        raise ModelLoadError(
            f"'{label}' is ONNX IR version {model.ir_version} with opsets {opsets}, which "
            f"need IR version {needed}; ONNX Runtime {onnxruntime.__version__} reads IR "
            f"versions up to {readable}: export it with an older opset (e.g. "
            "torch.onnx.export(..., opset_version=17)) or install a newer onnxruntime"
        )
    model.ir_version = readable
    return model
