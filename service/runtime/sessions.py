"""The only module that touches ONNX Runtime: providers, sessions, run()."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from folding.sources.onnx.external import refuse_external_file
from folding.verify.fusions import ALWAYS_DISABLED_OPTIMIZERS, UNFOLDED_DISABLED_OPTIMIZERS
from service._compat import ort_invalid_argument
from service.errors import InvalidInput, Unprocessable
from service.runtime import cost

logger = logging.getLogger("foldserve.runtime")
InvalidArgument = ort_invalid_argument()

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ESTIMATES_KEPT = 64
"""Memory estimates remembered (by file identity), so a file is estimated once."""

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


class RunStopped(Exception):
    """A run ended by its ``RunOptions.terminate`` flag (the caller knows why it set it)."""


class Session:
    """One ONNX Runtime session and the signature it serves."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self.provider = session.get_providers()[0]
        self.inputs = [_meta(arg) for arg in session.get_inputs()]
        self.outputs = [_meta(arg) for arg in session.get_outputs()]
        self.output_names = [meta.name for meta in self.outputs]

    @staticmethod
    def run_options() -> onnxruntime.RunOptions:
        """Options for one run; setting their ``terminate`` from any thread stops it."""
        options = onnxruntime.RunOptions()
        options.log_severity_level = 4  # a failed run is the caller's answer, not a log line
        return options

    def run(
        self,
        feed: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        *,
        options: onnxruntime.RunOptions | None = None,
        label: str = "the model",
    ) -> list[Any]:
        """The outputs for ``feed``. Whatever ONNX Runtime raises becomes a 4xx naming
        ``label`` and the reason: InvalidInput (400) for inputs the graph rejects,
        Unprocessable (422) for a run that failed on them (an allocation too large for
        the machine, a shape that cannot be), RunStopped when ``options.terminate``."""
        try:
            return self._session.run(outputs or self.output_names, feed, options)
        except InvalidArgument as error:  # inputs that pass the signature but not the graph
            raise InvalidInput(f"{label} rejected these inputs: {reason(error)}") from None
        except MemoryError:
            raise Unprocessable(
                f"{label} needs more memory for these inputs than there is"
            ) from None
        except Exception as error:  # ONNX Runtime's Fail, RuntimeException, EPFail, ...
            if options is not None and options.terminate:
                raise RunStopped(reason(error)) from None
            why = reason(error)
            if "bad_alloc" in why or "allocate memory" in why:
                why = f"it could not allocate the memory they need ({why})"
            raise Unprocessable(f"{label} failed on these inputs: {why}") from None


_SOURCE_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+\s+(?:[\w:*&<>, ]+\([^()]*\)\s+)?")
_STATUS_PREFIX = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")


def reason(error: BaseException) -> str:
    """ONNX Runtime's message without its source locations and status prefixes:
    "ConstantOfShape node: Failed to allocate memory for requested buffer of size 4e11"."""
    text = " ".join(str(error).split())
    text = _SOURCE_LOCATION.sub("", _STATUS_PREFIX.sub("", text))
    running = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if running:
        op_type, node, message = running.groups()
        named = f" '{node}'" if node else ""
        text = f"{op_type} node{named}: {_STATUS_PREFIX.sub('', message)}"
    return text[:300] or type(error).__name__


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
        memory_limit_mb: int = 0,
    ) -> None:
        """``memory_limit_mb``: most memory one session may hold (0: no limit)."""
        self.spinning = spinning
        self.memory_limit_bytes = memory_limit_mb * 1024 * 1024
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.provider = self._choose_provider(device)
        self._estimates: dict[tuple[int, ...], cost.Footprint] = {}
        self._estimates_lock = threading.Lock()

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
        # Without the arena a run's memory goes back when the run ends; with it, every
        # session keeps its largest run's tensors for good (a 500 MB output: +500 MB for
        # the process's life). Run time of the demo MLP is the same either way (7.8 us).
        options.enable_cpu_mem_arena = False
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def load(self, path: Path, *, unfolded: bool = False) -> Session:
        """A session on ``path``. ``unfolded``: with ONNX Runtime's BatchNormalization
        fusions disabled, so the unfolded model computes every BN it holds
        (``folding.verify.fusions``); every session disables the fusions known to be wrong.
        Unprocessable (422) when the session would hold, or holds, more memory than the
        limit: checked on the graph before the session is built and on the resident
        memory it added once it is."""
        self.check_memory(path)
        providers = [CUDA, CPU] if self.provider == CUDA else [CPU]
        disabled = UNFOLDED_DISABLED_OPTIMIZERS if unfolded else ALWAYS_DISABLED_OPTIMIZERS
        refuse_external_file(path, path.name)  # never resolve another file's bytes
        before = cost.resident_bytes()
        session = onnxruntime.InferenceSession(
            str(path), self._options(), providers=providers, disabled_optimizers=list(disabled)
        )
        after = cost.resident_bytes()
        if self.memory_limit_bytes and before is not None and after is not None:
            grown = after - before
            if grown > self.memory_limit_bytes:
                del session
                raise Unprocessable(
                    f"building the model's session took {cost.megabytes(grown)} of memory; "
                    f"{self._limit_text()}"
                )
        return Session(session)

    def check_memory(self, path: Path) -> None:
        """Unprocessable (422) when the graph of ``path`` shows that its session would
        need more memory than the limit: constants (with those constant folding computes
        ahead) and the tensors of known shape a run computes (``cost.footprint``)."""
        if not self.memory_limit_bytes:
            return
        estimate = self._footprint(path)
        if estimate.total_bytes > self.memory_limit_bytes:
            raise Unprocessable(
                f"the model would need about {cost.megabytes(estimate.total_bytes)} of memory "
                f"({cost.megabytes(estimate.constant_bytes)} of constants, "
                f"{cost.megabytes(estimate.computed_bytes)} computed on every run; largest "
                f"tensor: {estimate.largest}, {cost.megabytes(estimate.largest_bytes)}); "
                f"{self._limit_text()}"
            )

    def _footprint(self, path: Path) -> cost.Footprint:
        """``cost.footprint(path)``, worked out once per file: an upload checks its files
        before they are committed, and loading the committed (renamed, so the same inode)
        file checks it again; for ResNet50 each estimate reads and shape-infers 100 MB."""
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._estimates_lock:
            known = self._estimates.get(key)
        if known is None:
            known = cost.footprint(path)
            with self._estimates_lock:
                self._estimates[key] = known
                while len(self._estimates) > ESTIMATES_KEPT:
                    self._estimates.pop(next(iter(self._estimates)))
        return known

    def _limit_text(self) -> str:
        limit_mb = self.memory_limit_bytes // (1024 * 1024)
        return f"the limit is {limit_mb} MiB per model (FOLDSERVE_MODEL_MEMORY_LIMIT_MB)"


def cuda_usable() -> tuple[bool, str]:
    """Whether ONNX Runtime can really create a CUDA session here, and if not why."""
    if CUDA not in onnxruntime.get_available_providers():
        return False, "this ONNX Runtime build has no CUDA provider"
    from folding.sources.onnx.ir import probe_model

    model = probe_model(ir_version=8)
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
