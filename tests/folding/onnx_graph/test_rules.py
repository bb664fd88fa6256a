"""Each ONNX rule on a hand-made equivalent of the pattern an exporter writes,
checked by ONNX Runtime (folded == unfolded within 1e-5) and by its report."""

import numpy as np
import pytest
from onnx import helper

from folding.onnx_graph import fold_onnx
from tests.folding.onnx_graph.helpers import Builder, array, assert_same_answers, op_count


def test_linear_without_bias_is_matmul_of_a_transposed_weight():
    """torch ``Linear(3, 6, bias=False)`` + ``BatchNorm1d(6)``: ``MatMul(x, Transpose(W))``."""
    b = Builder()
    weight_t = b.node("Transpose", [b.const("W", array((6, 3)))], "Wt", perm=[1, 0])
    b.bn(b.node("MatMul", ["x", weight_t], "m"), "y", 6)
    original = b.model([("x", [4, 3])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("y (BatchNormalization)", "m")]
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Add"]
    assert_same_answers(original, result.model)


def test_frozen_batch_norm_scale_computed_as_w_rsqrt_v_eps():
    """torchvision's FrozenBatchNorm2d: ``x * scale + (b - rm * scale)`` with
    ``scale = w * rsqrt(rv + eps)``, every term reshaped to ``[1, C, 1, 1]``."""
    b = Builder()
    shape = b.const("shape", np.array([1, -1, 1, 1], np.int64))
    w, bias, rm, rv = (
        b.node("Reshape", [b.const(f"{n}_raw", array((6,), 0.2, 2.0)), shape], n)
        for n in ("w", "b", "rm", "rv")
    )
    eps = b.const("eps", np.array(1e-5, np.float32))
    rsqrt = b.node("Reciprocal", [b.node("Sqrt", [b.node("Add", [rv, eps], "rv_eps")], "sd")], "r")
    scale = b.node("Mul", [w, rsqrt], "scale")
    shift = b.node("Sub", [bias, b.node("Mul", [rm, scale], "rm_scale")], "shift")
    conv = b.node("Conv", ["x", b.const("k", array((6, 4, 3, 3)))], "conv", pads=[1] * 4)
    b.node("Add", [b.node("Mul", [conv, scale], "bn/mul"), shift], "bn/add")
    original = b.model([("x", [2, 4, 5, 5])], [("bn/add", 4)])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("bn (Mul + Add)", "conv")]
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


def test_batch_norm_parameters_through_identity_nodes():
    """TorchScript shares equal initializers: an untrained BN's mean and beta are one
    zero vector, reached through Identity nodes."""
    b = Builder()
    zeros = b.const("zeros", np.zeros(6, np.float32))
    ones = b.const("ones", np.ones(6, np.float32))
    params = [
        b.node("Identity", [ones], "gamma"),
        b.node("Identity", [zeros], "beta"),
        b.node("Identity", [b.node("Identity", [zeros], "mean0")], "mean"),
        b.const("var", array((6,), 0.2, 2.0)),
    ]
    b.bn(b.node("Conv", ["x", b.const("k", array((6, 4, 1, 1)))], "conv"), "y", 6, params)
    original = b.model([("x", [2, 4, 3, 3])], ["y"])
    result = fold_onnx(original)
    assert len(result.folded) == 1 and result.not_folded == []
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("layout", ["reshape", "flatten", "transpose"])
def test_linear_norm_behind_a_layout_change(layout):
    """LeViT's linear-norm ``bn(linear(x).flatten(0, 1)).reshape_as(...)``, and
    ``BatchNorm1d`` on ``linear(x).transpose(1, 2)``."""
    b = Builder()
    matmul = b.node("MatMul", ["x", b.const("W", array((3, 6)))], "linear")
    if layout == "reshape":
        flat = b.node(
            "Reshape", [matmul, b.const("flat_shape", np.array([-1, 6], np.int64))], "flat"
        )
    elif layout == "flatten":
        flat = b.node(
            "Flatten",
            [b.node("Reshape", [matmul, b.const("s", np.array([10, 6], np.int64))], "r")],
            "flat",
            axis=1,
        )
    else:
        flat = b.node("Transpose", [matmul], "flat", perm=[0, 2, 1])
    normed = b.bn(flat, "bn", 6)
    if layout == "transpose":
        b.node("Relu", [normed], "y")
    else:
        b.node("Reshape", [normed, b.const("back", np.array([2, 5, 6], np.int64))], "y")
    original = b.model([("x", [2, 5, 3])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into, e.direction) for e in result.folded] == [
        ("bn (BatchNormalization)", "linear", "backward")
    ]
    assert op_count(result.model, "BatchNormalization") == 0
    assert_same_answers(original, result.model)


def test_layout_change_that_moves_the_features_keeps_the_bn():
    b = Builder()
    matmul = b.node("MatMul", ["x", b.const("W", array((3, 5)))], "linear")
    moved = b.node("Transpose", [matmul], "moved", perm=[2, 0, 1])  # [5, 2, 5]: features first
    b.bn(moved, "y", 2)
    original = b.model([("x", [2, 5, 3])], ["y"])
    result = fold_onnx(original)
    (entry,) = result.not_folded
    assert "moves its features off the axis" in entry.reason
    assert_same_answers(original, result.model)


def test_bn_after_a_concat_of_convolutions_folds_into_each():
    """MixConv: convolutions of different kernel sizes, concatenated, one BN."""
    b = Builder()
    small = b.node("Conv", ["x", b.const("k3", array((2, 4, 3, 3)))], "conv3", pads=[1] * 4)
    large = b.node("Conv", ["x", b.const("k5", array((3, 4, 5, 5)))], "conv5", pads=[2] * 4)
    grouped = b.node("Conv", ["x", b.const("kg", array((4, 2, 1, 1)))], "conv1", group=2)
    b.bn(b.node("Concat", [small, large, grouped], "cat", axis=1), "y", 9)
    original = b.model([("x", [2, 4, 6, 6])], ["y"])
    result = fold_onnx(original)
    ((entry),) = result.folded
    assert entry.into == "conv3, conv5, conv1" and entry.into_class == "Conv"
    assert op_count(result.model, "BatchNormalization") == 0
    assert_same_answers(original, result.model)


def test_concat_with_a_non_convolution_input_keeps_the_bn_and_says_why():
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((2, 4, 1, 1)))], "conv")
    b.bn(b.node("Concat", [conv, "x"], "cat", axis=1), "y", 6)
    original = b.model([("x", [2, 4, 3, 3])], ["y"])
    result = fold_onnx(original)
    (entry,) = result.not_folded
    assert "'cat' is a Concat whose input 'x' is a graph input" in entry.reason
    assert_same_answers(original, result.model)


def test_conv_bias_computed_at_run_time_keeps_the_bn():
    """A bias that is not a constant is not "no bias": folding as if it were is wrong
    by the bias times (scale - 1)."""
    b = Builder()
    bias = b.node("ReduceMean", ["b_in"], "bias", axes=[0], keepdims=0)  # a real run-time bias
    conv = b.node("Conv", ["x", b.const("k", array((6, 4, 3, 3))), bias], "conv", pads=[1] * 4)
    b.bn(conv, "y", 6)
    original = b.model([("x", [2, 4, 5, 5]), ("b_in", [3, 6])], ["y"])
    result = fold_onnx(original)
    assert result.folded == []
    (entry,) = result.not_folded
    assert "the bias of 'conv' ('bias') is computed at run time" in entry.reason
    assert op_count(result.model, "BatchNormalization") == 1
    assert_same_answers(original, result.model)


def test_a_computed_expression_that_is_constant_is_a_constant_bias():
    b = Builder()
    bias = b.node(
        "Cast", [b.node("Neg", [b.const("b", np.arange(6, dtype=np.float64))], "nb")], "bias", to=1
    )
    b.bn(b.node("Conv", ["x", b.const("k", array((6, 4, 1, 1))), bias], "conv"), "y", 6)
    original = b.model([("x", [2, 4, 3, 3])], ["y"])
    result = fold_onnx(original)
    assert len(result.folded) == 1
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


def test_unused_nodes_of_any_type_are_dropped():
    b = Builder()
    b.node("Expand", ["x", b.const("shape", np.array([3, 2, 4, 3, 3], np.int64))], "unused")
    b.node("Relu", [b.node("Sigmoid", ["x"], "dead")], "dead_too")
    b.bn(b.node("Conv", ["x", b.const("k", array((6, 4, 1, 1)))], "conv"), "y", 6)
    original = b.model([("x", [2, 4, 3, 3])], ["y"])
    result = fold_onnx(original)
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert {t.name for t in result.model.graph.initializer} == {"conv_folded_1", "conv_folded_2"}
    assert_same_answers(original, result.model)


def test_every_bn_is_reported_folded_or_kept_with_a_reason():
    """Parameters fed at run time, a BN on a graph input feeding two nodes, a BN in a
    subgraph: none is silently left."""
    b = Builder()
    params = b.bn_params("runtime", 4)
    params[2] = "mean_in"
    b.bn("x", "fed", 4, params)
    both = b.bn("x", "twice", 4)
    b.node("Add", [b.node("Relu", [both], "r1"), b.node("Sigmoid", [both], "s1")], "sum")
    inner = Builder()
    inner.bn("x", "inner_bn", 4)
    body = inner.nodes
    import onnx
    from onnx import helper

    then_graph = helper.make_graph(
        body,
        "then",
        [],
        [helper.make_tensor_value_info("inner_bn", onnx.TensorProto.FLOAT, [None] * 4)],
        inner.initializers,
    )
    b.nodes.append(
        helper.make_node(
            "If", ["cond"], ["branch"], name="if", then_branch=then_graph, else_branch=then_graph
        )
    )
    cond = helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])
    original = b.model(
        [("x", [2, 4, 3, 3]), ("mean_in", [4])],
        [("fed", 4), ("sum", 4), ("branch", 4)],
        extra_inputs=[cond],
    )
    result = fold_onnx(original)
    reasons = {entry.bn: entry.reason for entry in result.not_folded}
    assert set(reasons) == {"fed", "twice", "inner_bn"}
    assert "its mean 'mean_in' is computed at run time" in reasons["fed"]
    assert "feeds 2 nodes" in reasons["twice"]
    assert "inside the then_branch of 'if' (a If)" in reasons["inner_bn"]


def test_bn_before_a_padded_conv_is_kept_and_bn_before_a_valid_one_folds_forward():
    b = Builder()
    normed = b.bn("x", "bn", 4)
    b.node("Conv", [normed, b.const("k", array((6, 4, 3, 3))), b.const("cb", array((6,)))], "y")
    original = b.model([("x", [2, 4, 5, 5])], ["y"])
    result = fold_onnx(original)
    ((entry),) = result.folded
    assert entry.direction == "forward" and entry.into == "y"
    assert_same_answers(original, result.model)
    padded = Builder()
    normed = padded.bn("x", "bn", 4)
    padded.node("Conv", [normed, padded.const("k", array((6, 4, 3, 3)))], "y", pads=[1] * 4)
    original = padded.model([("x", [2, 4, 5, 5])], ["y"])
    (kept,) = fold_onnx(original).not_folded
    assert "pads its input" in kept.reason


def test_bn_on_axis_one_of_a_3d_matmul_output_is_not_its_features():
    """``[B, N, K] @ [K, C]`` then BN(axis 1 = N) with N == C: not the features."""
    b = Builder()
    b.bn(b.node("MatMul", ["x", b.const("W", array((3, 5)))], "m"), "y", 5)
    original = b.model([("x", [2, 5, 3])], ["y"])
    result = fold_onnx(original)
    (entry,) = result.not_folded
    assert "rank-3 MatMul output" in entry.reason
    assert_same_answers(original, result.model)


def test_bn_behind_an_identity_folds_into_the_conv_before_it():
    """The dynamo exporter writes ``torch.cat`` of one tensor (DenseNet's first layer of
    a block) as an ``Identity``; a BN after it reads the convolution's output unchanged."""
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((6, 4, 3, 3)))], "conv", pads=[1] * 4)
    b.bn(b.node("Identity", [conv], "cat"), "y", 6)
    original = b.model([("x", [2, 4, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("y (BatchNormalization)", "conv")]
    assert op_count(result.model, "BatchNormalization") == 0
    assert_same_answers(original, result.model)


def test_bn_behind_an_identity_read_twice_is_kept_and_says_why():
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((6, 4, 1, 1)))], "conv")
    b.bn(conv, "y", 6)
    b.node("Relu", [conv], "r")
    identity = b.node("Identity", [b.node("Conv", ["x", "k"], "conv2")], "cat")
    b.bn(identity, "z", 6)
    b.node("Relu", [identity], "s")
    original = b.model([("x", [2, 4, 5, 5])], ["y", "r", "z", "s"])
    result = fold_onnx(original)
    reasons = {e.bn: e.reason for e in result.not_folded}
    assert "the output of 'cat' feeds 2 nodes" in reasons["z"]
    assert "the output of 'conv' feeds 2 nodes" in reasons["y"]
    assert_same_answers(original, result.model)


def test_a_shape_reader_does_not_keep_a_linear_norm():
    """timm's LeViT ``linear(x).flatten(0, 1)`` -> BN -> ``.reshape_as(linear(x))``: the
    TorchScript exporter reads the MatMul's output twice, once by ``Shape``; the fold
    keeps its shape, so the BN folds."""
    b = Builder()
    matmul = b.node("MatMul", ["x", b.const("W", array((4, 6)))], "m")
    flat = b.node("Flatten", [matmul], "flat", axis=2)
    b.node("Reshape", [b.bn(flat, "bn", 6), b.node("Shape", [matmul], "shape")], "y")
    original = b.model([("x", [2, 5, 4])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("bn (BatchNormalization)", "m")]
    assert op_count(result.model, "BatchNormalization") == 0
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_identity_branch_bn_folds_into_the_convolution_it_is_added_to(groups):
    """RepVGG's block: ``bn_kxk(conv3x3(x)) + bn_1x1(conv1x1(x)) + bn_id(x)``; the
    identity BN goes into a convolution of the same ``x`` (here grouped or depthwise)."""
    b = Builder()
    k3 = b.const("k3", array((6, 6 // groups, 3, 3)))
    k1 = b.const("k1", array((6, 6 // groups, 1, 1)))
    wide = b.bn(b.node("Conv", ["x", k3], "c3", pads=[1] * 4, group=groups), "bn3", 6)
    narrow = b.bn(b.node("Conv", ["x", k1], "c1", group=groups), "bn1", 6)
    branches = b.node("Add", [wide, narrow], "sum")
    b.node("Relu", [b.node("Add", [branches, b.bn("x", "bn_id", 6)], "out")], "y")
    original = b.model([("x", [2, 6, 5, 5])], ["y"])
    result = fold_onnx(original)
    entries = {e.bn: (e.direction, e.into) for e in result.folded}
    assert entries["bn_id (BatchNormalization)"][0] == "parallel"
    assert len(entries) == 3 and result.not_folded == []
    assert op_count(result.model, "BatchNormalization") == 0
    assert op_count(result.model, "Add") == 1
    assert_same_answers(original, result.model)


def test_identity_branch_beside_a_conv_with_no_tap_in_place_is_kept():
    """A dilated 3x3 convolution padded [1, 3] keeps the size, but no tap reads the
    input at the output's own position: the BN stays, saying why."""
    b = Builder()
    kernel = b.const("k", array((6, 6, 3, 3)))
    conv = b.node("Conv", ["x", kernel], "c", dilations=[2, 2], pads=[1, 1, 3, 3])
    b.node("Add", [conv, b.bn("x", "bn_id", 6)], "y")
    original = b.model([("x", [2, 6, 6, 6])], ["y"])
    result = fold_onnx(original)
    (entry,) = result.not_folded
    assert entry.bn == "bn_id" and "no tap reads its input in place" in entry.reason
    assert_same_answers(original, result.model)


def test_subtracted_identity_bn_folds_negated_into_the_mixer():
    """FastViT's RepMixer: ``x + (bn(dwconv(x)) - norm(x))``; ``norm`` goes into the
    depthwise convolution with ``-scale`` on its centre tap and ``-shift`` in its bias."""
    b = Builder()
    kernel = b.const("k", array((6, 1, 3, 3)))
    mixer = b.bn(b.node("Conv", ["x", kernel], "dw", pads=[1] * 4, group=6), "mixer_bn", 6)
    mixed = b.node("Sub", [mixer, b.bn("x", "norm", 6)], "mixed")
    b.node("Add", ["x", mixed], "y")
    original = b.model([("x", [2, 6, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert {e.bn: e.direction for e in result.folded}["norm (BatchNormalization)"] == "parallel"
    assert result.not_folded == [] and op_count(result.model, "Sub") == 0
    assert_same_answers(original, result.model)


def test_a_sum_started_at_zero_does_not_hide_the_identity_branch():
    """timm's MobileOne block sums its branches from ``0``: ``bn(x) + 0 + conv(x)``; the
    ``+ 0`` goes, and the BN folds into the convolution beside it."""
    b = Builder()
    zero = b.const("zero", np.array(0.0, np.float32))
    started = b.node("Add", [b.bn("x", "identity", 6), zero], "start")
    conv = b.bn(b.node("Conv", ["x", b.const("k", array((6, 6, 1, 1)))], "conv"), "conv_bn", 6)
    b.node("Add", [started, conv], "y")
    original = b.model([("x", [2, 6, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert len(result.folded) == 2 and result.not_folded == []
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("source", ["Relu", "Conv"])
def test_bn_after_a_sum_of_convolutions_and_their_input_folds_into_them(source):
    """RepViT's ``bn(dwconv3x3(x) + conv1x1(x) + x)``: each convolution takes the scale,
    the first the shift, and ``x`` goes into the 3x3's centre tap. ``x`` may itself be
    a convolution's output (RepViT's first block, right after the stem)."""
    b = Builder()
    if source == "Relu":
        x = b.node("Relu", ["input"], "x")  # x also feeds a later residual Add
    else:
        x = b.node("Conv", ["input", b.const("stem", array((6, 6, 1, 1)))], "x")
    wide = b.node("Conv", [x, b.const("k3", array((6, 1, 3, 3)))], "dw", pads=[1] * 4, group=6)
    narrow = b.node("Conv", [x, b.const("k1", array((6, 1, 1, 1)))], "pw", group=6)
    total = b.node("Add", [b.node("Add", [wide, narrow], "sum"), x], "sum_x")
    b.node("Add", [b.bn(total, "bn", 6), x], "y")
    original = b.model([("input", [2, 6, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("bn (BatchNormalization)", "dw, pw")]
    assert op_count(result.model, "BatchNormalization") == 0 and op_count(result.model, "Add") == 2
    assert op_count(result.model, "Conv") == (2 if source == "Relu" else 3)
    assert_same_answers(original, result.model)


def test_bn_after_a_sum_with_a_term_no_convolution_reads_is_kept():
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((6, 6, 1, 1)))], "conv")
    b.bn(b.node("Add", [conv, "z"], "sum"), "bn", 6)
    shape = [2, 6, 4, 4]
    original = b.model([("x", shape), ("z", shape)], ["bn"])
    result = fold_onnx(original)
    (entry,) = result.not_folded
    assert "adds 'z', which no convolution in it reads in place" in entry.reason
    assert_same_answers(original, result.model)


@pytest.mark.parametrize(("groups", "inputs", "outputs"), [(4, 4, 8), (2, 4, 6), (1, 4, 6)])
def test_bn_before_a_valid_grouped_conv_folds_forward(groups, inputs, outputs):
    """Pre-activation nets' ``bn -> conv`` where the conv is depthwise (a channel
    multiplier of 2) or grouped: each group takes its own slice of the BN."""
    b = Builder()
    normed = b.bn("x", "bn", inputs)
    kernel = b.const("k", array((outputs, inputs // groups, 3, 3)))
    b.node("Conv", [normed, kernel, b.const("cb", array((outputs,)))], "y", group=groups)
    original = b.model([("x", [2, inputs, 6, 6])], ["y"])
    result = fold_onnx(original)
    assert [(e.into, e.direction) for e in result.folded] == [("y", "forward")]
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_bn_before_a_gemm_with_alpha_and_beta_folds_forward(trans_b):
    """``alpha * bn(x) W + beta * C``: alpha goes into W, beta into the bias."""
    b = Builder()
    normed = b.bn("x", "bn", 6)
    weight = b.const("W", array((5, 6) if trans_b else (6, 5)))
    bias = b.const("C", array((5,)))
    b.node("Gemm", [normed, weight, bias], "y", transB=trans_b, alpha=0.5, beta=2.0)
    original = b.model([("x", [3, 6])], ["y"])
    result = fold_onnx(original)
    assert [(e.into, e.direction) for e in result.folded] == [("y", "forward")]
    (gemm,) = result.model.graph.node
    assert {a.name: a.f for a in gemm.attribute if a.name in ("alpha", "beta")} == {
        "alpha": 1.0,
        "beta": 1.0,
    }
    assert_same_answers(original, result.model)


def test_channels_last_bn_before_a_transpose_folds_into_the_conv_after_it():
    """tf2onnx's Keras ``BatchNormalization`` in front of a ``Conv2D`` (NHWC): ``Mul``
    + ``Add`` on the last axis, then ``Transpose`` to NCHW, then ``Conv``."""
    b = Builder()
    scaled = b.node("Mul", ["x", b.const("scale", array((3,), 0.5, 1.5))], "bn/mul")
    shifted = b.node("Add", [scaled, b.const("shift", array((3,)))], "bn/add")
    nchw = b.node("Transpose", [shifted], "nchw", perm=[0, 3, 1, 2])
    b.node("Conv", [nchw, b.const("k", array((4, 3, 3, 3)))], "y")
    original = b.model([("x", [2, 6, 6, 3])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.direction) for e in result.folded] == [("bn (Mul + Add)", "forward")]
    assert [n.op_type for n in result.model.graph.node] == ["Transpose", "Conv"]
    assert_same_answers(original, result.model)


def test_bn_after_a_conv1d_written_as_unsqueeze_conv_squeeze_folds():
    """tf2onnx's ``Conv1D``: a 2-D ``Conv`` of ``Unsqueeze(x)``, ``Squeeze``\\d back,
    then the BN's ``Mul`` + ``Add`` on axis 1 of the 3-D result."""
    b = Builder()
    wide = b.node("Unsqueeze", ["x", b.const("at", np.array([2], np.int64))], "wide")
    conv = b.node("Conv", [wide, b.const("k", array((4, 3, 1, 3)))], "conv")
    narrow = b.node("Squeeze", [conv, b.const("axes", np.array([2], np.int64))], "narrow")
    scaled = b.node("Mul", [narrow, b.const("scale", array((1, 4, 1), 0.5, 1.5))], "bn/mul")
    b.node("Add", [scaled, b.const("shift", array((1, 4, 1)))], "bn/add")
    original = b.model([("x", [2, 3, 7])], ["bn/add"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("bn (Mul + Add)", "conv")]
    assert [n.op_type for n in result.model.graph.node] == ["Unsqueeze", "Conv", "Squeeze"]
    assert_same_answers(original, result.model)


def test_bn_after_a_squeeze_of_the_channel_axis_is_kept():
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((1, 3, 1, 1)))], "conv")
    narrow = b.node("Squeeze", [conv, b.const("axes", np.array([1], np.int64))], "narrow")
    b.bn(narrow, "y", 4)  # over the rows of a one-channel map: no channel of the conv
    original = b.model([("x", [2, 3, 4, 5])], [("y", 3)])
    (kept,) = fold_onnx(original).not_folded
    assert "removes the feature axis" in kept.reason


def test_bn_after_a_dense_on_a_sequence_reshaped_to_a_computed_shape_folds():
    """tf2onnx's ``Dense`` on ``[N, T, K]`` (``Tensordot``): ``Reshape(x, [-1, K])``,
    ``MatMul``, ``Reshape`` to ``Concat(Shape(x)[:2], [F])`` computed at run time."""
    b = Builder()
    flat = b.node("Reshape", ["x", b.const("rows", np.array([-1, 6], np.int64))], "flat")
    matmul = b.node("MatMul", [flat, b.const("W", array((6, 8)))], "dense/MatMul")
    sizes = b.node(
        "Gather", [b.node("Shape", ["x"], "shape"), b.const("free", np.array([0, 1]))], "sizes"
    )
    target = b.node("Concat", [sizes, b.const("features", np.array([8], np.int64))], "t", axis=0)
    back = b.node("Reshape", [matmul, b.node("Cast", [target], "target", to=7)], "dense")
    scaled = b.node("Mul", [back, b.const("scale", array((8,), 0.5, 1.5))], "bn/mul")
    b.node("Relu", [b.node("Add", [scaled, b.const("shift", array((8,)))], "bn/add")], "y")
    original = b.model([("x", [2, 5, 6])], ["y"])
    result = fold_onnx(original)
    assert [(e.bn, e.into) for e in result.folded] == [("bn (Mul + Add)", "dense/MatMul")]
    assert op_count(result.model, "Mul") == 0
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("opset", [7, 9])
def test_bn_of_an_old_opset_folds_and_its_training_form_is_kept(opset):
    """Opsets 7-13 have no ``training_mode``: the five-output form (running and saved
    statistics) is what asks for batch statistics, and ONNX Runtime uses them."""
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((4, 3, 3, 3)))], "conv", pads=[1] * 4)
    attributes = {"spatial": 1} if opset == 7 else {}
    b.node("BatchNormalization", [conv, *b.bn_params("bn", 4)], "y", **attributes)
    original = b.model([("x", [2, 3, 5, 5])], ["y"], opset=opset)
    result = fold_onnx(original)
    assert len(result.folded) == 1 and result.not_folded == []
    assert_same_answers(original, result.model)
    training = Builder()
    conv = training.node("Conv", ["x", training.const("k", array((4, 3, 3, 3)))], "conv")
    training.nodes.append(
        helper.make_node(
            "BatchNormalization",
            [conv, *training.bn_params("bn", 4)],
            ["y", "mean", "var", "saved_mean", "saved_var"],
            name="bn",
        )
    )
    (kept,) = fold_onnx(training.model([("x", [2, 3, 5, 5])], ["y"], opset=opset)).not_folded
    assert "training-mode form" in kept.reason


def test_bn_normalising_each_activation_is_kept():
    """Opset 7's ``spatial=0``: statistics per activation ``[C, H, W]``, not per channel."""
    b = Builder()
    conv = b.node("Conv", ["x", b.const("k", array((2, 3, 1, 1)))], "conv")
    params = [
        b.const(name, array((2, 4, 4), 0.5, 1.5)) for name in ("gamma", "beta", "mean", "var")
    ]
    b.node("BatchNormalization", [conv, *params], "y", spatial=0)
    original = b.model([("x", [2, 3, 4, 4])], ["y"], opset=7)
    (kept,) = fold_onnx(original).not_folded
    assert "spatial=0" in kept.reason


def test_bn_inside_a_local_function_folds():
    """TorchScript's ``export_modules_as_functions``: each module a local function
    called from the graph; the BN inside one is folded and reported."""
    b = Builder()
    b.const("k", array((4, 3, 3, 3)))
    params = b.bn_params("bn", 4)
    body = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn"),
    ]
    opsets = [helper.make_opsetid("", 17)]
    inputs = ["x", "w", "g", "b", "m", "v"]
    function = helper.make_function("local", "ConvBn", inputs, ["y"], body, opsets)
    b.nodes.append(helper.make_node("ConvBn", ["x", "k", *params], ["y"], domain="local"))
    original = b.model([("x", [2, 3, 6, 6])], ["y"], functions=[function])
    result = fold_onnx(original)
    assert len(result.folded) == 1 and result.not_folded == []
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    assert_same_answers(original, result.model)


def test_bn_after_a_pooled_conv_flattened_folds_into_the_conv():
    """A head: ``conv1x1(pool(x))`` flattened to ``[N, C]`` for a ``BatchNorm1d``."""
    b = Builder()
    pooled = b.node("GlobalAveragePool", ["x"], "pooled")
    conv = b.node("Conv", [pooled, b.const("k", array((6, 4, 1, 1)))], "head")
    b.bn(b.node("Flatten", [conv], "flat", axis=1), "y", 6)
    original = b.model([("x", [2, 4, 5, 5])], [("y", 2)])
    result = fold_onnx(original)
    assert [(e.into, e.direction) for e in result.folded] == [("head", "backward")]
    assert op_count(result.model, "BatchNormalization") == 0
    assert_same_answers(original, result.model)


@pytest.mark.parametrize("then", ["Conv", "Relu"])
def test_a_group_norms_mul_add_is_no_bn(then):
    """The TorchScript exporter's ``GroupNorm``: ``InstanceNormalization`` of a reshape,
    reshaped back, then ``Mul`` + ``Add``. Folded where it can be, never a BN."""
    b = Builder()
    grouped = b.node("Reshape", ["x", b.const("groups", np.array([0, 1, -1], np.int64))], "g")
    normed = b.node(
        "InstanceNormalization",
        [
            grouped,
            b.const("ones", np.ones(1, np.float32)),
            b.const("zero", np.zeros(1, np.float32)),
        ],
        "instance",
    )
    back = b.node("Reshape", [normed, b.const("shape", np.array([2, 4, 5, 5], np.int64))], "back")
    scaled = b.node("Mul", [back, b.const("gamma", array((4, 1, 1), 0.5, 1.5))], "gn/mul")
    shifted = b.node("Add", [scaled, b.const("beta", array((4, 1, 1)))], "gn/add")
    if then == "Conv":
        b.node("Conv", [shifted, b.const("k", array((6, 4, 1, 1)))], "y")
    else:
        b.node("Relu", [shifted], "y")
    original = b.model([("x", [2, 4, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert result.not_folded == []
    assert result.norm_affines == ({"gn (Mul + Add)"} if then == "Conv" else set())
    assert [e.bn for e in result.folded] == sorted(result.norm_affines)
    assert_same_answers(original, result.model)


def test_a_castlike_reading_only_the_dtype_does_not_keep_a_bn():
    """The dynamo exporter's ``CastLike(constant, x)`` reads only x's element type."""
    b = Builder()
    normed = b.bn("x", "bn", 4)
    conv = b.node("Conv", [normed, b.const("k", array((6, 4, 1, 1)))], "conv")
    half = b.node("CastLike", [b.const("a_half", np.array(0.5, np.float64)), normed], "half")
    b.node("Mul", [conv, half], "y")
    original = b.model([("x", [2, 4, 5, 5])], ["y"])
    result = fold_onnx(original)
    assert [(e.into, e.direction) for e in result.folded] == [("conv", "forward")]
    assert_same_answers(original, result.model)
