"""ONNX files written by PyTorch's own exporters (tests/data/torch, made by
bench/make_torch_onnx.py: the TorchScript exporter at opsets 13 and 17, the dynamo
exporter at opset 18), folded through the CLI: every BatchNormalization folded, the answers those of
the original file in ONNX Runtime (uploads of the same files:
tests/service/test_torch_uploads.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from folding.onnx_graph.decomposed import find_pairs
from folding.onnx_graph.graph import OnnxGraph
from tests.folding.test_cli import fold

DATA = Path(__file__).resolve().parents[1] / "data" / "torch"
FILES = sorted(DATA.glob("*.onnx"))
SHAPES = {
    "conv_bn_relu": (3, 16, 16),
    "depthwise": (3, 16, 16),
    "residual": (3, 12, 12),
    "linear_bn1d": (10,),
    "convtranspose_bn": (3, 8, 8),
    "linear_norm": (5, 6),
    "frozen_bn": (3, 8, 8),
    "dense_concat": (3, 8, 8),
    "identity_branch": (3, 8, 8),
    "rep_mixer": (3, 8, 8),
}


def batch_norms(path: Path) -> int:
    """The BatchNormalization nodes in the file, and the ``Mul`` + ``Add`` pairs an
    exporter decomposed a BN into (FrozenBatchNorm2d)."""
    model = onnx.load(str(path))
    nodes = Counter(node.op_type for node in model.graph.node)["BatchNormalization"]
    return nodes + len(find_pairs(OnnxGraph(model)))


def answers(model: Path | bytes, rows: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": rows})[0]


def rows_for(path: Path) -> np.ndarray:
    shape = SHAPES[path.stem.rsplit("_", 1)[0]]
    return np.random.default_rng(3).standard_normal((5, *shape)).astype(np.float32)


def test_the_files_are_the_ones_described():
    """Ten architectures, each from both exporters, every BN still in the file."""
    assert len(FILES) == 3 * len(SHAPES)
    for path in FILES:
        model = onnx.load(str(path))
        assert batch_norms(path) >= 1, path.name
        assert model.producer_name == "pytorch", (path.name, model.producer_name)
        expected_opset = int(path.stem[-2:])
        assert [o.version for o in model.opset_import if o.domain == ""] == [expected_opset]
        assert path.stat().st_size < 100_000


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_the_cli_folds_every_bn_of_a_torch_export(tmp_path, path):
    out = tmp_path / "out"
    result = fold(path, "-o", out, "--samples", "8")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exporter"] == "onnx" and report["verification"]["passed"]
    assert len(report["folded"]) == batch_norms(path) and report["not_folded"] == []
    assert batch_norms(out / "model.onnx") == 0
    rows = rows_for(path)
    np.testing.assert_allclose(
        answers(out / "model.onnx", rows), answers(path, rows), rtol=1e-4, atol=1e-5
    )


VARIANTS = sorted((DATA / "variants").glob("*.onnx"))


def test_the_variants_are_the_ones_described():
    """``conv_bn_relu`` as users also export it: half precision, opset 11, no constant
    folding, every module a local function (bench/make_torch_onnx.py --variants)."""
    assert [path.stem for path in VARIANTS] == [
        "conv_bn_relu_dynamo18_half",
        "conv_bn_relu_ts11",
        "conv_bn_relu_ts17_functions",
        "conv_bn_relu_ts17_half",
        "conv_bn_relu_ts17_nofold",
    ]
    functions = onnx.load(str(DATA / "variants" / "conv_bn_relu_ts17_functions.onnx"))
    assert [node.op_type for node in functions.graph.node] == ["ConvBnRelu"]
    held = {node.op_type for function in functions.functions for node in function.node}
    assert "BatchNormalization" in held  # one BatchNorm2d function, called twice
    for path in VARIANTS:
        assert path.stat().st_size < 100_000


@pytest.mark.parametrize("path", VARIANTS, ids=[path.stem for path in VARIANTS])
def test_the_cli_folds_every_bn_of_an_export_variant(tmp_path, path):
    out = tmp_path / "out"
    result = fold(path, "-o", out, "--samples", "8")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["passed"], report["verification"]
    assert len(report["folded"]) == 2 and report["not_folded"] == []
    folded = onnx.load(str(out / "model.onnx"))
    assert "BatchNormalization" not in {node.op_type for node in folded.graph.node}
    assert not folded.functions
    half = path.stem.endswith("_half")
    rows = rows_for(path.parent.parent / "conv_bn_relu_ts17.onnx")
    rows = rows.astype(np.float16) if half else rows
    want, got = answers(path, rows), answers(out / "model.onnx", rows)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=(2e-3 if half else 1e-5) * scale)
