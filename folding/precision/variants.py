"""Reduced-precision variants of a folded model: float16 and int8, each verified.

A variant is made from the folded ``model.onnx`` and judged against it on the
verification rows (the user's calibration rows when given, else the probes):

* **fp16**: weights and compute in float16, inputs and outputs kept float32
  (ONNX Runtime's float16 converter with ``keep_io_types``). Nodes whose folded
  weights would overflow float16 (the report's ``fp16_overflow`` diagnostic) stay
  float32; they are named in the variant's entry.
* **int8**: ONNX Runtime's static quantizer in QDQ form, int8 weights per output
  channel and uint8 activations: on x86 CPUs with VNNI this is the combination
  whose Conv/MatMul become integer kernels (signed activations leave a third of
  the convolutions in float). Calibration is ``Percentile`` (99.999th percentile
  of each activation's histogram): ReLU nets have long right tails that MinMax
  would spend most of the 256 levels on.

A variant that misses its tolerance is written nowhere; its entry says why.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from folding.diagnostics import fp16_overflow
from folding.errors import FoldingError
from folding.verify.verdict import relative_error

PRECISIONS = ("fp16", "int8")
FP16_RTOL = 1e-2
INT8_RTOL = 0.1
MIN_AGREEMENT = 0.98  # top-1 agreement with float32 that a classifier's variant must keep
CALIBRATION_ROWS = 256  # at most this many rows calibrate the int8 ranges
PERCENTILE = 99.999
LATENCY_BATCHES = (1, 8)
LATENCY_BUDGET_S = 0.6  # per model and batch size


def variant_file(precision: str) -> str:
    """``model.int8.onnx``: where a passing variant is written beside ``model.onnx``."""
    return f"model.{precision}.onnx"


def parse_precisions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"fp16,int8"`` -> ``("fp16", "int8")``; an unknown name is an error naming it."""
    if not text:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = []
    for name in (item.strip().lower() for item in names):
        if not name or name == "fp32":
            continue
        if name not in PRECISIONS:
            raise FoldingError(
                f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}"
            )
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


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


def make_variants(
    directory: Path,
    precisions: Sequence[str],
    rows: list[np.ndarray],
    *,
    rows_source: str,
    equalize: bool = False,
    folded_file: str = "model.onnx",
    min_agreement: float = MIN_AGREEMENT,
) -> list[Variant]:
    """Make, judge and (when passing) write each of ``precisions`` beside ``folded_file``."""
    directory = Path(directory)
    folded = onnx.load(str(directory / folded_file))
    names = [value.name for value in _graph_inputs(folded)]
    if len(rows) != len(names):
        raise FoldingError(f"variants need one row array per input ({', '.join(names)})")
    reference = _run(folded, names, rows)
    variants = []
    for precision in precisions:
        if precision == "fp16":
            proto, notes = to_float16(folded)
            variants.append(
                _judged(
                    directory,
                    "fp16",
                    proto,
                    folded,
                    names,
                    rows,
                    reference,
                    min_agreement=min_agreement,
                )
            )
            variants[-1].notes.extend(notes)
        elif precision == "int8":
            variants.append(
                _int8(
                    directory,
                    folded,
                    names,
                    rows,
                    reference,
                    rows_source,
                    equalize,
                    min_agreement,
                )
            )
        else:
            raise FoldingError(f"unknown precision {precision!r}")
        variants[-1].rows_source = rows_source
    return variants


def to_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` computing in float16, inputs and outputs float32; overflowing nodes kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = {
        tensor.name
        for tensor in model.graph.initializer
        if tensor.data_type == onnx.TensorProto.FLOAT
        and fp16_overflow([onnx.numpy_helper.to_array(tensor)])
    }
    kept = [node.name for node in model.graph.node if large & set(node.input)]
    notes = []
    if kept:
        notes.append(f"kept float32 (weights beyond float16's range): {', '.join(kept[:8])}")
    converted = convert_float_to_float16(
        _constants_as_initializers(model),  # a copy: the converter works in place
        keep_io_types=True,
        node_block_list=kept or None,
    )
    converted.ir_version = model.ir_version
    return converted, notes


def _constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level ``Constant`` tensors are initializers: the
    float16 converter casts initializers but leaves a Constant node's value float32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    kept = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _int8(
    directory: Path,
    folded: onnx.ModelProto,
    names: list[str],
    rows: list[np.ndarray],
    reference: list[np.ndarray],
    rows_source: str,
    equalize: bool,
    min_agreement: float = MIN_AGREEMENT,
) -> Variant:
    plain = _judged(
        directory,
        "int8",
        quantize_int8(folded, names, rows),
        folded,
        names,
        rows,
        reference,
        write=not equalize,
        min_agreement=min_agreement,
    )
    if rows_source != "calibration":
        plain.notes.append(
            "calibrated on random probes, not the model's data: the int8 ranges are weakly "
            "grounded; give calibration rows"
        )
    if not equalize:
        return plain
    from folding.precision.equalize import equalize_pairs

    balanced, pairs = equalize_pairs(folded)
    result = _judged(
        directory,
        "int8",
        quantize_int8(balanced, names, rows),
        folded,
        names,
        rows,
        reference,
        min_agreement=min_agreement,
    )
    result.notes = plain.notes
    result.equalization = {
        "pairs": pairs,
        "agreement_without": plain.agreement,
        "errors_without": plain.errors,
        "agreement_with": result.agreement,
        "errors_with": result.errors,
    }
    return result


def quantize_int8(
    model: onnx.ModelProto,
    names: list[str],
    rows: list[np.ndarray],
    calibration_method: str = "percentile",
) -> onnx.ModelProto:
    """Static QDQ quantization: int8 per-channel weights, uint8 activations, percentile ranges."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    count = min(CALIBRATION_ROWS, len(rows[0]))

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.index >= count:
                return None
            stop = min(self.index + 8, count)
            feed = {name: array[self.index : stop] for name, array in zip(names, rows, strict=True)}
            self.index = stop
            return feed

    methods = {
        "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": PERCENTILE}),
        "minmax": (CalibrationMethod.MinMax, {}),
    }
    method, extra = methods[calibration_method]
    with tempfile.TemporaryDirectory(prefix="foldserve-int8-") as scratch:
        source, target = Path(scratch) / "in.onnx", Path(scratch) / "out.onnx"
        onnx.save(model, str(source))
        quantize_static(
            str(source),
            str(target),
            Rows(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options=extra,
        )
        quantized = onnx.load(str(target))
    quantized.ir_version = model.ir_version
    return quantized


def _judged(
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
    data = proto.SerializeToString()
    try:
        answers = _run(data, names, rows)
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


def latencies(
    fp32: bytes, variant: bytes, names: list[str], rows: list[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Median latency of float32 and the variant, interleaved, one intra-op thread."""
    first, second = _timing_session(fp32), _timing_session(variant)
    table = {}
    for batch in LATENCY_BATCHES:
        feed = {name: _rows_of(array, batch) for name, array in zip(names, rows, strict=True)}
        samples: dict[str, list[float]] = {"fp32": [], "variant": []}
        for runner in (first, second):
            runner.run(None, feed)  # warm-up
        deadline = time.perf_counter() + LATENCY_BUDGET_S
        while time.perf_counter() < deadline or len(samples["fp32"]) < 5:
            for key, runner in (("fp32", first), ("variant", second)):
                started = time.perf_counter()
                runner.run(None, feed)
                samples[key].append((time.perf_counter() - started) * 1e3)
            if len(samples["fp32"]) >= 200:
                break
        fp32_ms = statistics.median(samples["fp32"])
        variant_ms = statistics.median(samples["variant"])
        table[f"batch {batch}"] = {
            "fp32": fp32_ms,
            "variant": variant_ms,
            "speedup": fp32_ms / variant_ms if variant_ms else None,
        }
    return table


def _rows_of(array: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(array))
    return np.concatenate([array] * reps)[:batch]


def _timing_session(data: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto | bytes, names: list[str], rows: list[np.ndarray]) -> list:
    import onnxruntime

    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    runner = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in runner.run(None, dict(zip(names, rows, strict=True)))]


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:300] if text else type(error).__name__


def variant_rows(
    model: onnx.ModelProto, calibration: Path | None, samples: int = 64
) -> tuple[list[np.ndarray], str]:
    """The rows that calibrate and judge the variants, and where they came from: the
    user's ``calibration`` file, else the random probes ONNX folding verifies on."""
    from folding.onnx_pipeline import input_specs, random_probes
    from folding.verify.probes import load_user_probes

    specs = input_specs(model)
    if calibration is not None:
        return load_user_probes(specs, Path(calibration)), "calibration"
    return random_probes(specs, samples), "probes"


def add_variants(
    directory: Path,
    precisions: Sequence[str],
    calibration: Path | None = None,
    equalize: bool = False,
    report_file: str = "report.json",
    min_agreement: float = MIN_AGREEMENT,
) -> list[Variant]:
    """Make the variants of ``directory/model.onnx`` and list them in its report.json."""
    import json

    directory = Path(directory)
    folded = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    rows, source = variant_rows(folded, calibration)
    variants = make_variants(
        directory,
        precisions,
        rows,
        rows_source=source,
        equalize=equalize,
        min_agreement=min_agreement,
    )
    report_path = directory / report_file
    report = json.loads(report_path.read_text())
    report["variants"] = [variant.as_dict() for variant in variants]
    report_path.write_text(json.dumps(report, indent=2))
    return variants


def variants_summary(directory: Path, report_file: str = "report.json") -> str:
    """A few lines for people: each variant, its verdict, agreement, error and speed."""
    import json

    variants = json.loads((Path(directory) / report_file).read_text()).get("variants", [])
    return "\n".join(describe(variant) for variant in variants)


def describe(variant: dict[str, Any]) -> str:
    """``int8: passed, agreement 99.4%, max error 0.031, batch 8 3.1x faster -> model.int8.onnx``"""
    parts = [f"{variant['precision']}: {'passed' if variant['passed'] else 'FAILED'}"]
    if variant.get("agreement") is not None:
        parts.append(f"agreement {variant['agreement']:.1%}")
    if variant.get("errors"):
        parts.append(f"max error {max(variant['errors'].values()):.3g}")
    timing = variant.get("latency_ms", {}).get(f"batch {LATENCY_BATCHES[-1]}")
    if timing and timing.get("speedup"):
        parts.append(f"batch {LATENCY_BATCHES[-1]} {timing['speedup']:.2f}x float32's speed")
    line = ", ".join(parts)
    if variant.get("file"):
        line += f" -> {variant['file']}"
    if variant.get("reason"):
        line += f" ({variant['reason']})"
    for note in variant.get("notes", []):
        line += f"\n  note: {note}"
    return line
