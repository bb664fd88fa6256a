"""The only module that touches ONNX Runtime: providers, sessions, run()."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from folding.fusions import ALWAYS_DISABLED_OPTIMIZERS, UNFOLDED_DISABLED_OPTIMIZERS
from folding.onnx_external import refuse_external_file
from service.errors import InvalidInput

logger = logging.getLogger("foldserve.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class DeviceUnavailable(RuntimeError):
    """``device=cuda`` was asked for and CUDA cannot be used."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for a dynamic axis


class Session:
    """One ONNX Runtime session and the signature it serves."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self.provider = session.get_providers()[0]
        self.inputs = [_meta(arg) for arg in session.get_inputs()]
        self.outputs = [_meta(arg) for arg in session.get_outputs()]
        self.output_names = [meta.name for meta in self.outputs]

    def run(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[Any]:
        try:
            return self._session.run(outputs or self.output_names, feed)
        except InvalidArgument as error:  # inputs that pass the signature but not the graph
            message = str(error).strip().splitlines()[0][:300]
            raise InvalidInput(f"the model rejected these inputs: {message}") from None


def _meta(arg: Any) -> TensorMeta:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"tensor '{arg.name}' has unsupported type {arg.type}")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    return TensorMeta(arg.name, np.dtype(dtype), shape)


class Runtime:
    """Chooses the execution provider once and builds sessions with it."""

    def __init__(
        self,
        device: str = "auto",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        spinning: bool = False,
    ) -> None:
        self.spinning = spinning
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.provider = self._choose_provider(device)

    def _choose_provider(self, device: str) -> str:
        if device == "cpu":
            logger.info("execution provider: %s (FOLDSERVE_DEVICE=cpu)", CPU)
            return CPU
        usable, reason = cuda_usable()
        if usable:
            logger.info("execution provider: %s", CUDA)
            return CUDA
        if device == "cuda":
            raise DeviceUnavailable(f"FOLDSERVE_DEVICE=cuda but CUDA cannot be used: {reason}")
        logger.warning("execution provider: %s (CUDA not usable: %s)", CPU, reason)
        return CPU

    def _options(self) -> onnxruntime.SessionOptions:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def load(self, path: Path, *, unfolded: bool = False) -> Session:
        """A session on ``path``. ``unfolded``: with ONNX Runtime's BatchNormalization
        fusions disabled, so the unfolded model computes every BN it holds
        (``folding.fusions``); every session disables the fusions known to be wrong."""
        providers = [CUDA, CPU] if self.provider == CUDA else [CPU]
        disabled = UNFOLDED_DISABLED_OPTIMIZERS if unfolded else ALWAYS_DISABLED_OPTIMIZERS
        refuse_external_file(path, path.name)  # never resolve another file's bytes
        session = onnxruntime.InferenceSession(
            str(path), self._options(), providers=providers, disabled_optimizers=list(disabled)
        )
        return Session(session)


def cuda_usable() -> tuple[bool, str]:
    """Whether ONNX Runtime can really create a CUDA session here, and if not why."""
    if CUDA not in onnxruntime.get_available_providers():
        return False, "this ONNX Runtime build has no CUDA provider"
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    onnxruntime.set_default_logger_severity(4)  # the failed CUDA load logs at error level
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=[CUDA, CPU]
        )
    except Exception as error:  # ONNX Runtime raises its own, unexported, kinds
        return False, str(error).splitlines()[0]
    finally:
        onnxruntime.set_default_logger_severity(3)
    if session.get_providers()[0] != CUDA:
        return False, "the CUDA provider failed to initialise (no GPU, or CUDA/cuDNN missing)"
    return True, ""
