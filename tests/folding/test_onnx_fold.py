"""Folding on the ONNX graph: every fold kind, checked by ONNX Runtime (original vs folded)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from folding.onnx_graph import fold_onnx
from folding.pipeline import fold_to_directory
from folding.sources.onnx.source import OnnxSource
from tests.folding.onnx_graph.helpers import run

RNG = np.random.default_rng(0)


def const(name, shape, low=-1.0, high=1.0):
    return numpy_helper.from_array(RNG.uniform(low, high, shape).astype(np.float32), name)


def bn(name, x, y, channels):
    initializers = [
        const(f"{name}_gamma", (channels,), 0.5, 1.5),
        const(f"{name}_beta", (channels,)),
        const(f"{name}_mean", (channels,)),
        const(f"{name}_var", (channels,), 0.2, 2.0),
    ]
    node = helper.make_node(
        "BatchNormalization",
        [x, *[t.name for t in initializers]],
        [y],
        name=name,
        epsilon=1e-3,
    )
    return node, initializers


def model(nodes, initializers, inputs, outputs):
    rank = len(inputs[0][1])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * rank) for n in outputs],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def conv_then_bn(group=1, channels_in=4, channels_out=6):
    weight = const("w", (channels_out, channels_in // group, 3, 3))
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", group=group, pads=[1] * 4)
    norm, extra = bn("bn", "c", "y", channels_out)
    return model([conv, norm], [weight, *extra], [("x", [2, channels_in, 5, 5])], ["y"])


def conv_transpose_then_bn(group):
    weight = const("w", (4, 6 // group, 3, 3))  # [in, out/group, k, k]
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["c"], name="deconv", group=group, strides=[2, 2]
    )
    norm, extra = bn("bn", "c", "y", 6)
    return model([node, norm], [weight, *extra], [("x", [2, 4, 4, 4])], ["y"])


def gemm_then_bn(trans_b):
    weight = const("w", (5, 3) if trans_b else (3, 5))
    bias = const("b", (5,))
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=trans_b)
    norm, extra = bn("bn", "g", "y", 5)
    return model([gemm, norm], [weight, bias, *extra], [("x", [4, 3])], ["y"])


def matmul_add_then_bn():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
    ]
    norm, extra = bn("bn", "a", "y", 5)
    return model(
        [*nodes, norm], [const("w", (3, 5)), const("b", (5,)), *extra], [("x", [4, 3])], ["y"]
    )


def bn_then_conv():
    norm, extra = bn("bn", "x", "n", 4)
    conv = helper.make_node("Conv", ["n", "w", "cb"], ["y"], name="conv")
    return model(
        [norm, conv],
        [*extra, const("w", (6, 4, 3, 3)), const("cb", (6,))],
        [("x", [2, 4, 5, 5])],
        ["y"],
    )


def bn_then_gemm():
    norm, extra = bn("bn", "x", "n", 3)
    gemm = helper.make_node("Gemm", ["n", "w"], ["y"], name="gemm", transB=1)
    return model([norm, gemm], [*extra, const("w", (5, 3))], [("x", [4, 3])], ["y"])


def conv_then_mul_add():
    """What exporters leave of a BN: Mul and Add with per-channel constants."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Mul", ["c", "s"], ["m"], name="scale"),
        helper.make_node("Add", ["m", "t"], ["y"], name="shift"),
    ]
    initializers = [
        const("w", (6, 4, 3, 3)),
        const("s", (1, 6, 1, 1), 0.5, 2.0),
        const("t", (6, 1, 1)),
    ]
    return model(nodes, initializers, [("x", [2, 4, 5, 5])], ["y"])


CASES = {
    "conv": (conv_then_bn, 1),
    "grouped conv": (lambda: conv_then_bn(group=2), 1),
    "depthwise conv": (lambda: conv_then_bn(group=4, channels_in=4, channels_out=8), 1),
    "grouped conv transpose": (lambda: conv_transpose_then_bn(2), 1),
    "conv transpose": (lambda: conv_transpose_then_bn(1), 1),
    "gemm": (lambda: gemm_then_bn(0), 1),
    "gemm transB": (lambda: gemm_then_bn(1), 1),
    "matmul + add": (matmul_add_then_bn, 1),
    "bn before conv": (bn_then_conv, 1),
    "bn before gemm": (bn_then_gemm, 1),
    "mul/add after conv": (conv_then_mul_add, 1),
}


@pytest.mark.parametrize("case", CASES)
def test_fold_kind_matches_onnx_runtime(case):
    build, folds = CASES[case]
    original = build()
    result = fold_onnx(original)
    feed = {
        original.graph.input[0].name: RNG.normal(
            size=[d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
        ).astype(np.float32)
    }
    (want,) = run(original, feed)
    (got,) = run(result.model, feed)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert len(result.folded) == folds
    assert not any(n.op_type == "BatchNormalization" for n in result.model.graph.node)
    assert len(result.model.graph.node) < len(original.graph.node)


def initializer_bytes(proto):
    return sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)


@pytest.mark.parametrize("case", CASES)
def test_folded_model_keeps_no_replaced_weights(case):
    """Each fold writes fresh weights; the ones they replace leave the file."""
    original = CASES[case][0]()
    folded = fold_onnx(original).model
    read = {name for node in folded.graph.node for name in node.input}
    unread = [t.name for t in folded.graph.initializer if t.name not in read]
    assert unread == []
    assert initializer_bytes(folded) <= initializer_bytes(original)


def test_shared_tensor_and_graph_output_are_not_folded():
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    norm, extra = bn("bn", "c", "y", 6)
    side = helper.make_node("Relu", ["c"], ["side"], name="side")
    original = model(
        [conv, norm, side], [const("w", (6, 4, 1, 1)), *extra], [("x", [1, 4, 3, 3])], ["y", "side"]
    )
    result = fold_onnx(original)
    assert result.folded == []
    (entry,) = result.not_folded
    assert "feeds 2 nodes" in entry.reason


def decomposed_bn(producer_op=None):
    """Conv (with a BiasAdd-style Add) [-> ``producer_op``] -> Mul + Add, as tf2onnx
    writes a Keras 3 BN; the Mul/Add scope is the BN's name."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv/Conv2D"),
        helper.make_node("Add", ["c", "cb"], ["cbias"], name="conv/BiasAdd"),
    ]
    if producer_op == "Concat":
        nodes.append(helper.make_node("Concat", ["cbias", "x"], ["p"], name="cat", axis=1))
    channels, scaled = (10, "p") if producer_op == "Concat" else (6, "cbias")
    nodes += [
        helper.make_node("Mul", [scaled, "s"], ["m"], name="bn/batchnorm/mul_1"),
        helper.make_node("Add", ["m", "t"], ["y"], name="bn/batchnorm/add_1"),
    ]
    initializers = [
        const("w", (6, 4, 1, 1)),
        const("cb", (1, 6, 1, 1)),
        const("s", (1, channels, 1, 1), 0.5, 2.0),
        const("t", (1, channels, 1, 1)),
    ]
    return model(nodes, initializers, [("x", [2, 4, 3, 3])], ["y"])


def test_decomposed_bn_is_one_entry_and_a_conv_bias_is_none():
    result = fold_onnx(decomposed_bn())
    assert [(e.bn, e.into) for e in result.folded] == [("bn/batchnorm (Mul + Add)", "conv/Conv2D")]
    assert result.not_folded == []
    assert {n.op_type for n in result.model.graph.node} == {"Conv"}


def test_decomposed_bn_that_stays_is_reported():
    original = decomposed_bn("Concat")
    result = fold_onnx(original)
    assert result.folded == []
    (entry,) = result.not_folded
    assert entry.bn == "bn/batchnorm (Mul + Add)"
    assert "Concat" in entry.reason
    assert entry.stats.channels == 10
    feed = {"x": RNG.normal(size=[2, 4, 3, 3]).astype(np.float32)}
    np.testing.assert_allclose(run(result.model, feed)[0], run(original, feed)[0], rtol=1e-5)


def test_fold_to_directory_verifies_and_reports(tmp_path):
    report = fold_to_directory(OnnxSource(conv_then_bn(group=2), "convnet"), tmp_path)
    assert report.exporter == "onnx"
    assert report.verification.passed and report.verification.fold_error < 1e-5
    assert report.onnx["unfolded"].op_counts["BatchNormalization"] == 1
    assert "BatchNormalization" not in report.onnx["folded"].op_counts
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "report.json").is_file()


def test_cli_folds_an_onnx_file(tmp_path):
    from tests.folding.test_cli import fold

    source = tmp_path / "net.onnx"
    source.write_bytes(gemm_then_bn(1).SerializeToString())
    result = fold(source, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "verification passed" in result.stdout
    folded = onnx.load(tmp_path / "out" / "model.onnx")
    assert [node.op_type for node in folded.graph.node] == ["Gemm"]


def test_onnx_entries_carry_diagnostics(tmp_path):
    """A BN with one channel's gamma at zero is a dead channel, in ONNX files too."""
    original = conv_then_bn()
    for tensor in original.graph.initializer:
        if tensor.name == "bn_gamma":
            gamma = numpy_helper.to_array(tensor).copy()
            gamma[2] = 0.0
            tensor.CopyFrom(numpy_helper.from_array(gamma, "bn_gamma"))
    report = fold_to_directory(OnnxSource(original), tmp_path)
    (entry,) = report.folded
    assert entry.diagnostics.dead_channels == [2]
    assert report.diagnostics_summary["flagged"] == 1


def save_with_external_data(proto, path):
    """As ``torch.onnx.export`` does by default: the weights in ``<name>.data`` beside it."""
    onnx.save(
        onnx.ModelProto.FromString(proto.SerializeToString()),  # onnx.save changes its model
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
        size_threshold=0,
    )


def test_cli_reads_external_weights_beside_the_model(tmp_path):
    from tests.folding.test_cli import fold

    original = conv_then_bn()
    source = tmp_path / "net.onnx"
    save_with_external_data(original, source)
    result = fold(source, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    folded = onnx.load(tmp_path / "out" / "model.onnx")
    assert [node.op_type for node in folded.graph.node] == ["Conv"]
    feed = {"x": RNG.normal(size=[2, 4, 5, 5]).astype(np.float32)}
    np.testing.assert_allclose(run(folded, feed)[0], run(original, feed)[0], rtol=1e-4, atol=1e-5)


def test_external_weights_outside_the_model_folder_are_refused(tmp_path):
    from folding.errors import ModelLoadError
    from folding.sources.onnx.source import load_onnx

    (tmp_path / "secret").write_bytes(b"\0" * 4096)
    folder = tmp_path / "model"
    folder.mkdir()
    source = folder / "net.onnx"
    save_with_external_data(conv_then_bn(), source)
    with pytest.raises(ModelLoadError, match="upload one self-contained file"):
        load_onnx(source)  # an upload: never read another file
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret"
    onnx.save(proto, str(source))
    with pytest.raises(ModelLoadError, match="not a file beside it"):
        load_onnx(source, external_data=True)


def test_reference_that_differs_is_an_export_failure_not_a_fold_one(tmp_path):
    """The reference (the SavedModel an ONNX graph came from) differs by 1%: the
    unfolded export is at fault, and the message does not blame folding."""
    from folding.errors import VerificationError

    original = conv_then_bn()
    names = [value.name for value in original.graph.input]

    def reference(probes):
        return [output * 1.01 for output in run(original, dict(zip(names, probes, strict=True)))]

    with pytest.raises(VerificationError) as raised:
        converted = OnnxSource(
            original, reference=reference, reference_name="the model it was converted from"
        )
        fold_to_directory(converted, tmp_path)
    verification = raised.value.report.verification
    assert verification.failure == "export"
    assert 0.005 < verification.export_error < 0.02 and verification.fold_error < 1e-5
    message = str(raised.value)
    assert message.startswith("export problem, not a folding one")
    assert "the model it was converted from" in message and "folding changed" not in message


def test_folding_an_onnx_file_imports_no_tensorflow(tmp_path):
    import subprocess
    import sys

    source = tmp_path / "net.onnx"
    source.write_bytes(gemm_then_bn(1).SerializeToString())
    script = (
        "import sys\n"
        "from folding.cli import main\n"
        f"code = main(['fold', {str(source)!r}, '-o', {str(tmp_path / 'out')!r}])\n"
        "print(code, sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_a_newer_ir_version_than_the_runtime_reads_is_lowered(tmp_path):
    from folding.sources.onnx.ir import runtime_ir_version
    from folding.sources.onnx.source import load_onnx

    newest = conv_then_bn()
    newest.ir_version = onnx.IR_VERSION  # what onnx's make_model writes
    if runtime_ir_version() >= onnx.IR_VERSION:
        pytest.skip("this ONNX Runtime reads every IR version onnx writes")
    source = tmp_path / "new.onnx"
    source.write_bytes(newest.SerializeToString())
    loaded = load_onnx(source)
    assert loaded.ir_version == runtime_ir_version()
    report = fold_to_directory(OnnxSource(loaded), tmp_path)
    assert report.verification.passed


def test_opsets_newer_than_the_runtime_reads_are_refused_saying_what_to_do(tmp_path):
    from folding.errors import ModelLoadError
    from folding.sources.onnx.ir import needed_ir_version, runtime_ir_version
    from folding.sources.onnx.source import load_onnx

    newest = conv_then_bn()
    newest.ir_version = onnx.IR_VERSION
    newest.opset_import[0].version = onnx.defs.onnx_opset_version()
    if needed_ir_version(newest) <= runtime_ir_version():
        pytest.skip("this ONNX Runtime reads the newest opset's IR version")
    source = tmp_path / "new.onnx"
    source.write_bytes(newest.SerializeToString())
    with pytest.raises(ModelLoadError) as raised:
        load_onnx(source)
    message = str(raised.value)
    assert f"ONNX IR version {onnx.IR_VERSION}" in message
    assert message.endswith("or install a newer onnxruntime")


def test_describe_false_leaves_the_numbers_to_describe():
    """The general exporter's mode: entries carry value ranges only, the full numbers
    come from ``describe`` and equal ``describe=True``'s; the folded graph is the same."""
    for original in (decomposed_bn(), decomposed_bn("Concat")):
        full, light = fold_onnx(original), fold_onnx(original, describe=False)
        assert light.model.SerializeToString() == full.model.SerializeToString()
        entries = [*full.folded, *full.not_folded]
        light_entries = [*light.folded, *light.not_folded]
        assert [e.bn for e in light_entries] == [e.bn for e in entries]
        for entry, short in zip(entries, light_entries, strict=True):
            assert entry.stats.per_channel is not None and entry.diagnostics is not None
            assert short.stats.per_channel is None and short.diagnostics is None
            assert short.stats.scale == entry.stats.scale
            assert light.describe(entry.bn) == (entry.stats, entry.diagnostics)
            scale = entry.stats.per_channel.scale  # to 7 significant digits
            np.testing.assert_allclose(light.scales[entry.bn], scale, rtol=1e-6)


def test_a_layer_scale_mul_folds_but_is_not_counted_as_a_bn(tmp_path):
    """timm's LayerScale (``x * gamma`` per channel after a 1x1 convolution) folds into the
    convolution; the report counts the model's one BatchNormalization, and says so."""
    from tests.folding.onnx_graph.helpers import Builder, array

    b = Builder()
    conv = b.bn(b.node("Conv", ["x", b.const("k", array((6, 4, 1, 1)))], "conv"), "bn", 6)
    fc2 = b.node("Conv", [b.node("Relu", [conv], "r"), b.const("k2", array((6, 6, 1, 1)))], "fc2")
    b.node("Mul", [fc2, b.const("ls_gamma", array((6, 1, 1), 0.1, 0.5))], "ls/Mul")
    original = b.model([("x", [2, 4, 5, 5])], ["ls/Mul"])
    report = fold_to_directory(OnnxSource(original, "layer_scale"), tmp_path)
    assert [entry.bn for entry in report.folded] == ["bn (BatchNormalization)"]
    assert report.not_folded == []
    assert any("1 per-channel Mul" in w and "ls/Mul" in w for w in report.warnings)
    assert "Mul" not in report.onnx["folded"].op_counts and report.verification.passed
