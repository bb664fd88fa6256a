"""Load, fold, export both variants, verify: the whole job on one model."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from folding.emit import Unsupported
from folding.errors import ExportError, VerificationError
from folding.export import DEFAULT_OPSET, export_direct, export_onnx, summarize
from folding.fold import FoldResult
from folding.graph import Graph, InputSpec
from folding.probes import DEFAULT_SAMPLES, make_probes, sample_count
from folding.report import FoldReport, OnnxSummary, TensorInfo
from folding.verify import (
    DEFAULT_EXPORT_RTOL,
    DEFAULT_RTOL,
    HALF_PRECISION_EXPORT_RTOL,
    NOISE_FACTOR,
    Answers,
    exact_answers,
    judge,
    perturbed,
    run_onnx,
)

FOLDED_FILE = "model.onnx"
UNFOLDED_FILE = "unfolded.onnx"
REPORT_FILE = "report.json"


def flat_caller(model: Any) -> Callable[[list[Any]], list[Any]]:
    """``model`` as a function from a flat list of inputs to a flat list of outputs."""
    from keras import tree

    structure = getattr(model, "_inputs_struct", None)
    if structure is None and hasattr(model, "_functional"):
        structure = model._functional._inputs_struct

    def call(inputs: list[Any]) -> list[Any]:
        packed = tree.pack_sequence_as(structure, inputs) if structure is not None else inputs[0]
        return tree.flatten(model(packed, training=False))

    return call


def fold_to_directory(
    model: Any,
    directory: Path,
    *,
    opset: int = DEFAULT_OPSET,
    rtol: float = DEFAULT_RTOL,
    export_rtol: float | None = None,
    samples: int = DEFAULT_SAMPLES,
    probe_path: Path | None = None,
    name: str | None = None,
) -> FoldReport:
    """Fold ``model`` and write model.onnx, unfolded.onnx and report.json into ``directory``.

    Raises VerificationError (carrying the report) when folding changed the
    answers (``failure == "fold"``) or when the unfolded export already differs
    from the Keras model (``failure == "export"``), each judged against its own
    tolerance and the model's float32 noise (see ``folding.verify``).
    """
    from folding.fold import fold_model
    from folding.graph import trace

    started = time.perf_counter()
    result = fold_model(model)
    unfolded_graph = trace(model)
    folded_at = time.perf_counter()

    exported = export_pair(result, unfolded_graph, directory, opset)
    exported_at = time.perf_counter()

    names = [spec.name for spec in result.inputs]
    count = samples if probe_path is not None else sample_count(unfolded_graph, samples)
    probes, source = make_probes(result.inputs, count, probe_path, graph=unfolded_graph)
    keras_out = [np.asarray(out) for out in flat_caller(model)(probes)]
    answers = Answers(
        keras=keras_out,
        unfolded=run_onnx(exported.unfolded, names, probes, unfolded=True),
        folded=run_onnx(exported.folded, names, probes),
        perturbed=run_onnx(perturbed(exported.unfolded), names, probes, unfolded=True),
        exact=exact_answers(exported.unfolded, names, probes),
    )
    dtype = compute_dtype(model)
    if export_rtol is None:
        export_rtol = DEFAULT_EXPORT_RTOL if dtype == "float32" else HALF_PRECISION_EXPORT_RTOL
    verification = judge(
        result.output_names,
        answers,
        rtol=rtol,
        export_rtol=export_rtol,
        compared_dtype=dtype,
        probes=source,
    )
    verified_at = time.perf_counter()

    report = FoldReport(
        model=name or model.name,
        inputs=[TensorInfo(s.name, s.dtype, list(s.shape)) for s in result.inputs],
        outputs=[
            TensorInfo(n, str(r.dtype), [None, *r.shape[1:]])
            for n, r in zip(result.output_names, keras_out, strict=True)
        ],
        folded=result.folded,
        not_folded=result.not_folded,
        removed=result.removed,
        verification=verification,
        onnx={
            "folded": OnnxSummary(**summarize(exported.folded)),
            "unfolded": OnnxSummary(**summarize(exported.unfolded)),
        },
        timings={
            "fold_s": round(folded_at - started, 4),
            "export_s": round(exported_at - folded_at, 4),
            "verify_s": round(verified_at - exported_at, 4),
        },
        exporter=exported.exporter,
    )
    (directory / REPORT_FILE).write_text(report.to_json())
    if verification.failure == "fold":
        worst = max(verification.outputs, key=lambda check: check.fold_error / check.fold_limit)
        raise VerificationError(
            f"folding changed output '{worst.name}': the folded model differs from the "
            f"unfolded one by {worst.fold_error:.3g} of the output's scale, over rtol "
            f"{rtol:g} and over {NOISE_FACTOR:g}x the model's float32 noise ({worst.noise:.2g})",
            report,
        )
    if verification.failure == "export":
        worst = max(verification.outputs, key=lambda c: c.export_error / c.export_limit)
        raise VerificationError(
            f"export problem, not a folding one: the unfolded ONNX export differs from the "
            f"Keras model on output '{worst.name}' by {worst.export_error:.3g} of its scale "
            f"(export rtol {export_rtol:g}; folding itself changed it by {worst.fold_error:.3g})",
            report,
        )
    return report


@dataclass(frozen=True)
class ExportedPair:
    folded: onnx.ModelProto
    unfolded: onnx.ModelProto
    exporter: str


def export_pair(
    result: FoldResult, unfolded_graph: Graph, directory: Path, opset: int
) -> ExportedPair:
    """Write model.onnx and unfolded.onnx: directly from the traced graphs when every
    layer has a direct form, else both through the general exporter."""
    try:
        unfolded = export_direct(unfolded_graph, directory / UNFOLDED_FILE, opset)
        folded = export_direct(result.graph, directory / FOLDED_FILE, opset, result.weights)
        return ExportedPair(folded, unfolded, "direct")
    except Unsupported as unsupported:
        reason = unsupported
    except ValueError as error:  # an opset the direct exporter does not write
        reason = error
    inputs: list[InputSpec] = result.inputs
    try:
        unfolded = export_onnx(
            flat_caller(result.source),
            inputs,
            result.output_names,
            directory / UNFOLDED_FILE,
            opset,
        )
        folded = export_onnx(
            flat_caller(result.model), inputs, result.output_names, directory / FOLDED_FILE, opset
        )
    except ExportError as error:
        raise ExportError(
            f"cannot export {reason}; the general exporter failed too: {error}"
        ) from None
    return ExportedPair(folded, unfolded, "tf2onnx")


def compute_dtype(model: Any) -> str:
    """The dtype the model computes in: float16/bfloat16 under mixed precision."""
    from folding.graph import trace

    dtypes = {str(getattr(call.layer, "compute_dtype", "float32")) for call in trace(model).calls}
    for half in ("float16", "bfloat16"):
        if half in dtypes:
            return half
    return "float32"


def publish_directory(build: Callable[[Path], Any], destination: Path) -> Any:
    """Run ``build(tmp)`` in a fresh temporary directory beside ``destination``, then move
    its files into ``destination``; on any error nothing is left behind."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        result = build(staging)
        if not destination.exists():
            os.replace(staging, destination)
        else:
            for item in staging.iterdir():
                os.replace(item, destination / item.name)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
