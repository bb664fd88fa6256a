"""Load, fold, export both variants, verify: the whole job on one model."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from folding.errors import VerificationError
from folding.export import DEFAULT_OPSET, export_onnx, summarize
from folding.graph import InputSpec
from folding.report import FoldReport, OnnxSummary, TensorInfo
from folding.verify import DEFAULT_RTOL, DEFAULT_SAMPLES, compare, probe_inputs, run_onnx

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
    samples: int = DEFAULT_SAMPLES,
    probe_path: Path | None = None,
    name: str | None = None,
    calibration: list[np.ndarray] | None = None,
    recalibrate_on: list[np.ndarray] | None = None,
) -> FoldReport:
    """Fold ``model`` and write model.onnx, unfolded.onnx and report.json into ``directory``.

    Raises VerificationError (carrying the report) when the folded export does
    not match the original Keras model within ``rtol``.
    """
    from folding.fold import fold_model

    started = time.perf_counter()
    result = fold_model(model, calibration, recalibrate_on)
    inputs: list[InputSpec] = result.inputs
    folded_at = time.perf_counter()

    folded_proto = export_onnx(
        flat_caller(result.model), inputs, result.output_names, directory / FOLDED_FILE, opset
    )
    unfolded_proto = export_onnx(
        flat_caller(model), inputs, result.output_names, directory / UNFOLDED_FILE, opset
    )
    exported_at = time.perf_counter()

    probes = probe_inputs(inputs, samples, probe_path)
    reference = [np.asarray(out) for out in flat_caller(model)(probes)]
    candidate = run_onnx(directory / FOLDED_FILE, [spec.name for spec in inputs], probes)
    verification = compare(result.output_names, reference, candidate, rtol)
    verified_at = time.perf_counter()

    report = FoldReport(
        model=name or model.name,
        inputs=[TensorInfo(s.name, s.dtype, list(s.shape)) for s in inputs],
        outputs=[
            TensorInfo(n, str(r.dtype), [None, *r.shape[1:]])
            for n, r in zip(result.output_names, reference, strict=True)
        ],
        folded=result.folded,
        not_folded=result.not_folded,
        removed=result.removed,
        verification=verification,
        onnx={
            "folded": OnnxSummary(**summarize(folded_proto)),
            "unfolded": OnnxSummary(**summarize(unfolded_proto)),
        },
        timings={
            "fold_s": round(folded_at - started, 4),
            "export_s": round(exported_at - folded_at, 4),
            "verify_s": round(verified_at - exported_at, 4),
        },
        recalibration=result.recalibration,
    )
    (directory / REPORT_FILE).write_text(report.to_json())
    if not verification.passed:
        worst = max(verification.outputs, key=lambda check: check.max_rel_error)
        raise VerificationError(
            f"folded model differs from the original: output '{worst.name}' max relative error "
            f"{worst.max_rel_error:.3g} > rtol {rtol:g}",
            report,
        )
    return report


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
