"""Every keras.applications family: load, fold, export, verify; one table.

    .venv/bin/python bench/applications.py [--families ResNet50 Xception ...] [--write]

Each model is built with ``weights=None`` (nothing is downloaded) at a small
input size, its BatchNormalization statistics calibrated on random images (what
each BN really sees, then gamma and beta perturbed: like a trained network's,
so that deep families do not explode), saved to a .keras
file and loaded back (the load time is the yardstick: folding should cost a
small multiple of it). With ``--write`` the table goes to docs/applications.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import timed_fold  # noqa: E402

SIZES = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
FAMILIES = [
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetB3",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2S",
    "EfficientNetV2L",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNetMobile",
    "NASNetLarge",
    "ConvNeXtTiny",
    "ConvNeXtBase",
    "VGG16",
    "VGG19",
]


def preprocess(family: str, pixels: np.ndarray) -> np.ndarray:
    """What each family expects: caffe (BGR, mean-subtracted), tf ([-1, 1]), torch
    (ImageNet mean/std), or raw pixels for models that rescale themselves."""
    from keras.applications import imagenet_utils

    mode = next((m for prefix, m in PREPROCESSING if family.startswith(prefix)), None)
    if mode is None:
        return pixels
    return imagenet_utils.preprocess_input(pixels.copy(), mode=mode)


PREPROCESSING = [
    ("ResNet50V2", "tf"),
    ("ResNet101V2", "tf"),
    ("ResNet152V2", "tf"),
    ("ResNet", "caffe"),
    ("VGG", "caffe"),
    ("DenseNet", "torch"),
    ("MobileNetV3", None),
    ("MobileNet", "tf"),
    ("Inception", "tf"),
    ("Xception", "tf"),
    ("NASNet", "tf"),
]


def run_family(family: str, workdir: Path) -> dict:
    import keras

    from tests import zoo

    size = SIZES.get(family, 32)
    if family == "NASNetLarge":
        size = 33  # NASNetLarge needs an odd-sized stem at small inputs
    build = getattr(keras.applications, family)
    model = build(weights=None, input_shape=(size, size, 3))
    pixels = np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype(np.float32)
    model = zoo.calibrate_batch_norms(model, preprocess(family, pixels), seed=1)
    bns = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in zoo.all_layers(model))
    source = workdir / f"{family}.keras"
    model.save(source)
    started = time.perf_counter()
    loaded = keras.models.load_model(source, compile=False)
    load_s = time.perf_counter() - started
    out = workdir / family
    out.mkdir()
    row = {"family": family, "input": size, "bns": bns, "load_s": load_s}
    report = timed_fold(loaded, out, row, "total_s", error_width=120)
    if report is not None:
        verification = report.verification
        row.update(
            folded=len(report.folded),
            kept=len(report.not_folded),
            nodes=f"{report.onnx['folded'].nodes}/{report.onnx['unfolded'].nodes}",
            unfolded_bn=report.onnx["unfolded"].op_counts.get("BatchNormalization", 0),
            exporter=report.exporter,
            fold_s=report.timings["fold_s"],
            export_s=report.timings["export_s"],
            verify_s=report.timings["verify_s"],
            fold_error=verification.fold_error,
            export_error=verification.export_error,
            verdict=verification.verdict,
        )
    return row


HEADER = (
    "| family | input | BNs | folded | kept | unfolded BN nodes | nodes folded/unfolded "
    "| exporter | load s | fold s | export s | verify s | total / load | fold error "
    "| export error | verdict |"
)


def format_row(row: dict) -> str:
    if "folded" not in row:
        return f"| {row['family']} | {row['input']} | {row['bns']} | error: {row['error']} |"
    ratio = row["total_s"] / row["load_s"]
    return (
        f"| {row['family']} | {row['input']} | {row['bns']} | {row['folded']} | {row['kept']} "
        f"| {row['unfolded_bn']} | {row['nodes']} | {row['exporter']} | {row['load_s']:.2f} "
        f"| {row['fold_s']:.2f} | {row['export_s']:.2f} | {row['verify_s']:.2f} | {ratio:.1f}x "
        f"| {row['fold_error']:.2g} | {row['export_error']:.2g} | {row['verdict']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", nargs="*", default=FAMILIES)
    parser.add_argument("--write", action="store_true", help="rewrite docs/applications.md")
    args = parser.parse_args()

    from folding.quiet import import_keras

    import_keras()
    rows = []
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    with tempfile.TemporaryDirectory() as workdir:
        for family in args.families:
            row = run_family(family, Path(workdir))
            rows.append(row)
            print(format_row(row), flush=True)
    if args.write:
        write_doc(rows, " ".join(sys.argv[1:]))


def write_doc(rows: list[dict], arguments: str) -> None:
    lines = [
        "# keras.applications: fold, export, verify",
        "",
        "Made by `.venv/bin/python bench/applications.py"
        + (f" {arguments}" if arguments else "")
        + f"` on {platform.machine()}, {platform.python_version()}, 2 cores "
        "(weights=None, BatchNormalization statistics calibrated on random images then "
        "gamma/beta perturbed, small inputs; errors are "
        "max |difference| over each output's scale: fold = folded vs unfolded ONNX, "
        "export = unfolded ONNX vs Keras). `kept` BatchNormalizations follow a ReLU or "
        "a concatenation (pre-activation designs) and have nowhere exact to go; the "
        "report names the reason for each. `inconclusive`: the random network's outputs "
        "barely vary across probes, so the check proves less (real weights or `--probe` "
        "data fix that).",
        "",
        HEADER,
        "|" + "---|" * (HEADER.count(" | ") + 1),
        *(format_row(row) for row in rows),
        "",
    ]
    (ROOT / "docs" / "applications.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
