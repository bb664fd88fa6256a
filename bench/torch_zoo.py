"""torchvision and timm architectures through both PyTorch ONNX exporters, folded; one table.

    .venv/bin/python bench/torch_zoo.py [--torch PYTHON] [--only TEXT] [--write] [--keep DIR]
    .venv/bin/python bench/torch_zoo.py --rows DIR/rows.json ... --write

Two stages in two Pythons. The export stage runs in a Python with torch, torchvision,
timm, onnx and onnxscript (``--torch``, default /tmp/torchzoo/bin/python; torch is too
large for the project's environment)::

    python3 -m venv /tmp/torchzoo
    /tmp/torchzoo/bin/pip install torch torchvision timm onnx onnxscript

(docs/applications.md's table: torch 2.14.1, torchvision 0.29.1, timm 1.0.31, onnx
1.23.2, onnxscript 0.7.2; folded with onnxruntime 1.31.1. torchvision's wheels need the
torch they were built for: 0.29 wants torch 2.14, so not the CPU-only 2.13 of
bench/make_torch_onnx.py's Python.)

It builds each model with random weights (``weights=None`` / ``pretrained=False``: no
download; torchvision's classification, segmentation (``weights_backbone=None``, the
``{"out": ...}`` dict flattened by the exporters), video (Conv3d + BatchNorm3d, input
``[2, 3, 4, side, side]``) and detection models (the backbone with its feature pyramid,
also ``resnet_fpn_backbone`` with FrozenBatchNorm2d as detection models build it), and
timm's families), sets every BatchNorm's statistics and affine parameters (FrozenBatchNorm2d's
buffers too) to seeded values far from an untrained BN's, and writes it with an open batch
axis (traced at batch 2; a fixed batch where the exporter cannot leave it open, marked
"static", whose one probe row makes the verdict inconclusive) and a small input (64-96 px
where the model takes it) to a scratch directory:

* ``ts17``: the TorchScript exporter (``dynamo=False``), opset 17, ``training=PRESERVE``
  (in ``EVAL`` mode it fuses Conv + BN itself);
* ``dynamo18``: the dynamo exporter, opset 18, ``optimize=False`` (onnxscript's
  optimiser fuses Conv + BN itself).

The fold stage (this Python) folds each file with ``folding.pipeline`` as the CLI does
and counts: the BNs the model has (BatchNorm and FrozenBatchNorm modules), the BNs in
the file (``BatchNormalization`` nodes, plus the ``Mul`` + ``Add`` pairs an exporter
decomposes a BN into), those foldserve reports folded and kept (with the reasons), those
left in model.onnx, and for comparison those left by ONNX Runtime's offline optimiser
(``optimized_model_filepath`` at ``ORT_ENABLE_EXTENDED``). ``--write`` replaces the
"PyTorch exports" section of docs/applications.md (``--keep DIR`` keeps the exports and
the rows in DIR/rows.json; ``--rows`` writes the table of such runs without folding).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## PyTorch exports"
EXPORTERS = ("ts17", "dynamo18")

# label -> (library, constructor, keyword arguments, input side)
MODELS = {
    "resnet18": ("torchvision", "resnet18", {}, 64),
    "resnet50": ("torchvision", "resnet50", {}, 64),
    "resnet18 FrozenBN": ("torchvision", "resnet18", {"norm_layer": "frozen"}, 64),
    "resnext50_32x4d": ("torchvision", "resnext50_32x4d", {}, 64),
    "wide_resnet50_2": ("torchvision", "wide_resnet50_2", {}, 64),
    "mobilenet_v2": ("torchvision", "mobilenet_v2", {}, 64),
    "mobilenet_v3_small": ("torchvision", "mobilenet_v3_small", {}, 64),
    "mobilenet_v3_large": ("torchvision", "mobilenet_v3_large", {}, 64),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", {}, 64),
    "efficientnet_v2_s": ("torchvision", "efficientnet_v2_s", {}, 64),
    "regnet_x_400mf": ("torchvision", "regnet_x_400mf", {}, 64),
    "regnet_y_400mf": ("torchvision", "regnet_y_400mf", {}, 64),
    "densenet121": ("torchvision", "densenet121", {}, 64),
    "shufflenet_v2_x0_5": ("torchvision", "shufflenet_v2_x0_5", {}, 64),
    "mnasnet0_5": ("torchvision", "mnasnet0_5", {}, 64),
    "squeezenet1_1": ("torchvision", "squeezenet1_1", {}, 64),
    "googlenet": ("torchvision", "googlenet", {"aux_logits": False, "init_weights": True}, 64),
    "inception_v3": (
        "torchvision",
        "inception_v3",
        {"aux_logits": False, "init_weights": True},
        96,
    ),
    "convnext_tiny": ("torchvision", "convnext_tiny", {}, 64),
    "maxvit_t": ("torchvision", "maxvit_t", {}, 224),
    "timm levit_128s": ("timm", "levit_128s", {"img_size": 96}, 96),
    "timm mixnet_s": ("timm", "mixnet_s", {}, 64),
    "timm ghostnet_100": ("timm", "ghostnet_100", {}, 64),
    "timm repvgg_a0": ("timm", "repvgg_a0", {}, 64),
    "timm dla34": ("timm", "dla34", {}, 64),
    "timm hrnet_w18_small": ("timm", "hrnet_w18_small", {}, 64),
    "timm cspresnet50": ("timm", "cspresnet50", {}, 64),
    "timm dpn68": ("timm", "dpn68", {}, 64),
    "timm res2net50_26w_4s": ("timm", "res2net50_26w_4s", {}, 64),
    "timm selecsls42b": ("timm", "selecsls42b", {}, 64),
    "timm rexnet_100": ("timm", "rexnet_100", {}, 64),
    "timm tinynet_e": ("timm", "tinynet_e", {}, 64),
    "timm fbnetc_100": ("timm", "fbnetc_100", {}, 64),
    "timm hardcorenas_a": ("timm", "hardcorenas_a", {}, 64),
    "timm mobilevit_xxs": ("timm", "mobilevit_xxs", {}, 64),
    "timm efficientformer_l1": ("timm", "efficientformer_l1", {}, 224),
    "timm ese_vovnet19b_dw": ("timm", "ese_vovnet19b_dw", {}, 64),
    "timm nf_resnet26": ("timm", "nf_resnet26", {}, 64),
    "timm fastvit_t8": ("timm", "fastvit_t8", {}, 64),
    "timm mobileone_s0": ("timm", "mobileone_s0", {}, 64),
    "timm resnet18d": ("timm", "resnet18d", {}, 64),
    # the rest of torchvision's families (those under ~150 MB), its segmentation and
    # video models and a detection backbone
    "resnet34": ("torchvision", "resnet34", {}, 64),
    "densenet169": ("torchvision", "densenet169", {}, 64),
    "efficientnet_b3": ("torchvision", "efficientnet_b3", {}, 64),
    "regnet_y_1_6gf": ("torchvision", "regnet_y_1_6gf", {}, 64),
    "regnet_x_3_2gf": ("torchvision", "regnet_x_3_2gf", {}, 64),
    "shufflenet_v2_x1_5": ("torchvision", "shufflenet_v2_x1_5", {}, 64),
    "mnasnet1_3": ("torchvision", "mnasnet1_3", {}, 64),
    "squeezenet1_0": ("torchvision", "squeezenet1_0", {}, 64),
    "fcn_resnet50": ("segmentation", "fcn_resnet50", {}, 64),
    "deeplabv3_mobilenet_v3_large": ("segmentation", "deeplabv3_mobilenet_v3_large", {}, 64),
    "lraspp_mobilenet_v3_large": ("segmentation", "lraspp_mobilenet_v3_large", {}, 64),
    "fasterrcnn_mobilenet_v3_large_fpn backbone": (
        "detection",
        "fasterrcnn_mobilenet_v3_large_fpn",
        {},
        64,
    ),
    "resnet18 FPN FrozenBN": ("fpn", "resnet18", {}, 64),
    "r3d_18": ("video", "r3d_18", {}, 32),
    "mc3_18": ("video", "mc3_18", {}, 32),
    "r2plus1d_18": ("video", "r2plus1d_18", {}, 32),
    # timm families not above
    "timm cspdarknet53": ("timm", "cspdarknet53", {}, 64),
    "timm cs3darknet_s": ("timm", "cs3darknet_s", {}, 64),
    "timm darknet53": ("timm", "darknet53", {}, 64),
    "timm gernet_s": ("timm", "gernet_s", {}, 64),
    "timm regnetz_b16": ("timm", "regnetz_b16", {}, 64),
    "timm resnest14d": ("timm", "resnest14d", {}, 64),
    "timm res2next50": ("timm", "res2next50", {}, 64),
    "timm tresnet_m": ("timm", "tresnet_m", {}, 64),
    "timm skresnet18": ("timm", "skresnet18", {}, 64),
    "timm seresnext26d_32x4d": ("timm", "seresnext26d_32x4d", {}, 64),
    "timm ecaresnet26t": ("timm", "ecaresnet26t", {}, 64),
    "timm resnetv2_50": ("timm", "resnetv2_50", {}, 64),
    "timm botnet26t_256": ("timm", "botnet26t_256", {"img_size": 128}, 128),
    "timm dla46x_c": ("timm", "dla46x_c", {}, 64),
    "timm vovnet39a": ("timm", "vovnet39a", {}, 64),
    "timm densenetblur121d": ("timm", "densenetblur121d", {}, 64),
    "timm xception41": ("timm", "xception41", {}, 64),
    "timm legacy_xception": ("timm", "legacy_xception", {}, 96),
    "timm mobilenetv3_large_100": ("timm", "mobilenetv3_large_100", {}, 64),
    "timm tf_efficientnet_b0": ("timm", "tf_efficientnet_b0", {}, 64),
    "timm mnasnet_100": ("timm", "mnasnet_100", {}, 64),
    "timm spnasnet_100": ("timm", "spnasnet_100", {}, 64),
    "timm lcnet_050": ("timm", "lcnet_050", {}, 64),
    "timm ghostnetv2_100": ("timm", "ghostnetv2_100", {}, 64),
    "timm repghostnet_050": ("timm", "repghostnet_050", {}, 64),
    "timm mobilenetv4_conv_small": ("timm", "mobilenetv4_conv_small", {}, 64),
    "timm hgnetv2_b0": ("timm", "hgnetv2_b0", {}, 64),
    "timm repvit_m0_9": ("timm", "repvit_m0_9", {}, 64),
    "timm efficientvit_b0": ("timm", "efficientvit_b0", {}, 64),
    "timm efficientvit_m0": ("timm", "efficientvit_m0", {}, 224),
    "timm starnet_s1": ("timm", "starnet_s1", {}, 64),
    "timm mobilevitv2_050": ("timm", "mobilevitv2_050", {}, 64),
    "timm levit_conv_128s": ("timm", "levit_conv_128s", {"img_size": 96}, 96),
    "timm tiny_vit_5m_224": ("timm", "tiny_vit_5m_224", {}, 224),
    "timm xcit_nano_12_p16_224": ("timm", "xcit_nano_12_p16_224", {}, 64),
    "timm visformer_tiny": ("timm", "visformer_tiny", {}, 224),
    "timm efficientformerv2_s0": ("timm", "efficientformerv2_s0", {}, 224),
    "timm convmixer_768_32": ("timm", "convmixer_768_32", {}, 64),
    "timm nf_regnet_b0": ("timm", "nf_regnet_b0", {}, 64),
    "timm inception_next_tiny": ("timm", "inception_next_tiny", {}, 64),
}


def wanted(label: str, only: str | None) -> bool:
    """``label`` is one of those ``--only`` names (comma-separated parts of labels)."""
    return not only or any(part in label for part in only.split(","))


# -- export stage (in the torch Python) ------------------------------------------------


def _build(library: str, constructor: str, kwargs: dict):
    if library == "timm":
        import timm

        return timm.create_model(constructor, pretrained=False, **kwargs)
    import torchvision

    if library == "segmentation":  # a dict {"out": ...}: each exporter flattens it
        build = getattr(torchvision.models.segmentation, constructor)
        return build(weights=None, weights_backbone=None, aux_loss=False, **kwargs)
    if library == "video":
        return getattr(torchvision.models.video, constructor)(weights=None, **kwargs)
    if library == "detection":  # the backbone with its feature pyramid: a dict of maps
        build = getattr(torchvision.models.detection, constructor)
        return build(weights=None, weights_backbone=None, **kwargs).backbone
    if library == "fpn":  # what detection models build with pretrained backbones
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        from torchvision.ops.misc import FrozenBatchNorm2d

        return resnet_fpn_backbone(
            backbone_name=constructor,
            weights=None,
            norm_layer=FrozenBatchNorm2d,
            trainable_layers=5,
            **kwargs,
        )

    if kwargs.get("norm_layer") == "frozen":
        from torchvision.ops.misc import FrozenBatchNorm2d

        kwargs = {**kwargs, "norm_layer": FrozenBatchNorm2d}
    return getattr(torchvision.models, constructor)(weights=None, **kwargs)


def _with_statistics(module, seed: int) -> int:
    """Every BN's (and FrozenBatchNorm2d's) statistics and affine parameters set to
    seeded values; eval mode. Returns how many BNs the model has."""
    import torch
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for layer in module.modules():
            frozen = isinstance(layer, FrozenBatchNorm2d)
            if not (frozen or isinstance(layer, nn.modules.batchnorm._BatchNorm)):
                continue
            count += 1
            n = layer.running_mean.numel()
            layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            layer.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
            if frozen or layer.affine:
                layer.weight.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
                layer.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    module.eval()
    return count


def _export(module, sample, path: Path, exporter: str, dynamic: bool) -> None:
    """``module`` written by ``exporter``; ``dynamic``: with an open batch axis."""
    import warnings

    import torch

    if exporter == "dynamo18":
        shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
        program = torch.onnx.export(
            module,
            (sample,),
            dynamo=True,
            opset_version=18,
            optimize=False,
            dynamic_shapes=shapes,
            verbose=False,
        )
        program.save(str(path))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=17,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None,
        )


def export_all(out: Path, only: str | None) -> None:
    """Every model through every exporter into ``out``; ``out/manifest.json`` lists them."""
    import contextlib
    import io

    import torch

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for seed, (label, (library, constructor, kwargs, side)) in enumerate(MODELS.items()):
        if not wanted(label, only):
            continue
        torch.manual_seed(seed)
        try:
            module = _build(library, constructor, kwargs)
            bns = _with_statistics(module, seed)
        except Exception as error:
            entries.append({"model": label, "error": f"build: {str(error).splitlines()[0]}"})
            continue
        shape = (2, 3, 4, side, side) if library == "video" else (2, 3, side, side)
        sample = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        for exporter in EXPORTERS:
            path = out / f"{label.replace(' ', '_')}_{exporter}.onnx"
            entry = {"model": label, "exporter": exporter, "bns": bns, "side": side}
            started = time.perf_counter()
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        _export(module, sample, path, exporter, dynamic=True)
                    except Exception:  # a model the exporter cannot trace with an open batch
                        _export(module, sample, path, exporter, dynamic=False)
                        entry["static"] = True
                entry["file"] = str(path)
            except Exception as error:
                entry["error"] = f"export: {str(error).strip().splitlines()[0][:120]}"
            entry["export_s"] = time.perf_counter() - started
            entries.append(entry)
            print(json.dumps(entry), file=sys.stderr, flush=True)
            (out / "manifest.json").write_text(json.dumps(entries, indent=1))
    (out / "manifest.json").write_text(json.dumps(entries, indent=1))


# -- fold stage (in the project's Python) ----------------------------------------------


def bns_in(path: Path) -> tuple[int, int]:
    """(BatchNormalization nodes, decomposed Mul + Add pairs) in the file at ``path``."""
    import onnx
    import onnx.inliner

    from folding.onnx_graph.decomposed import find_pairs
    from folding.onnx_graph.graph import OnnxGraph

    model = onnx.load(str(path))
    if model.functions:  # a module exported as a local function: its BNs count too
        model = onnx.inliner.inline_local_functions(model)
    nodes = Counter(node.op_type for node in model.graph.node)["BatchNormalization"]
    pairs = [pair for pair in find_pairs(OnnxGraph(model)) if not pair.normalizes]
    return nodes, len(pairs)  # a GroupNorm's Mul + Add is no BN


def left_by_runtime(path: Path, out: Path) -> tuple[int, int] | str:
    """The BNs (nodes, pairs) left by ONNX Runtime's offline optimiser."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out / "ort.onnx")
    options.log_severity_level = 3
    try:
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        return f"error: {str(error).splitlines()[0][:80]}"
    return bns_in(out / "ort.onnx")


def fold_one(entry: dict, scratch: Path, samples: int = 8) -> dict:
    """One file folded as the CLI does (``samples`` probe rows); its table row."""
    from folding.errors import FoldingError
    from folding.options import FoldOptions, VerifyOptions
    from folding.pipeline import fold_to_directory
    from folding.sources import open_source

    row = dict(entry)
    if "file" not in entry:
        return row
    path = Path(entry["file"])
    row["mb"] = path.stat().st_size / 1e6
    row["in_file"] = bns_in(path)
    out = scratch / path.stem
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    report = None
    try:
        options = FoldOptions(verify=VerifyOptions(samples=samples))
        report = fold_to_directory(open_source(path, options), out, options)
    except FoldingError as error:
        row["error"] = str(error).splitlines()[0][:120]
        report = getattr(error, "report", None)
    row["fold_s"] = time.perf_counter() - started
    if report is not None:
        row["folded"] = len(report.folded)
        row["kept"] = [(entry.bn, entry.reason) for entry in report.not_folded]
        if report.verification is not None:
            row["verdict"] = report.verification.verdict
            row["fold_error"] = report.verification.fold_error
        if (out / "model.onnx").exists():
            row["left"] = bns_in(out / "model.onnx")
    row["ort"] = left_by_runtime(path, out)
    shutil.rmtree(out)  # three copies of the weights: a zoo's worth fills a disk
    return row


def _count(pair) -> str:
    if isinstance(pair, str) or pair is None:
        return "-" if pair is None else pair
    nodes, pairs = pair
    return f"{nodes}" + (f" + {pairs} Mul/Add" if pairs else "")


def _reasons(kept: list) -> str:
    """The commonest reasons, node names left out (``'…'``), with how often each."""
    counts = Counter(re.sub(r"'[^']*'", "'…'", reason) for _, reason in kept)
    cut = [(reason if len(reason) < 200 else f"{reason[:200]}…", n) for reason, n in counts.items()]
    top = sorted(cut, key=lambda item: -item[1])[:2]
    more = "; …" if len(counts) > 2 else ""
    return "; ".join(f"{n}x {reason}" for reason, n in top) + more


HEADER = (
    "| model | exporter | BNs | in file | folded | kept (why) | left in model.onnx "
    "| left by ORT | verdict (fold error) |"
)


def line(row: dict) -> str:
    exporter = row.get("exporter", "-") + (", static batch" if row.get("static") else "")
    start = f"| {row['model']} | {exporter} | {row.get('bns', '-')} |"
    if "folded" not in row:
        return f"{start} {_count(row.get('in_file'))} | - | - | - | - | {row.get('error', '-')} |"
    kept = row["kept"]
    why = f"{len(kept)}" + (f" ({_reasons(kept)})" if kept else "")
    verdict = row.get("error") or f"{row.get('verdict', '-')} ({row.get('fold_error', 0):.1e})"
    reported, in_file = row["folded"] + len(kept), sum(row["in_file"])
    # every BN module reported, and nothing reported that is not in the file (NF-ResNet's
    # weight standardisation is a training-mode BatchNormalization node of no module)
    accounted = "" if row["bns"] <= reported <= max(in_file, row["bns"]) else " **miscounted**"
    return (
        f"{start} {_count(row['in_file'])} | {row['folded']}{accounted} | {why} "
        f"| {_count(row.get('left'))} | {_count(row.get('ort'))} | {verdict} |"
    )


def fold_all(args: argparse.Namespace) -> list[dict]:
    """Export (unless ``--keep`` holds the files already) and fold; the rows."""
    with tempfile.TemporaryDirectory() as scratch:
        files = args.keep or Path(scratch) / "onnx"
        files.mkdir(parents=True, exist_ok=True)
        if not (files / "manifest.json").exists():
            command = [args.torch, __file__, "--export-into", str(files)]
            subprocess.run(command + (["--only", args.only] if args.only else []), check=True)
        entries = json.loads((files / "manifest.json").read_text())
        rows = []
        for entry in entries:
            if not wanted(entry["model"], args.only):
                continue
            rows.append(fold_one(entry, Path(scratch), args.samples))
            print(line(rows[-1]), flush=True)
            if args.keep:
                (files / "rows.json").write_text(json.dumps(rows, indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default="/tmp/torchzoo/bin/python")
    parser.add_argument(
        "--only", metavar="TEXT", help="models whose label contains it (or a comma-separated part)"
    )
    parser.add_argument("--samples", type=int, default=8, help="probe rows per fold")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--keep", type=Path, help="export into (and keep) this directory")
    parser.add_argument(
        "--rows", type=Path, nargs="+", help="the table from the rows.json of earlier --keep runs"
    )
    parser.add_argument("--export-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_into is not None:  # the export stage, in the torch Python
        export_all(args.export_into, args.only)
        return
    sys.path.insert(0, str(ROOT))
    if args.rows:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
    else:
        rows = fold_all(args)
    rule = "|" + "---|" * (HEADER.count("|") - 1)
    folded = [row for row in rows if "folded" in row]
    ort = [row["ort"] for row in folded if isinstance(row.get("ort"), (list, tuple))]
    totals = (
        f"{len(folded)} files: {sum(row['bns'] for row in folded)} BN modules, "
        f"{sum(row['folded'] for row in folded)} folded by foldserve, "
        f"{sum(len(row['kept']) for row in folded)} kept with a reason; ONNX Runtime's "
        f"optimiser leaves {sum(sum(counts) for counts in ort)} of them."
    )
    table = "\n".join([HEADER, rule, *map(line, rows)])
    print(table)
    print(totals)
    if args.write:
        from bench.docs import replace_section

        section = (
            f"{SECTION}\n\n`.venv/bin/python bench/torch_zoo.py --write` (torch, torchvision and "
            "timm in their own Python: see the script; random weights, every BN's statistics "
            "randomised, open batch axis, 64-224 px). `BNs`: BatchNorm and FrozenBatchNorm "
            "modules in the model; `in file`: BatchNormalization nodes (and the Mul + Add pairs an "
            "exporter decomposed a BN into); `left by ORT`: what ONNX Runtime's offline "
            "optimiser (ORT_ENABLE_EXTENDED) leaves of them; `static batch`: the exporter "
            "could not leave the batch axis open. NF-ResNet's BatchNormalization nodes are "
            "its weight standardisation (training mode, on the weights), no BN module. "
            "The dynamo exporter (torch 2.14) writes the zero bias of a `Conv3d(bias=False)` "
            "with shape `[C, 2]`, which ONNX Runtime refuses to run (the video rows). "
            "Other exports of the same models (bench/make_torch_onnx.py --variants and "
            "tests/folding/test_torch_onnx.py; checked by hand on resnet18, "
            "mobilenet_v3_small and mixnet_s): TorchScript at opsets 11 and 13, "
            "`do_constant_folding=False`, a static batch, `model.half()` through both "
            "exporters (judged in float16), every module a local function "
            "(`export_modules_as_functions`), weights in an external `.data` file (the "
            "command line reads it from the model's folder; an upload is one file and is "
            "refused, naming the tensor) fold every BN; `TrainingMode.EVAL` and the dynamo "
            "exporter's default `optimize=True` leave no BN to fold (the exporter fused "
            "them)."
            f"\n\n{totals}\n\n{table}\n"
        )
        replace_section(ROOT / "docs" / "applications.md", SECTION, section)


if __name__ == "__main__":
    main()
