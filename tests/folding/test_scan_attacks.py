"""`foldserve fold` on hostile SavedModels built here: the scan judges the functions the
loader will run (the object graph, the graphs datasets embed), not the names that describe
them; each refusal is one line naming the culprit, and nothing in the model runs."""

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from folding.errors import ModelLoadError, UnsafeModelError
from folding.sources.onnx.external import external
from folding.sources.onnx.source import load_onnx
from tests import hostile_onnx
from tests import saved_models as build
from tests.folding.test_saved_model import fold

SECRET = Path("/etc/passwd")


def refusal(result) -> str:
    """The one line ``foldserve`` printed: an error, never a traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("foldserve:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def secret_line() -> str:
    return SECRET.read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("variant", "fragments"),
    [
        ({}, ["op 'TextLineDataset'", "op 'WriteFile'"]),
        ({"asserts": True}, ["op 'TextLineDataset'"]),
        ({"encoded": True}, ["builds a dataset from a graph computed while it runs"]),
    ],
    ids=["writes", "asserts", "encoded"],
)
def test_dataset_hidden_in_an_embedded_graph_never_runs(tmp_path, variant, fragments):
    victim = tmp_path / "victim.txt"
    model = build.hides_a_dataset(tmp_path / "hider", SECRET, victim, **variant)
    out = tmp_path / "out"
    result = fold(model, "-o", out)
    line = refusal(result)
    assert any(fragment in line for fragment in fragments), line
    assert "nothing in it was run" in line
    assert not victim.exists()
    assert not out.exists()
    assert secret_line() not in result.stdout + result.stderr


def test_refusal_names_the_op_and_the_graph_it_hides_in(tmp_path):
    model = build.hides_a_dataset(tmp_path / "hider", SECRET, tmp_path / "victim.txt")
    line = refusal(fold(model, "-o", tmp_path / "out"))
    assert "op 'TextLineDataset'" in line or "op 'WriteFile'" in line
    assert "the dataset graph of node 'DatasetFromGraph' in function '__inference_serve" in line


def test_signature_outputs_that_name_no_node_are_refused(tmp_path):
    model = build.retarget_signature_outputs(build.tf_module_two_inputs(tmp_path / "m"))
    line = refusal(fold(model, "-o", tmp_path / "out"))
    assert "output 'out' names tensor 'no_such_node:0'" in line


def test_signature_declared_but_not_in_the_object_graph_is_refused(tmp_path):
    def declare_another(meta):
        meta.signature_def["other"].CopyFrom(meta.signature_def["serving_default"])

    model = build.edit_saved_model(build.tf_module_two_inputs(tmp_path / "m"), declare_another)
    line = refusal(fold(model, "-o", tmp_path / "out", "--signature", "other"))
    assert "signature 'other' is declared but is not in the SavedModel's object graph" in line


def test_signature_function_missing_from_the_library_is_refused(tmp_path):
    def drop_the_function(meta):
        names = [f.signature.name for f in meta.graph_def.library.function]
        wrapper = next(name for name in names if "signature_wrapper" in name)
        index = names.index(wrapper)
        del meta.graph_def.library.function[index]

    model = build.edit_saved_model(build.tf_module_two_inputs(tmp_path / "m"), drop_the_function)
    line = refusal(fold(model, "-o", tmp_path / "out"))
    assert "signature 'serving_default' names function '__inference_signature_wrapper" in line
    assert "not in the SavedModel's function library" in line


def test_declared_keys_that_differ_from_the_function_are_refused(tmp_path):
    def rename_output(meta):
        outputs = meta.signature_def["serving_default"].outputs
        outputs["renamed"].CopyFrom(outputs["out"])
        del outputs["out"]

    model = build.edit_saved_model(build.tf_module_two_inputs(tmp_path / "m"), rename_output)
    line = refusal(fold(model, "-o", tmp_path / "out"))
    assert "declares outputs ['renamed'] but its function in the object graph has ['out']" in line


def test_signature_that_fails_on_the_probes_is_one_line(tmp_path):
    out = tmp_path / "out"
    line = refusal(fold(build.fails_on_probes(tmp_path / "logger"), "-o", out))
    assert "signature 'serving_default' failed when run on the probe inputs" in line
    assert "InvalidArgumentError" in line and "log of the input" in line
    assert not out.exists()


CULPRITS = {
    "constant": "attribute 'value' of Constant node 'leak' (in the graph)",
    "initializer": "initializer 'c' (in the graph)",
    "sparse_initializer": "sparse initializer 'c' (in the graph)",
    "sparse_constant": "sparse attribute 'sparse_value' of Constant node 'leak' (in the graph)",
    "subgraph": "attribute 'value' of Constant node 'leak' (in the else_branch graph of If node "
    "'choose' (in the graph))",
    "function": "attribute 'value' of Constant node 'leak' (in function 'Leak')",
}


@pytest.mark.parametrize("location", ["etc/passwd", "../../other-model/report.json"])
@pytest.mark.parametrize("where", hostile_onnx.WHERE)
def test_onnx_tensor_with_external_data_is_refused_in_an_upload(tmp_path, where, location):
    path = hostile_onnx.save(hostile_onnx.hostile(where, location), tmp_path / "model.onnx")
    with pytest.raises(UnsafeModelError) as refused:
        load_onnx(path, "model.onnx")  # as the fold worker loads an upload
    message = str(refused.value)
    assert CULPRITS[where] in message
    assert f"keeps its data in an external file ({location!r})" in message


def _store_with_a_neighbour(tmp_path):
    """``tmp_path/store/other-model/report.json`` beside ``tmp_path/store/mine/1/``."""
    (tmp_path / "store" / "other-model").mkdir(parents=True)
    (tmp_path / "store" / "other-model" / "report.json").write_bytes(b'{"secret": 12345678}')
    folder = tmp_path / "store" / "mine" / "1"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("../../other-model/report.json", "which is not a file beside it"),
        ("/etc/passwd", "which is not a file beside it"),
        ("etc/passwd", "which does not exist beside it"),
        ("linked.bin", "which leads outside the model's folder"),
        ("folder", "which leads outside the model's folder or is not a regular file"),
    ],
)
def test_external_data_is_read_only_inside_the_model_folder(
    tmp_path, monkeypatch, location, fragment
):
    folder = _store_with_a_neighbour(tmp_path)
    (folder / "linked.bin").symlink_to(tmp_path / "store" / "other-model" / "report.json")
    (folder / "folder").mkdir()
    path = hostile_onnx.save(hostile_onnx.hostile("constant", location), folder / "m.onnx")
    monkeypatch.chdir("/")  # where etc/passwd is a file: the working directory never counts
    with pytest.raises(UnsafeModelError if "exist" not in fragment else ModelLoadError) as refused:
        load_onnx(path, external_data=True)
    assert CULPRITS["constant"] in str(refused.value) and fragment in str(refused.value)


def test_cli_refuses_external_data_outside_the_model_folder_in_one_line(tmp_path):
    folder = _store_with_a_neighbour(tmp_path)
    location = "../../other-model/report.json"
    path = hostile_onnx.save(hostile_onnx.hostile("constant", location), folder / "m.onnx")
    line = refusal(fold(path, "-o", tmp_path / "out"))
    assert CULPRITS["constant"] in line and "which is not a file beside it" in line
    assert not (tmp_path / "out").exists()


def test_cli_reads_external_data_in_a_subfolder_of_the_model(tmp_path):
    values = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "c.bin").write_bytes(values.tobytes())
    for where in ("constant", "subgraph", "function", "sparse_initializer"):
        path = hostile_onnx.save(
            hostile_onnx.hostile(where, "weights/c.bin"), tmp_path / f"{where}.onnx"
        )
        model = load_onnx(path, external_data=True)
        assert not external(model)
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (answer,) = session.run(None, {"x": np.zeros((1, 4), np.float32)})
        expected = values if where != "sparse_initializer" else [1.0, 0.0, 2.0, 0.0]
        np.testing.assert_array_equal(answer[0], expected)


def test_function_passed_on_in_a_call_attribute_is_on_the_serving_path(tmp_path):
    """A function reached only as an attribute of the function a call names (how a
    caller fills a callee's function placeholder) is judged as the serving path."""
    from folding.sources.saved_model.scan import check_saved_model

    def pass_on_a_saver(meta):
        library = meta.graph_def.library.function
        hidden = library.add()
        hidden.signature.name = "hidden_saver"
        saver = hidden.node_def.add()
        saver.name, saver.op = "save", "SaveV2"
        wrapper = next(f for f in library if "signature_wrapper" in f.signature.name)
        call = next(n for n in wrapper.node_def if n.op == "StatefulPartitionedCall")
        inner = call.attr["f"].func.attr["inner"]
        inner.func.name = "hidden_saver"

    model = build.edit_saved_model(build.tf_module_two_inputs(tmp_path / "m"), pass_on_a_saver)
    with pytest.raises(UnsafeModelError, match=r"serving path uses op 'SaveV2'.*'hidden_saver'"):
        check_saved_model(model, "serving_default", "m")
