"""Models nobody here wrote: keras-hub, keras-cv and kimm models, tf_keras (Keras 2)
.h5 files, kecam's .h5 files; one table.

    .venv/bin/python bench/third_party.py [--write] [--only "keras-hub vit"] [--only kimm]
        [--only keras-cv] [--only kecam]
    .venv/bin/python bench/third_party.py --only keras2-libs [--write] [--files DIR]

keras-hub models (every image backbone, the image task models on them, a few text
backbones; ``tests/hub_zoo.py``) are built with random weights from their constructors
(never a preset download) with tiny configurations; keras-cv's (0.9: every backbone
family and the task models on them; ``tests/kerascv_zoo.py``) likewise, from the base
classes with their configuration written out, at 64x64; kimm (Keras Image Models) models
with ``weights=None`` at 64x64 (96x96 where the family needs more), one per family by
default and every variant with ``--kimm all`` (``--kimm more``: a second variant of
each family and the ones that differ in kind); the tf_keras applications are built
with ``weights=None``, saved by tf_keras as .h5 (Keras 2's format) and loaded back
through foldserve's loader; keras-cv-attention-models (kecam 1.4; ``tests/kecam_zoo.py``)
builds with tf_keras only, so each of its models is built with ``pretrained=None`` at
64x64 in a tf_keras process, its BN statistics measured there, saved as .h5 and
loaded back the same way.
keras-cv and kecam are in the bench and test extras (with dm-tree, which keras-cv 0.9
imports without requiring it); a group whose package is absent fails at its first
model. ``keras2-libs`` (only when ``--only`` names it or its models):
Keras 2 files written by segmentation_models, efficientnet, classification_models(_3D),
keras-unet-collection and keras-unet (``bench/keras2_libs.py``; the libraries are not
dependencies: ``tests/keras2_libraries.py`` says how to install them).
Each is folded, exported and verified; the table gives the BNs the model really has
(counted through nested models and custom layers), how many were folded or kept (with a
reason), the exporter (and the layers it left to tf2onnx alone), the seconds, and notes:
why each kept BN was kept and why a layer went to tf2onnx. A row whose report accounts
for another number of BNs than the model has says so. With ``--write`` it replaces the
"Models from elsewhere" section of docs/applications.md; with ``--only`` it runs the
models whose label contains the text and ``--write`` replaces (or adds) just their rows.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import keras2_libs  # noqa: E402
from bench.common import keras_scratch, markdown_table, timed_fold  # noqa: E402

SECTION = "## Models from elsewhere"
# one per kimm family (the smallest)
KIMM = [
    "ConvMixer736D32", "ConvNeXtAtto", "DenseNet121", "EfficientNetB0", "EfficientNetLiteB0",
    "EfficientNetV2B0", "GhostNetW050", "GhostNetV2W100", "GhostNetV3W050", "HGNetTiny",
    "HGNetV2B0", "InceptionNeXtTiny", "InceptionV3", "LCNet035", "MobileNetV2W050",
    "MobileNetV3W050Small", "MobileOneS0", "MobileViTXXS", "MobileViTV2W050", "RegNetX002",
    "RegNetY002", "RepVGGA0", "ResNet18", "TinyNetE", "VGG11", "VisionTransformerTiny16",
    "Xception",
]  # fmt: skip
# --kimm more: other variants, chosen where they differ (fused MBConv, minimal blocks, SE,
# bottlenecks, one branch a block, wider attention), not only in width or depth
KIMM_MORE = [
    "ConvMixer1024D20", "ConvNeXtPico", "EfficientNetB1", "EfficientNetLiteB1", "EfficientNetV2S",
    "GhostNetW100", "GhostNetV2W130", "GhostNetV3W100", "HGNetSmall", "HGNetV2B1", "HGNetV2B4",
    "LCNet100", "MobileNetV2W100", "MobileNetV3W100Large", "MobileNetV3W100LargeMinimal",
    "MobileNetV3W100SmallMinimal", "MobileOneS1", "MobileViTXS", "MobileViTV2W100",
    "RegNetX004", "RegNetY004", "RepVGGB0", "ResNet34", "ResNet50", "TinyNetA",
    "VisionTransformerSmall16", "VisionTransformerTiny32",
]  # fmt: skip
KIMM_SIZE = {"InceptionV3": 96, "Xception": 96, "VGG": 224}  # VGG: its 7x7 head convolution
TF_KERAS = {  # family: input size (the smallest each takes, at least 64)
    **dict.fromkeys(["MobileNetV2", "ResNet50", "DenseNet121", "MobileNet", "EfficientNetB0"], 64),
    # TFOpLambda layers (operators and tf functions on symbolic tensors), the
    # applications' own LayerScale / CustomScaleLayer, separable convolutions
    **dict.fromkeys(["MobileNetV3Small", "RegNetY002", "ConvNeXtTiny"], 64),
    "InceptionResNetV2": 75,
    "Xception": 71,
}


def hub_models():
    import keras_hub  # noqa: F401 - imported before any model's clock starts

    from tests.hub_zoo import HUB

    for name, build in HUB.items():
        yield f"keras-hub {name}", build


def kerascv_models():
    import keras_cv  # noqa: F401 - imported before any model's clock starts

    from tests.kerascv_zoo import KERAS_CV

    for name, build in KERAS_CV.items():
        yield f"keras-cv {name}", build


def kecam_models(workdir: Path, only: str | None):
    """kecam's models, built and saved as .h5 by tf_keras in a process of their own
    (``tests/kecam_zoo.py``), each loaded back through foldserve's loader with kecam's
    module as the operator's custom objects (its own layers and activations)."""
    from tests.kecam_zoo import KECAM, KECAM_MODULE, build_h5

    names = [name for name in KECAM if not only or only in f"kecam {name}"]
    built = build_h5(names, workdir / "kecam")
    for name in names:

        def load(record=built[name]):
            from folding.sources.keras.custom_objects import import_modules
            from folding.sources.keras.loading import load_keras_model
            from tests.folding.test_zoo import batch_norm_count

            if "error" in record:
                raise RuntimeError(f"kecam: {record['error']}")
            # as `--custom-objects keras_cv_attention_models`: its layers and activations
            import_modules(KECAM_MODULE)
            model = load_keras_model(record["path"])
            if batch_norm_count(model) != record["bns"]:
                raise RuntimeError(
                    f"the loaded model has {batch_norm_count(model)} BNs of {record['bns']}"
                )
            return model

        yield f"kecam {name} (.h5)", load


def kimm_models(which: str = "family"):
    import kimm

    names = {"family": KIMM, "more": [*KIMM, *KIMM_MORE], "all": kimm.list_models()}[which]
    for name in names:
        size = next((px for family, px in KIMM_SIZE.items() if name.startswith(family)), 64)
        yield f"kimm {name}", lambda name=name, size=size: kimm_model(name, size)


def kimm_model(name: str, size: int = 64, **settings):
    """kimm's ``name`` with random weights (``weights=None``: nothing is downloaded) and
    logits out (a softmax over random logits answers every probe alike)."""
    import kimm

    model_class = getattr(kimm.models, name)
    if name == "MobileNetV3W100Large" and not hasattr(model_class, "_weights_url"):
        model_class._weights_url = None  # kimm 0.2.5 reads it and never sets it
    return model_class(
        input_shape=(size, size, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
        **settings,
    )


def tf_keras_models(workdir: Path):
    import tf_keras

    for family, size in TF_KERAS.items():

        def load(family=family, size=size):
            from folding.sources.keras.loading import load_keras_model

            build = getattr(tf_keras.applications, family)
            model = build(weights=None, input_shape=(size, size, 3))
            path = workdir / f"{family}.h5"
            model.save(path)
            return load_keras_model(path)

        yield f"tf_keras {family} (.h5)", load


def randomized(model):
    from tests import zoo

    return zoo.randomize_batch_norms(model, seed=7)


def calibrated(model):
    """BN statistics measured on random images (0-255, kimm's input range), then gamma
    and beta perturbed: arbitrary statistics saturate these deep random networks (every
    probe gets the same answer, and verification is inconclusive)."""
    import numpy as np

    from tests import zoo

    shape = (32, *model.input_shape[1:])  # fewer leave deep channels near-constant
    images = np.random.default_rng(7).uniform(0, 255, shape).astype("float32")
    return zoo.calibrate_batch_norms(model, images, seed=7)


def run(label: str, build, workdir: Path, statistics=randomized) -> dict:
    from tests.folding.test_zoo import batch_norm_count

    row = {"model": label}
    started = time.perf_counter()
    try:
        model = build()
        row["load_s"] = time.perf_counter() - started  # not the statistics' pass
        model = statistics(model)
    except Exception as error:  # a constructor or loader that fails is a row too
        row["error"] = f"load: {type(error).__name__}: {str(error).splitlines()[0][:140]}"
        return row
    row["bns"] = batch_norm_count(model)
    out = workdir / label.replace(" ", "_").replace("(", "").replace(")", "")
    out.mkdir()
    try:
        report = timed_fold(model, out, row, "fold_s", error_width=160)
    except Exception as error:  # not a FoldingError: a crash, which is a row too
        row["error"] = f"crash: {type(error).__name__}: {str(error).splitlines()[0][:140]}"
        traceback.print_exc()
        return row
    if report is not None:
        row.update(report_columns(report))
        if row["folded"] + row["kept"] != row["bns"]:
            row["error"] = f"report accounts for {row['folded'] + row['kept']} BNs of {row['bns']}"
    return row


def report_columns(report) -> dict:
    """A row's columns read from a fold's report."""
    return {
        "folded": len(report.folded),
        "kept": len(report.not_folded),
        "exporter": _exporter(report),
        "verdict": report.verification.verdict,
        "notes": _notes(report),
    }


def _exporter(report) -> str:
    """The exporter, and which layers it left to tf2onnx alone (spliced in)."""
    alone = [
        warning.split("'")[1] for warning in report.warnings if "was exported alone" in warning
    ]
    if not alone:
        return report.exporter
    shown = ", ".join(alone[:3]) + (f" +{len(alone) - 3}" if len(alone) > 3 else "")
    return f"{report.exporter}; by tf2onnx alone: {shown}"


def _notes(report) -> str:
    """The distinct reasons BNs were kept and layers went to tf2onnx alone, with counts
    (layer names left out, so that one reason shared by many layers is one note)."""
    reasons: dict[str, int] = {}
    kept = [f"kept: {entry.reason}" for entry in report.not_folded]
    alone = [w.split(": ", 1)[-1] for w in report.warnings if "was exported alone" in w]
    alone = [f"by tf2onnx alone: {reason}" for reason in alone]
    others = [w for w in report.warnings if "was exported alone" not in w]
    for note in [*kept, *alone, *others]:
        note = re.sub(r"'[^']*'", "'…'", note)[:110]
        reasons[note] = reasons.get(note, 0) + 1
    notes = [f"{count}x {note}" for note, count in reasons.items()]
    shown = "; ".join(notes[:3])
    return shown + (f"; +{len(notes) - 3} more" if len(notes) > 3 else "")


ADDED_SOURCES = (  # the section's sentence on keras-cv and kecam
    " keras-cv models (`--only keras-cv`) are built likewise from their base classes "
    "(`tests/kerascv_zoo.py`; keras-cv's aliases and presets download), with BN "
    "statistics measured on random images; kecam (keras-cv-attention-models, `--only "
    "kecam`) builds with tf_keras only, so its models are built with `pretrained=None` in"
    " a tf_keras process, calibrated there, saved as .h5 and loaded back through "
    "foldserve's Keras 2 loader with kecam's module as the custom objects "
    "(`--custom-objects keras_cv_attention_models`: its own layers and activations; "
    "`tests/kecam_zoo.py`)."
)

HEADER = (
    "| model | BNs | folded | kept | exporter | load s | fold+export+verify s | verdict | notes |"
)


def line(row: dict) -> str:
    if "folded" not in row:
        return f"| {row['model']} | {row.get('bns', '-')} | - | - | - | - | - | {row['error']} | |"
    notes = row["notes"].replace("|", "/")
    return (
        f"| {row['model']} | {row['bns']} | {row['folded']} | {row['kept']} | {row['exporter']} "
        f"| {row['load_s']:.1f} | {row['fold_s']:.1f} | {row.get('error', row['verdict'])} "
        f"| {notes} |"
    )


def replace_rows(path: Path, rows: list[dict]) -> None:
    """Each row's line in the page's table replaced by its new one; a model not yet in
    the table is added at its end (and the header, if its columns changed)."""
    lines = path.read_text().split("\n")
    start = lines.index(SECTION)
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| model |"))
    rule = "|" + "---|" * (HEADER.count("|") - 1)
    lines[header : header + 2] = [HEADER, rule]
    end = header + 2
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    for row in rows:
        prefix = f"| {row['model']} |"
        at = next((i for i in range(header + 2, end) if lines[i].startswith(prefix)), None)
        if at is None:
            lines.insert(end, line(row))
            end += 1
        else:
            lines[at] = line(row)
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--only", metavar="TEXT", help="only the models whose label contains TEXT")
    parser.add_argument(
        "--kimm",
        choices=["family", "more", "all"],
        default="family",
        help="kimm models: one a family (default), more variants, or every one",
    )
    parser.add_argument(
        "--files",
        type=Path,
        metavar="DIR",
        help="keras2-libs: write the Keras 2 files into DIR and reuse those already there",
    )
    args = parser.parse_args()
    rows = []
    with keras_scratch() as workdir:
        groups = {
            "keras-hub": (hub_models, randomized),
            "keras-cv": (kerascv_models, calibrated),
            "kimm": (lambda: kimm_models(args.kimm), calibrated),
            "tf_keras": (lambda: tf_keras_models(workdir), randomized),
            # calibrated by tf_keras before saving
            "kecam": (lambda: kecam_models(workdir, args.only), lambda model: model),
        }
        named = [group for group in groups if args.only and group in args.only]
        if args.only and not named and "keras2-libs" in args.only:
            named = ["keras2-libs"]  # none of the other groups
        for group, (models, statistics) in groups.items():
            if named and group not in named:  # a group's models are built only when asked for
                continue
            for label, build in models():
                if args.only and args.only not in label:
                    continue
                rows.append(run(label, build, workdir, statistics))
                print(line(rows[-1]), flush=True)
        if args.only and any(args.only in f"keras2-libs {label}" for label in keras2_libs.MODELS):
            files = keras2_libs.library_models(workdir, args.only, args.files)
            for name, directory, path, error in files:
                if args.only not in name:
                    continue
                rows.append(keras2_libs.run_file(name, directory, path, error, workdir))
                print(line(rows[-1]), flush=True)
    table = markdown_table(HEADER, rows, line)
    print(table)
    if args.write and args.only:
        replace_rows(ROOT / "docs" / "applications.md", rows)
    elif args.write:
        from bench.docs import replace_section

        section = (
            f"{SECTION}\n\n`.venv/bin/python bench/third_party.py --write` (random weights, "
            "BN statistics randomised, kimm's measured on random images and kimm's models "
            "with logits out, one a family (`--kimm more` adds variants, `--kimm all` every "
            "model); the machine was shared, so read the seconds as rough; "
            '`--only "keras-hub vit" --write` reruns those rows; `exporter` also names the '
            "layers that went through tf2onnx alone, and `notes` says why they did and why "
            "each kept BN was kept). keras-hub models are built from their constructors with "
            "tiny configurations (`tests/hub_zoo.py`), never from a preset."
            + ADDED_SOURCES
            + f"\n\n{table}\n"
        )
        replace_section(ROOT / "docs" / "applications.md", SECTION, section)


if __name__ == "__main__":
    main()
