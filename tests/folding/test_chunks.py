"""Verification runs the probe rows in chunks, reporting each, to the same answers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from folding.pipeline import fold_to_directory
from folding.verify.chunks import Chunks
from folding.verify.verdict import session
from tests import zoo


def keras_reference(model):
    from folding.export.pair import flat_caller

    call = flat_caller(model)
    return lambda arrays: [np.asarray(output) for output in call(arrays)]


def test_keras_answers_over_chunks_are_the_answers_on_all_rows():
    """In inference mode a row's answer does not depend on the rows run beside it
    (BatchNormalization uses its moving statistics, Dropout does nothing)."""
    model = zoo.residual_block()
    zoo.randomize_batch_norms(model)
    rows = np.random.default_rng(0).normal(size=(13, *model.input_shape[1:])).astype(np.float32)
    run = keras_reference(model)
    reported: list[float] = []
    chunks, chunked = Chunks.measured(run, [rows], reported.append, seconds=0.0)
    whole = run([rows])
    assert len(chunks.bounds) > 3  # 13 rows, a first chunk of 1, then chunks of 1
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    assert reported == sorted(reported) and reported[-1] == 1.0
    assert len(reported) == len(chunks.bounds)  # one report per chunk


def conv_model() -> bytes:
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 8, 8])],
        [weight],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto.SerializeToString()


def test_onnx_runtime_answers_over_the_same_chunks_are_the_answers_on_all_rows():
    runner = session(conv_model())

    def run(arrays):
        return runner.run(None, {"x": arrays[0]})

    rows = np.random.default_rng(2).normal(size=(10, 3, 8, 8)).astype(np.float32)
    chunks = Chunks(((0, 1), (1, 4), (4, 7), (7, 10)))
    reported: list[float] = []
    np.testing.assert_allclose(
        chunks.map(run, [rows], reported.append)[0], run([rows])[0], rtol=1e-5, atol=1e-6
    )
    assert reported == [0.1, 0.4, 0.7, 1.0]


def test_the_first_chunk_sizes_the_rest():
    calls: list[int] = []

    def run(arrays):
        calls.append(len(arrays[0]))
        return [arrays[0] * 2]

    rows = np.arange(64, dtype=np.float32).reshape(64, 1)
    chunks, answers = Chunks.measured(run, [rows], seconds=3600.0)  # a fast model
    assert calls == [8, 56] and chunks.bounds == ((0, 8), (8, 64))
    np.testing.assert_array_equal(answers[0], rows * 2)


def test_outputs_without_a_row_axis_and_static_batches_run_at_once():
    calls: list[int] = []

    def batch_mean(arrays):
        calls.append(len(arrays[0]))
        return [arrays[0].mean(axis=0)]  # one answer for the whole batch

    rows = np.arange(24, dtype=np.float32).reshape(8, 3)
    chunks, answers = Chunks.measured(batch_mean, [rows], seconds=0.0)
    assert chunks.bounds == ((0, 8),) and calls[-1] == 8
    np.testing.assert_array_equal(answers[0], rows.mean(axis=0))
    calls.clear()
    chunks, _ = Chunks.measured(batch_mean, [rows], seconds=0.0, batched=False)
    assert chunks.bounds == ((0, 8),) and calls == [8]

    def padded_to_its_chunk(arrays):  # one answer per row, as wide as the chunk's rows
        return [np.zeros((len(arrays[0]), len(arrays[0])))]

    chunks, answers = Chunks.measured(padded_to_its_chunk, [rows], seconds=3600.0)
    assert chunks.bounds == ((0, 8),) and answers[0].shape == (8, 8)
    split = Chunks(((0, 2), (2, 8)))
    assert split.map(padded_to_its_chunk, [rows])[0].shape == (8, 8)


def test_verifying_reports_progress_between_its_steps(tmp_path):
    heard: list[float] = []

    def on_stage(stage: str, fraction: float | None) -> None:
        if stage == "verifying" and fraction is not None:
            heard.append(fraction)

    report = fold_to_directory(zoo.residual_block(), tmp_path, on_stage=on_stage)
    assert report.verification.passed
    assert heard == sorted(heard) and heard[0] == 0.0 and heard[-1] == 1.0
    assert {0.4, 0.5, 0.6, 0.95} <= set(heard)  # reference, each session, ONNX runs
    assert onnx.load(tmp_path / "model.onnx").graph.node
