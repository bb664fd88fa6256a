"""The memory check is worked out once per file, and never outlives the file's content:
a file rewritten in place (same path, same inode) is estimated again, and a file moved
(as committing an upload moves it) keeps its verdict."""

from __future__ import annotations

import os

import pytest
from onnx import TensorProto, helper

from service.errors import Unprocessable
from service.runtime.sessions import Runtime
from tests.service.test_runtime_health import constant_of_half_a_gigabyte


def _small_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime("cpu", memory_limit_mb=256)


def test_a_file_rewritten_in_place_is_estimated_again(tmp_path, runtime):
    path = tmp_path / "model.onnx"
    path.write_bytes(_small_model())
    runtime.check_memory(path)
    inode = path.stat().st_ino
    with path.open("r+b") as handle:  # the same inode, other content
        handle.truncate(0)
        handle.write(constant_of_half_a_gigabyte())
    assert path.stat().st_ino == inode
    with pytest.raises(Unprocessable, match=r"would need about 953\.7 MiB"):
        runtime.check_memory(path)


def test_a_moved_file_keeps_its_verdict(tmp_path, runtime):
    staged = tmp_path / "staged.onnx"
    staged.write_bytes(constant_of_half_a_gigabyte())
    with pytest.raises(Unprocessable):
        runtime.check_memory(staged)
    committed = tmp_path / "committed.onnx"
    os.replace(staged, committed)
    with pytest.raises(Unprocessable, match="limit is 256 MiB"):
        runtime.check_memory(committed)
