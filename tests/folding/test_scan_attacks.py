"""`foldserve fold` on hostile SavedModels built here: the scan judges the functions the
loader will run (the object graph, the graphs datasets embed), not the names that describe
them; each refusal is one line naming the culprit, and nothing in the model runs."""

from pathlib import Path

import pytest

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
