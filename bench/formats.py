"""SavedModels and PyTorch-exported ONNX files, folded as a user folds them; one table.

    .venv/bin/python bench/formats.py [--torch-python PATH] [--only NAME ...] [--write]

Every model is written here (``weights=None``, BN statistics randomised so that
folding changes the weights), in its own process, then folded with
``python -m service.cli fold SOURCE -o OUT`` and read back from ``report.json``.
The PyTorch rows need a Python with ``torch`` and ``onnx`` (``--torch-python``,
default: this one); without it they are skipped, and the table says so. Each
step is bounded by ``TIMEOUT`` seconds. With ``--write`` the table goes to
docs/formats.md (between its table markers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600

TF_MAKERS = textwrap.dedent(
    """
    import sys
    import numpy as np, tensorflow as tf, keras

    def randomise(model):
        rng = np.random.default_rng(0)
        for layer in model.layers:
            if layer.__class__.__name__ == "BatchNormalization":
                g, b, m, v = layer.get_weights()
                layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                                   rng.normal(0, 0.2, b.shape).astype("float32"),
                                   rng.normal(0, 0.2, m.shape).astype("float32"),
                                   rng.uniform(0.5, 2, v.shape).astype("float32")])

    def fused_bn_module(nchw):
        class Module(tf.Module):
            def __init__(self):
                rng = np.random.default_rng(1)
                self.w = tf.Variable(rng.normal(size=(3, 3, 3, 8)).astype("float32"))
                self.gamma = tf.Variable(rng.uniform(0.5, 1.5, 8).astype("float32"))
                self.beta = tf.Variable(rng.normal(size=8).astype("float32"))
                self.mean = tf.Variable(rng.normal(size=8).astype("float32"))
                self.var = tf.Variable(rng.uniform(0.5, 2, 8).astype("float32"))
            shape = [None, 3, 16, 16] if nchw else [None, None, None, 3]
            @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
            def serve(self, x):
                if nchw:
                    x = tf.transpose(x, [0, 2, 3, 1])
                y = tf.nn.conv2d(x, self.w, 1, "SAME")
                y = tf.compat.v1.nn.fused_batch_norm(
                    y, self.gamma, self.beta, self.mean, self.var, is_training=False)[0]
                y = tf.nn.relu(y)
                return {"y": tf.transpose(y, [0, 3, 1, 2]) if nchw else y}
        return Module()

    def embedding_module():
        class Module(tf.Module):
            def __init__(self):
                rng = np.random.default_rng(2)
                self.table = tf.Variable(rng.normal(size=(50, 6)).astype("float32"))
                self.w = tf.Variable(rng.normal(size=(6, 4)).astype("float32"))
                self.mean = tf.Variable(rng.normal(size=4).astype("float32"))
                self.var = tf.Variable(rng.uniform(0.5, 2, 4).astype("float32"))
            @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.int32, name="ids")])
            def serve(self, ids):
                h = tf.matmul(tf.reduce_mean(tf.gather(self.table, ids), axis=1), self.w)
                return {"y": tf.nn.batch_normalization(h, self.mean, self.var, None, None, 1e-3)}
        return Module()

    which, out = sys.argv[1], sys.argv[2]
    apps = {"MobileNetV2": (keras.applications.MobileNetV2, 96),
            "EfficientNetB0": (keras.applications.EfficientNetB0, 96),
            "ResNet50": (keras.applications.ResNet50, 64)}
    if which in apps:
        build, size = apps[which]
        model = build(weights=None, input_shape=(size, size, 3), classes=10)
        randomise(model)
        model.export(out, verbose=False)
    elif which == "tf_keras MobileNetV2":
        import tf_keras
        model = tf_keras.applications.MobileNetV2(
            weights=None, input_shape=(96, 96, 3), classes=10)
        randomise(model)
        model.save(out)
    else:
        module = {"fused BN, dynamic HxW": lambda: fused_bn_module(False),
                  "fused BN, NCHW input": lambda: fused_bn_module(True),
                  "embedding, int32 ids": embedding_module}[which]()
        tf.saved_model.save(module, out, signatures={"serving_default": module.serve})
    """
)

TORCH_MAKERS = textwrap.dedent(
    """
    import sys, warnings
    import torch, torch.nn as nn
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class SharedOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        def forward(self, x):
            y = self.b(self.c(x))
            return torch.relu(y) + torch.sigmoid(y)

    MODELS = {
        "Conv-BN-ReLU x2": lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),
        "grouped ConvTranspose-BN": lambda: nn.Sequential(
            nn.ConvTranspose2d(3, 6, 3, stride=2, groups=3), nn.BatchNorm2d(6), nn.ReLU()),
        "Linear-BN1d": lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 16 * 16, 16), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Linear(16, 5)),
        "BN before Conv": lambda: nn.Sequential(
            nn.BatchNorm2d(3), nn.Conv2d(3, 8, 1), nn.ReLU()),
        "depthwise + grouped 1x1": lambda: nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1, groups=3, bias=False), nn.BatchNorm2d(12),
            nn.ReLU6(), nn.Conv2d(12, 8, 1, groups=4, bias=False), nn.BatchNorm2d(8)),
        "residual (2 blocks)": lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            Block(8), Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)),
        "BN output used twice": SharedOutput,
    }
    name, mode, opset, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    model = MODELS[name]()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5); module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2); module.running_var.uniform_(0.5, 2)
    model.eval()
    options = dict(input_names=["x"], output_names=["y"], opset_version=opset)
    if mode == "dynamo":  # its default: weights in OUT.data beside the file
        options.update(dynamo=True, optimize=False)
    else:
        options.update(dynamo=False, do_constant_folding=False,
                       dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), out, **options)
    """
)

TF_ROWS = [
    ("MobileNetV2", "Keras 3 `model.export()`", 52),
    ("EfficientNetB0", "Keras 3 `model.export()`", 49),
    ("ResNet50", "Keras 3 `model.export()`", 53),
    ("tf_keras MobileNetV2", "tf_keras 2 `model.save()`", 52),
    ("fused BN, dynamic HxW", "`tf.saved_model.save(tf.Module)`", 1),
    ("fused BN, NCHW input", "`tf.saved_model.save(tf.Module)`", 1),
    ("embedding, int32 ids", "`tf.saved_model.save(tf.Module)`", 1),
]
TORCH_ROWS = [
    ("Conv-BN-ReLU x2", 2),
    ("grouped ConvTranspose-BN", 1),
    ("Linear-BN1d", 1),
    ("BN before Conv", 1),
    ("depthwise + grouped 1x1", 2),
    ("residual (2 blocks)", 5),
    ("BN output used twice", 1),
]
TORCH_MODES = [("legacy", 13), ("dynamo", 18)]


def run(command: list[str], label: str) -> subprocess.CompletedProcess | str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return f"{label} took over {TIMEOUT} s"


def fold_row(model: str, source_format: str, exporter: str, bns: int, source: Path) -> dict:
    out = source.parent / f"{source.name}.out"
    result = run([sys.executable, "-m", "service.cli", "fold", str(source), "-o", str(out)], model)
    row = {"model": model, "format": source_format, "exporter": exporter, "bns": bns}
    if isinstance(result, str) or result.returncode != 0:
        error = result if isinstance(result, str) else result.stderr.strip().splitlines()[-1]
        return {**row, "verdict": f"refused: {error[:120]}"}
    report = json.loads((out / "report.json").read_text())
    verification = report["verification"]
    kept = len(report["not_folded"])
    folded = len(report["folded"])
    sizes = report["onnx"]
    verdict = "ok" if verification["passed"] and folded + kept == bns and not kept else "check"
    return {
        **row,
        "folded": folded,
        "kept": kept,
        "fold_error": verification["fold_error"],
        "export_error": verification.get("export_error"),
        "kb": f"{sizes['unfolded']['bytes'] / 1e3:.0f} -> {sizes['folded']['bytes'] / 1e3:.0f}",
        "verdict": verdict,
    }


def tf_rows(work: Path, only: set[str]) -> list[dict]:
    maker = work / "make_tf.py"
    maker.write_text(TF_MAKERS)
    rows = []
    for model, exporter, bns in TF_ROWS:
        if only and model not in only:
            continue
        source = work / model.replace(" ", "_").replace(",", "")
        made = run([sys.executable, str(maker), model, str(source)], model)
        if isinstance(made, str) or made.returncode != 0:
            rows.append({"model": model, "verdict": "could not be built"})
            continue
        rows.append(fold_row(model, "SavedModel", exporter, bns, source))
        print(rows[-1], file=sys.stderr)
    return rows


def torch_rows(work: Path, python: str, only: set[str]) -> tuple[list[dict], str | None]:
    probe = run([python, "-c", "import torch, onnx; print(torch.__version__)"], "torch")
    if isinstance(probe, str) or probe.returncode != 0:
        return [], f"PyTorch rows skipped: no torch in {python}"
    maker = work / "make_torch.py"
    maker.write_text(TORCH_MAKERS)
    rows = []
    for model, bns in TORCH_ROWS:
        if only and model not in only:
            continue
        for mode, opset in TORCH_MODES:
            source = work / f"{model.replace(' ', '_')}_{mode}.onnx"
            made = run([python, str(maker), model, mode, str(opset), str(source)], model)
            exporter = f"torch {probe.stdout.strip()} {mode}, opset {opset}"
            if isinstance(made, str) or made.returncode != 0:
                rows.append({"model": model, "exporter": exporter, "verdict": "export failed"})
                continue
            rows.append(fold_row(model, "ONNX", exporter, bns, source))
            print(rows[-1], file=sys.stderr)
    return rows, None


def _number(row: dict, key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.1e}"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | format | exporter | BNs | folded / kept | fold error | export error "
        "| KB unfolded -> folded | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        counts = f"{row['folded']} / {row['kept']}" if "folded" in row else "-"
        lines.append(
            f"| {row['model']} | {row.get('format', '-')} | {row.get('exporter', '-')} "
            f"| {row.get('bns', '-')} | {counts} | {_number(row, 'fold_error')} "
            f"| {_number(row, 'export_error')} | {row.get('kb', '-')} | {row['verdict']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--write", action="store_true", help="update docs/formats.md")
    args = parser.parse_args()
    only = set(args.only)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        rows = tf_rows(work, only)
        more, skipped = torch_rows(work, args.torch_python, only)
        rows += more
    text = table(rows) + (f"\n\n{skipped}" if skipped else "")
    print(text)
    if args.write:
        doc = ROOT / "docs" / "formats.md"
        start, end = "<!-- table -->", "<!-- /table -->"
        content = doc.read_text()
        head, rest = content.split(start, 1)
        doc.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
