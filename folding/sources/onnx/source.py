"""An ONNX model as a source: folded on its own graph (``folding.onnx_graph``); the
unfolded variant is the original itself.

The reference is the original run by ONNX Runtime with every graph optimisation off
(or, for a graph converted from a SavedModel, the signature it came from);
``unfolded.onnx`` runs with the BN fusions off, ``model.onnx`` as served. Fold, export
and total errors mean what they mean for Keras models, with the reference in Keras's
place. Imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from folding.errors import ModelLoadError
from folding.options import FoldOptions, VerifyOptions
from folding.sources import Folded, Source, stage_timings
from folding.sources.onnx.external import inline_external_data, refuse_external_data
from folding.sources.onnx.ir import readable_by_runtime
from folding.sources.onnx.model import OnnxModel
from folding.specs import InputSpec, StageCallback
from folding.verify.probes import DEFAULT_SAMPLES, DYNAMIC_DIM_PROBE, load_user_probes
from folding.verify.verdict import half_precision

MAX_ONNX_BYTES = 2 * 1024**3
Reference = Callable[[list[np.ndarray]], list[np.ndarray]]


def load_onnx(path: Path, label: str | None = None, external_data: bool = False) -> onnx.ModelProto:
    """An ONNX model file, checked.

    Tensors in external files (what ``torch.onnx.export`` writes by default, as
    ``model.onnx.data``) are read only with ``external_data`` (the command line,
    where the operator names a file on their own disk), and only from regular files
    inside the model's folder; an upload is one file, so any tensor with external
    data is refused (``folding.sources.onnx.external``)."""
    label = label or path.name
    if not path.is_file():
        raise ModelLoadError(f"no such file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"'{label}' is not a valid ONNX model: {error}") from None
    if external_data:
        inline_external_data(model, path, label)
    else:
        refuse_external_data(model, label)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        first = (str(error).strip().splitlines() or ["invalid"])[0]
        raise ModelLoadError(f"'{label}' is not a valid ONNX model: {first}") from None
    return readable_by_runtime(model, label)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    specs = []
    for index, value in enumerate(model.graph.input):
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
            for dim in tensor_type.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        specs.append(InputSpec(index, value.name, dims, str(np.dtype(dtype))))
    return specs


def random_probes(specs: list[InputSpec], samples: int) -> list[np.ndarray]:
    """Seeded rows for each input: normal floats, 0/1 integers; ``samples`` rows where the
    batch dimension is open, a fixed size where there is room for large images."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in specs:
        batch = spec.shape[0] if spec.shape and spec.shape[0] else samples
        shape = [batch] + [DYNAMIC_DIM_PROBE if d is None else d for d in spec.shape[1:]]
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "iub":
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


class OnnxSource(Source):
    """``model`` in memory; ``reference`` (default: ``model`` run by ONNX Runtime with
    every optimisation off) is what both variants are judged against, named in messages
    by ``reference_name``; ``exporter`` is what the report says wrote ``model``."""

    def __init__(
        self,
        model: onnx.ModelProto,
        name: str = "model",
        reference: Reference | None = None,
        *,
        reference_name: str = "the original model (run by ONNX Runtime with every "
        "optimisation off)",
        exporter: str = "onnx",
    ) -> None:
        self.model = model
        self.name = name
        self.reference_name = reference_name
        self.exporter = exporter
        self._reference = reference
        self._specs = input_specs(model)
        self._data: bytes | None = None  # the original, serialised once (by ``fold``)

    @classmethod
    def open(
        cls, path: Path, name: str | None, label: str | None, external_data: bool
    ) -> OnnxSource:
        return cls(load_onnx(path, label, external_data), name or path.stem)

    def fold(self, options: FoldOptions, on_stage: StageCallback) -> Folded:
        from folding.onnx_graph import fold_onnx

        on_stage("folding", None)
        started = time.perf_counter()
        result = fold_onnx(self.model)
        folded_at = time.perf_counter()
        on_stage("exporting", None)
        folded, unfolded = (OnnxModel(p, p.SerializeToString()) for p in (result.model, self.model))
        others = result.lone_scales | result.norm_affines
        batch_norms = [entry for entry in result.folded if entry.bn not in others]
        self._data = unfolded.data
        exported_at = time.perf_counter()
        return Folded(
            folded_onnx=folded,
            unfolded_onnx=unfolded,
            inputs=self._specs,
            output_names=[value.name for value in self.model.graph.output],
            exporter=self.exporter,
            timings=stage_timings(started, folded_at, exported_at),
            folded=batch_norms,
            not_folded=result.not_folded,
            warnings=_lone_scales_warning(sorted(result.lone_scales))
            + _norm_affines_warning(sorted(result.norm_affines)),
            compute_dtype=compute_dtype(self.model),
        )

    def probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        if verify.probes is not None:
            return load_user_probes(self._specs, Path(verify.probes)), "user-supplied"
        return random_probes(self._specs, min(verify.samples, DEFAULT_SAMPLES)), "random"

    def reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._reference is not None:
            return [np.asarray(output) for output in self._reference(list(probes))]
        names = [spec.name for spec in self._specs]
        data = self._data if self._data is not None else self.model.SerializeToString()
        return run_unoptimised(data, names, list(probes))


def compute_dtype(model: onnx.ModelProto) -> str:
    """ "float16" for a model whose weights are half precision (``model.half()``
    exported), else "float32": the precision its answers are judged in."""
    return "float16" if half_precision(model) else "float32"


def _lone_scales_warning(names: list[str]) -> list[str]:
    """The per-channel Muls folded that are no BatchNormalization: not counted as BNs."""
    if not names:
        return []
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return [
        f"{len(names)} per-channel Mul node(s) with no Add after them (a layer scale, not a "
        f"BatchNormalization) folded into the node beside them too, not counted as BNs: {shown}"
    ]


def _norm_affines_warning(names: list[str]) -> list[str]:
    """The affines of other normalizations folded: not counted as BNs."""
    if not names:
        return []
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return [
        f"{len(names)} Mul + Add pair(s) that are the scale and shift of an "
        "InstanceNormalization or LayerNormalization (a GroupNorm's, not a "
        f"BatchNormalization) folded into the node beside them too, not counted as BNs: {shown}"
    ]


def run_unoptimised(data: bytes, names: list[str], arrays: list[np.ndarray]) -> list:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    refuse_external_data(onnx.ModelProto.FromString(data), "the model")
    runner = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return runner.run(None, dict(zip(names, arrays, strict=True)))
