"""float32 vs fp16 vs int8 variants of folded models: latency, agreement, file size; one table.

    .venv/bin/python bench/precision.py [--families ResNet50 MobileNetV2 ...] [--size 224] [--write]

Each keras.applications family is built with ``weights=None`` (nothing is
downloaded), its BN statistics randomised the way bench/applications.py does,
folded, and its variants made by ``folding.precision`` (int8 calibrated on 32
random images: agreement on a random-weight network proves little, so accuracy
is judged on the digits conv net, trained here on scikit-learn's bundled digits
and judged on held-out rows). Latencies are medians of interleaved runs in one
process, ONNX Runtime CPU, one intra-op thread, same session options for every
file. With ``--write`` the table replaces the precision section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import keras_scratch, markdown_table  # noqa: E402

DEFAULT_FAMILIES = ["ResNet50", "MobileNetV2", "EfficientNetB0"]
SECTION = "## Precision variants"


def fold_family(family: str, size: int, workdir: Path) -> tuple[Path, list[np.ndarray]]:
    import keras

    from bench.applications import preprocess
    from folding.options import FoldOptions, VerifyOptions
    from folding.pipeline import fold_to_directory
    from tests import zoo

    model = getattr(keras.applications, family)(weights=None, input_shape=(size, size, 3))
    pixels = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
    images = preprocess(family, pixels)
    model = zoo.calibrate_batch_norms(model, images[:8], seed=1)
    out = workdir / family
    out.mkdir()
    fold_to_directory(model, out, FoldOptions(VerifyOptions(samples=8)))
    return out, [images.astype(np.float32)]


def fold_digits(workdir: Path) -> tuple[Path, list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from folding.pipeline import fold_to_directory
    from folding.sources.keras.loading import load_keras_model
    from tests.trained import train_digits_conv

    digits = train_digits_conv(workdir / "digits")
    out = workdir / "digits-conv"
    out.mkdir()
    fold_to_directory(load_keras_model(digits.model_path), out)
    return out, [np.load(digits.calibration)], (digits.held_out, digits.labels)


def accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def measure(name: str, directory: Path, rows: list[np.ndarray], held_out=None) -> list[dict]:
    from folding.precision import make_variants

    started = time.perf_counter()
    variants = make_variants(directory, ["fp16", "int8"], rows, rows_source="calibration")
    seconds = time.perf_counter() - started
    fp32_size = (directory / "model.onnx").stat().st_size
    result = []
    for variant in variants:
        row = {
            "model": name,
            "precision": variant.precision,
            "passed": variant.passed,
            "agreement": variant.agreement,
            "error": max(variant.errors.values()) if variant.errors else None,
            "size": variant.size_bytes / fp32_size,
            "make_s": seconds,
        }
        for batch, timing in variant.latency_ms.items():
            row[f"{batch} fp32"] = timing["fp32"]
            row[f"{batch} variant"] = timing["variant"]
            row[f"{batch} speedup"] = timing["speedup"]
        if held_out is not None:
            row["accuracy"] = accuracy(directory / "model.onnx", *held_out)
            written = directory / f"model.{variant.precision}.onnx"
            row["variant_accuracy"] = accuracy(written, *held_out) if written.exists() else None
        result.append(row)
    return result


HEADER = (
    "| model | precision | passed | top-1 agreement | max error | size vs fp32 "
    "| batch 1 fp32 ms | batch 1 variant ms | speedup | batch 8 fp32 ms | batch 8 variant ms "
    "| speedup | held-out accuracy fp32 -> variant |"
)


def line(row: dict) -> str:
    def number(key: str, form: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, form)

    accuracy_text = "-"
    if row.get("accuracy") is not None:
        variant = row.get("variant_accuracy")
        accuracy_text = f"{row['accuracy']:.2%} -> " + (
            "-" if variant is None else f"{variant:.2%}"
        )
    return (
        f"| {row['model']} | {row['precision']} | {'yes' if row['passed'] else 'no'} "
        f"| {number('agreement', '.1%')} | {number('error', '.3g')} | {number('size', '.2f')}x "
        f"| {number('batch 1 fp32', '.2f')} | {number('batch 1 variant', '.2f')} "
        f"| {number('batch 1 speedup', '.2f')}x | {number('batch 8 fp32', '.1f')} "
        f"| {number('batch 8 variant', '.1f')} | {number('batch 8 speedup', '.2f')}x "
        f"| {accuracy_text} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=DEFAULT_FAMILIES)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-digits", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = []
    with keras_scratch() as workdir:
        if not args.no_digits:
            directory, calibration, held_out = fold_digits(workdir)
            rows += measure("digits conv (trained)", directory, calibration, held_out)
            print(line(rows[-2]), line(rows[-1]), sep="\n", flush=True)
        for family in args.families:
            directory, calibration = fold_family(family, args.size, workdir)
            rows += measure(f"{family} {args.size}px", directory, calibration)
            print(line(rows[-2]), line(rows[-1]), sep="\n", flush=True)
    table = markdown_table(HEADER, rows, line)
    print(table)
    if args.write:
        write(table, args)


def write(table: str, args: argparse.Namespace) -> None:
    from bench.docs import replace_section

    path = ROOT / "docs" / "benchmarks.md"
    command = "bench/precision.py " + " ".join(
        ["--families", *args.families, "--size", str(args.size)]
    )
    section = (
        f"{SECTION}\n\n`.venv/bin/python {command}` on {platform.processor() or 'this CPU'} "
        f"({platform.machine()}), ONNX Runtime CPU, 1 intra-op thread, medians of interleaved "
        "runs in one process. int8: QDQ, int8 weights per channel, uint8 activations, "
        "percentile calibration on the rows shown; fp16: float16 weights and compute, float32 "
        "inputs/outputs. Agreement is top-1 agreement with the float32 folded model on the "
        "calibration rows (random images for the applications: read it as a sanity check "
        "only; accuracy is judged on the trained digits net).\n\n" + table + "\n"
    )
    replace_section(path, SECTION, section)


if __name__ == "__main__":
    main()
