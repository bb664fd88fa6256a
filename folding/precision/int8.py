"""The int8 variant: ONNX Runtime's static quantizer in QDQ form, int8 weights per
output channel and uint8 activations: on x86 CPUs with VNNI this is the
combination whose Conv/MatMul become integer kernels (signed activations leave a
third of the convolutions in float). Calibration is ``Percentile`` (99.999th
percentile of each activation's histogram): ReLU nets have long right tails that
MinMax would spend most of the 256 levels on. With ``equalize``, cross-layer
equalization comes first and the entry keeps both results."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from folding.precision.judge import MIN_AGREEMENT, Variant, judged

CALIBRATION_ROWS = 256  # at most this many rows calibrate the int8 ranges
PERCENTILE = 99.999


def int8_variant(
    directory: Path,
    folded: onnx.ModelProto,
    names: list[str],
    rows: list[np.ndarray],
    reference: list[np.ndarray],
    rows_source: str,
    equalize: bool,
    min_agreement: float = MIN_AGREEMENT,
) -> Variant:
    """The int8 variant of ``folded``, judged; with ``equalize``, of its equalized form,
    the entry then giving both results."""
    plain = judged(
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
    result = judged(
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
