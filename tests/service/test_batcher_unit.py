"""The dynamic batcher on its own: a real ONNX Runtime session, requests merged and split,
and a failing batch retried request by request so that only the culprit fails."""

import asyncio

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.errors import ServingError
from service.runtime.batching import BatchPolicy, Executor
from service.runtime.sessions import Runtime
from service.runtime.stats import ModelStats

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)


def gather_model(path):
    """``rows = table[index]``: an index outside 0..9 passes the signature but fails in the
    graph, on the request that holds it only."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "index"], ["gathered"], axis=0),
            helper.make_node("Squeeze", ["gathered", "axis"], ["rows"]),
        ],
        "gather",
        [helper.make_tensor_value_info("index", TensorProto.INT64, [None, 1])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, 4])],
        [
            numpy_helper.from_array(TABLE, "table"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


@pytest.fixture
def recorded(tmp_path):
    """The real session, with the row count of every run it is asked for recorded."""
    session = Runtime(device="cpu").load(gather_model(tmp_path / "gather.onnx"))
    runs: list[int] = []
    run = session.run

    def recording(feed, *args, **kwargs):
        runs.append(len(feed["index"]))
        return run(feed, *args, **kwargs)

    session.run = recording
    return session, runs


def batched(session, indices: list[int]) -> list:
    """The answers (or errors) to one request per index in ``indices``, all sent at once to
    a batching Executor over ``session``."""
    policy = BatchPolicy(enabled=True, max_batch_size=16, max_queue_delay_us=200_000)

    async def scenario():
        executor = Executor(session, policy, ModelStats("gather", 1))
        feeds = [{"index": np.array([[i]], np.int64)} for i in indices]
        try:
            return await asyncio.gather(*(executor.run(f) for f in feeds), return_exceptions=True)
        finally:
            executor.close()

    return asyncio.run(scenario())


def test_requests_are_merged_into_one_run_and_split_back(recorded):
    session, runs = recorded
    answers = batched(session, [3, 1, 4, 1, 5])
    assert runs == [5]
    for index, (rows,) in zip([3, 1, 4, 1, 5], answers, strict=True):
        np.testing.assert_array_equal(rows, TABLE[[index]])


def test_a_failing_batch_is_retried_alone_and_only_the_culprit_fails(recorded):
    session, runs = recorded
    answers = batched(session, [2, 7, 99, 0, 9])
    assert runs == [5, 1, 1, 1, 1, 1]  # the merged run failed; each request ran alone
    culprit = answers[2]
    assert isinstance(culprit, ServingError) and culprit.status_code == 400
    assert "model 'gather' version 1" in culprit.message
    for index, answer in zip([2, 7, 0, 9], answers[:2] + answers[3:], strict=True):
        np.testing.assert_array_equal(answer[0], TABLE[[index]])
