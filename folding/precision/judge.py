"""One variant judged against the float32 model on the verification rows.

A classifier-like output (rank 2, several classes, several rows) is judged by
top-1 agreement with float32 (at least ``MIN_AGREEMENT``); any other by its
largest error over the float32 output's scale (``FP16_RTOL``, ``INT8_RTOL``). A
passing variant is written beside ``model.onnx``; every variant is timed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from folding.precision.latency import latencies
from folding.precision.names import variant_file
from folding.verify.verdict import relative_error

FP16_RTOL = 1e-2
INT8_RTOL = 0.1
MIN_AGREEMENT = 0.98  # top-1 agreement with float32 that a classifier's variant must keep


@dataclass
class Variant:
    """One precision's outcome, as listed in report.json's ``variants``."""

    precision: str
    file: str | None  # None when the variant failed and was not written
    passed: bool
    agreement: float | None  # top-1 agreement with float32, for classifier-like outputs
    errors: dict[str, float]  # per output: max |difference| / the float32 output's scale
    rtol: float
    min_agreement: float | None
    latency_ms: dict[str, dict[str, float]]  # "batch 8" -> {"fp32": .., "variant": .., ...}
    size_bytes: int
    rows: int
    rows_source: str  # "calibration" (the user's rows) or "probes"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    equalization: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judged(
    directory: Path,
    precision: str,
    proto: onnx.ModelProto,
    folded: onnx.ModelProto,
    names: list[str],
    rows: list[np.ndarray],
    reference: list[np.ndarray],
    write: bool = True,
    min_agreement: float = MIN_AGREEMENT,
) -> Variant:
    """``proto`` (the ``precision`` variant of ``folded``) run on ``rows`` and judged
    against ``reference``, float32's answers; written beside ``folded`` when it passes
    (and ``write``)."""
    data = proto.SerializeToString()
    try:
        answers = run(data, names, rows)
    except Exception as error:  # ONNX Runtime has no kernel for some quantized node
        return _failed(precision, len(data), len(rows[0]), f"does not run: {_first_line(error)}")
    errors = {
        value.name: relative_error(want, got)[1]
        for value, want, got in zip(folded.graph.output, reference, answers, strict=True)
    }
    agreement = _agreement(reference, answers)
    rtol = FP16_RTOL if precision == "fp16" else INT8_RTOL
    if agreement is not None:
        passed, tolerance = agreement >= min_agreement, min_agreement
        reason = (
            None
            if passed
            else (f"top-1 agreement with float32 is {agreement:.1%}, below {min_agreement:.1%}")
        )
    else:
        worst = max(errors, key=errors.get)
        passed, tolerance = errors[worst] <= rtol, None
        reason = (
            None
            if passed
            else (
                f"output '{worst}' differs from float32 by {errors[worst]:.3g} of its scale "
                f"(tolerance {rtol:g})"
            )
        )
    file = variant_file(precision) if passed and write else None
    if file is not None:
        (directory / file).write_bytes(data)
    return Variant(
        precision=precision,
        file=file,
        passed=passed,
        agreement=agreement,
        errors=errors,
        rtol=rtol,
        min_agreement=tolerance,
        latency_ms=latencies(folded.SerializeToString(), data, names, rows),
        size_bytes=len(data),
        rows=len(rows[0]),
        rows_source="",
        reason=reason,
    )


def _failed(precision: str, size: int, count: int, reason: str) -> Variant:
    return Variant(precision, None, False, None, {}, 0.0, None, {}, size, count, "", reason)


def _agreement(reference: list[np.ndarray], answers: list[np.ndarray]) -> float | None:
    """Top-1 agreement on the first classifier-like output (rank 2, several classes)."""
    for want, got in zip(reference, answers, strict=True):
        if want.ndim == 2 and want.shape[1] > 1 and want.shape[0] > 1:
            return float(np.mean(np.argmax(want, axis=1) == np.argmax(got, axis=1)))
    return None


def run(model: onnx.ModelProto | bytes, names: list[str], rows: list[np.ndarray]) -> list:
    """``model``'s answers to ``rows`` (one array per input in ``names``), on the CPU."""
    import onnxruntime

    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    runner = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in runner.run(None, dict(zip(names, rows, strict=True)))]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: graph inputs that are not initializers."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:300] if text else type(error).__name__
