"""Fold an ONNX model to a directory: model.onnx, unfolded.onnx (the original) and
report.json, verified like a Keras model's fold.

The reference is the original ONNX run by ONNX Runtime with every graph
optimisation off; ``unfolded.onnx`` (the original) runs with the BN fusions off,
``model.onnx`` as served. Fold, export and total errors mean what they mean for
Keras models, with the original's unoptimised run in Keras's place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from folding.errors import ExportError, ModelLoadError
from folding.onnx_graph import fold_onnx
from folding.report import FoldReport, OnnxSummary, TensorInfo
from folding.sources.onnx_external import inline_external_data, refuse_external_data
from folding.sources.onnx_ir import readable_by_runtime
from folding.sources.onnx_model import OnnxModel, summarize
from folding.specs import InputSpec, StageCallback, no_stages
from folding.verify.probes import DEFAULT_SAMPLES, DYNAMIC_DIM_PROBE, load_user_probes
from folding.verify.verdict import (
    DEFAULT_EXPORT_RTOL,
    DEFAULT_RTOL,
    NOISE_FACTOR,
    Answers,
    failure_error,
    judge,
    perturbed,
    run_onnx,
)

FOLDED_FILE = "model.onnx"
UNFOLDED_FILE = "unfolded.onnx"
REPORT_FILE = "report.json"
MAX_ONNX_BYTES = 2 * 1024**3


def load_onnx(path: Path, label: str | None = None, external_data: bool = False) -> onnx.ModelProto:
    """An ONNX model file, checked.

    Tensors in external files (what ``torch.onnx.export`` writes by default, as
    ``model.onnx.data``) are read only with ``external_data`` (the command line,
    where the operator names a file on their own disk), and only from regular files
    inside the model's folder; an upload is one file, so any tensor with external
    data is refused (``folding.sources.onnx_external``)."""
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


def _probes(specs: list[InputSpec], samples: int, probe_path: Path | None) -> tuple[list, str]:
    if probe_path is not None:
        return load_user_probes(specs, Path(probe_path)), "user-supplied"
    return random_probes(specs, samples), "random"


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


def fold_onnx_to_directory(
    model: onnx.ModelProto,
    directory: Path,
    *,
    rtol: float = DEFAULT_RTOL,
    export_rtol: float | None = None,
    noise_factor: float = NOISE_FACTOR,
    samples: int = DEFAULT_SAMPLES,
    probe_path: Path | None = None,
    name: str = "model",
    reference: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
    exporter: str = "onnx",
    on_stage: StageCallback = no_stages,
) -> FoldReport:
    """``reference``: what the exports are checked against (default: ``model`` run by
    ONNX Runtime with every optimisation off), e.g. the SavedModel it was converted from.
    ``on_stage(stage, progress)`` as for ``folding.pipeline.fold_to_directory``; within
    "verifying", ``progress`` counts the three runs done."""
    on_stage("folding", None)
    started = time.perf_counter()
    result = fold_onnx(model)
    folded_at = time.perf_counter()
    on_stage("exporting", None)
    exported = [OnnxModel(proto, proto.SerializeToString()) for proto in (result.model, model)]
    folded, unfolded = exported
    (directory / FOLDED_FILE).write_bytes(folded.data)
    (directory / UNFOLDED_FILE).write_bytes(unfolded.data)
    exported_at = time.perf_counter()

    specs = input_specs(model)
    names = [spec.name for spec in specs]
    on_stage("verifying", 0.0)
    probes, source = _probes(specs, min(samples, DEFAULT_SAMPLES), probe_path)
    try:
        if reference is None:
            expected = _run_unoptimised(unfolded.data, names, probes)
        else:
            expected = [np.asarray(output) for output in reference(probes)]
        on_stage("verifying", 1 / 3)
        unfolded_out = run_onnx(unfolded.data, names, probes, unfolded=True)
        on_stage("verifying", 2 / 3)
        answers = Answers(
            keras=expected,
            unfolded=unfolded_out,
            folded=run_onnx(folded.data, names, probes),
        )
        on_stage("verifying", 1.0)
        settings = {
            "rtol": rtol,
            "export_rtol": export_rtol or DEFAULT_EXPORT_RTOL,
            "probes": source,
            "noise_factor": noise_factor,
        }
        output_names = [value.name for value in model.graph.output]
        verification = judge(output_names, answers, **settings)
        if not verification.passed and noise_factor:
            noisy = run_onnx(perturbed(model), names, probes, unfolded=True)
            answers = Answers(answers.keras, answers.unfolded, answers.folded, noisy)
            verification = judge(output_names, answers, **settings)
    except Exception as error:
        if not type(error).__module__.startswith("onnxruntime"):
            raise
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ExportError(f"ONNX Runtime cannot run this model: {first}") from None
    verified_at = time.perf_counter()
    report = FoldReport(
        model=name,
        inputs=[TensorInfo(s.name, s.dtype, list(s.shape)) for s in specs],
        outputs=[
            TensorInfo(n, str(r.dtype), [None, *r.shape[1:]])
            for n, r in zip(output_names, expected, strict=True)
        ],
        folded=result.folded,
        not_folded=result.not_folded,
        verification=verification,
        onnx={
            "folded": OnnxSummary(**summarize(folded)),
            "unfolded": OnnxSummary(**summarize(unfolded)),
        },
        timings={
            "fold_s": round(folded_at - started, 4),
            "export_s": round(exported_at - folded_at, 4),
            "verify_s": round(verified_at - exported_at, 4),
        },
        exporter=exporter,
    )
    (directory / REPORT_FILE).write_text(report.to_json())
    reference_name = (
        "the original model (run by ONNX Runtime with every optimisation off)"
        if reference is None
        else "the model it was converted from"
    )
    error = failure_error(verification, report, reference=reference_name, noise_factor=noise_factor)
    if error is not None:
        raise error
    return report


def _run_unoptimised(data: bytes, names: list[str], arrays: list[np.ndarray]) -> list:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    refuse_external_data(onnx.ModelProto.FromString(data), "the model")
    runner = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return runner.run(None, dict(zip(names, arrays, strict=True)))
