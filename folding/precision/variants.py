"""Reduced-precision variants of a folded model: float16 and int8, each verified.

A variant is made from the folded ``model.onnx`` (``float16``, ``int8``) and
judged against it on the verification rows, the user's calibration rows when
given, else the probes (``judge``). A variant that misses its tolerance is
written nowhere; its entry says why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from folding.errors import FoldingError
from folding.precision.float16 import to_float16
from folding.precision.int8 import int8_variant
from folding.precision.judge import MIN_AGREEMENT, Variant, graph_inputs, judged, run


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
    names = [value.name for value in graph_inputs(folded)]
    if len(rows) != len(names):
        raise FoldingError(f"variants need one row array per input ({', '.join(names)})")
    reference = run(folded, names, rows)
    variants = []
    for precision in precisions:
        if precision == "fp16":
            proto, notes = to_float16(folded)
            variants.append(
                judged(
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
                int8_variant(
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


def variant_rows(
    model: onnx.ModelProto, calibration: Path | None, samples: int = 64
) -> tuple[list[np.ndarray], str]:
    """The rows that calibrate and judge the variants, and where they came from: the
    user's ``calibration`` file, else the random probes ONNX folding verifies on."""
    from folding.sources.onnx.source import input_specs, random_probes
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
