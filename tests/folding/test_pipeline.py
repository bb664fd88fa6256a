"""The one fold pipeline: every source (a Keras file, an ONNX file, a SavedModel folder
and its archive) through ``open_source`` and ``fold_to_directory``, and the blame for a
difference laid the same way for each: on exporting when the unfolded variant already
differs from the reference, on folding when the folded one differs from the unfolded."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from folding.errors import InvalidOption, ModelLoadError, VerificationError
from folding.options import FoldOptions, VerifyOptions
from folding.pipeline import FOLDED_FILE, REPORT_FILE, UNFOLDED_FILE, fold_to_directory
from folding.sources import Folded, Source, format_of, open_source
from folding.sources.keras.source import KerasSource
from folding.sources.onnx.model import OnnxModel
from folding.sources.onnx.source import OnnxSource
from folding.sources.saved_model.source import SavedModelSource
from folding.verify.difference import max_difference
from tests import saved_models, zoo
from tests.folding.test_onnx_fold import conv_then_bn

OPTIONS = FoldOptions(VerifyOptions(samples=16))
KINDS = ("keras", "onnx", "saved_model", "archive")
SOURCE_CLASSES = {
    "keras": KerasSource,
    "onnx": OnnxSource,
    "saved_model": SavedModelSource,
    "archive": SavedModelSource,
}
REFERENCE_NAMES = {
    "keras": "the Keras model",
    "onnx": "the original model",
    "saved_model": "the model it was converted from",
    "archive": "the model it was converted from",
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """One tiny model with trained-looking BNs in each format."""
    folder = tmp_path_factory.mktemp("sources")
    keras_file = folder / "mlp.keras"
    zoo.randomize_batch_norms(zoo.seed_mlp(), seed=2).save(keras_file)
    onnx_file = folder / "convnet.onnx"
    onnx_file.write_bytes(conv_then_bn().SerializeToString())
    saved_model = saved_models.keras3_dense(folder / "dense_savedmodel")
    archive = folder / "dense.tar.gz"
    archive.write_bytes(saved_models.tarred(saved_model))
    return {"keras": keras_file, "onnx": onnx_file, "saved_model": saved_model, "archive": archive}


def opened(kind, model_files, tmp_path):
    return open_source(model_files[kind], OPTIONS, unpack_into=tmp_path / "saved_model")


class SkewedReference(Source):
    """The real source, its reference's answers 1% off: what an exporter that changed
    the model would look like."""

    def __init__(self, inner: Source) -> None:
        self.inner, self.name, self.reference_name = inner, inner.name, inner.reference_name

    def fold(self, options, on_stage) -> Folded:
        return self.inner.fold(options, on_stage)

    def probes(self, verify):
        return self.inner.probes(verify)

    def reference(self, probes):
        return [answer * 1.01 for answer in self.inner.reference(probes)]


class BrokenFold(SkewedReference):
    """The real source, every weight of its folded variant 5% off: what a wrong fold
    would look like."""

    def fold(self, options, on_stage) -> Folded:
        folded = self.inner.fold(options, on_stage)
        proto = onnx.ModelProto()
        proto.CopyFrom(folded.folded_onnx.proto)
        for tensor in proto.graph.initializer:
            if tensor.data_type == TensorProto.FLOAT and np.prod(tensor.dims) > 1:
                moved = numpy_helper.to_array(tensor) * np.float32(1.05)
                tensor.CopyFrom(numpy_helper.from_array(moved, tensor.name))
        return dataclasses.replace(folded, folded_onnx=OnnxModel(proto, proto.SerializeToString()))

    def reference(self, probes):
        return self.inner.reference(probes)


def failed_fold(source: Source, tmp_path) -> VerificationError:
    """The error folding ``source`` into ``tmp_path/out`` raises (which it must)."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VerificationError) as raised:
        fold_to_directory(source, out, OPTIONS)
    return raised.value


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_folds_through_the_one_entry_point(kind, model_files, tmp_path):
    source = opened(kind, model_files, tmp_path)
    assert type(source) is SOURCE_CLASSES[kind]
    out = tmp_path / "out"
    out.mkdir()
    stages = []
    report = fold_to_directory(source, out, OPTIONS, on_stage=lambda *stage: stages.append(stage))
    assert report.verification.passed and report.verification.fold_error < 1e-5
    assert report.folded and not report.not_folded
    assert "BatchNormalization" not in report.onnx["folded"].op_counts
    assert [stage for stage, _ in stages][:3] == ["folding", "exporting", "verifying"]
    assert stages[-1] == ("verifying", 1.0)
    written = json.loads((out / REPORT_FILE).read_text())
    assert written["verification"]["verdict"] == report.verification.verdict
    assert (out / FOLDED_FILE).read_bytes() != (out / UNFOLDED_FILE).read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_a_reference_that_differs_is_blamed_on_exporting(kind, model_files, tmp_path):
    raised = failed_fold(SkewedReference(opened(kind, model_files, tmp_path)), tmp_path)
    verification = raised.report.verification
    assert verification.failure == "export"
    assert 0.005 < verification.export_error < 0.02 and verification.fold_error < 1e-5
    message = str(raised)
    assert message.startswith("export problem, not a folding one")
    assert REFERENCE_NAMES[kind] in message and "folding changed" not in message
    written = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert written["verification"]["failure"] == "export"


@pytest.mark.parametrize("kind", KINDS)
def test_a_folded_variant_that_differs_is_blamed_on_folding(kind, model_files, tmp_path):
    raised = failed_fold(BrokenFold(opened(kind, model_files, tmp_path)), tmp_path)
    verification = raised.report.verification
    assert verification.failure == "fold"
    assert verification.fold_error > 0.01 and verification.export_error < 1e-3
    assert str(raised).startswith("folding changed output")


def test_one_dispatch_and_one_suffix_table(model_files, tmp_path):
    assert [format_of(f"m{s}") for s in (".KERAS", ".h5", ".hdf5", ".onnx", ".TGZ", ".zip")] == [
        "keras",
        "keras",
        "keras",
        "onnx",
        "saved_model",
        "saved_model",
    ]
    assert format_of(model_files["saved_model"]) == "saved_model"
    with pytest.raises(InvalidOption, match="'recalibrate' needs a Keras model; an ONNX"):
        open_source(model_files["onnx"], FoldOptions(recalibrate=tmp_path / "rows.npy"))
    with pytest.raises(InvalidOption, match="'signature' applies to a SavedModel"):
        open_source(model_files["keras"], FoldOptions(signature="serving_default"))
    with pytest.raises(ModelLoadError, match="is an archive"):
        open_source(model_files["archive"])  # nowhere to unpack it to
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a Keras model file"):
        open_source(tmp_path / "notes.txt")


def test_a_keras_model_in_memory_is_a_keras_source(tmp_path):
    model = zoo.randomize_batch_norms(zoo.seed_mlp(), seed=2)
    report = fold_to_directory(model, tmp_path, OPTIONS)
    assert report.model == model.name and report.exporter == "direct"
    assert report.verification.passed


def test_differences_treat_non_finite_values_as_verification_does():
    """Shared NaN and same-signed infinity are agreement; one side's alone is infinite."""
    reference = np.array([np.nan, np.inf, 2.0, -4.0])
    assert max_difference(reference, reference.copy()) == (0.0, 4.0)
    assert max_difference(reference, np.array([1.0, np.inf, 2.0, -4.0]))[0] == np.inf
    assert max_difference(reference, np.array([np.nan, 1.0, 2.0, -4.0]))[0] == np.inf
    assert max_difference(reference, np.array([np.nan, np.inf, 2.5, -4.0])) == (0.5, 4.0)
    assert max_difference(np.array([]), np.array([])) == (0.0, 1.0)


def test_folding_and_exporting_report_how_far_they_got():
    from folding.export.pair import export_pair
    from folding.keras_graph.fold import fold_model
    from folding.keras_graph.graph import trace

    model = zoo.residual_block()  # four BatchNormalizations
    folding, exporting = [], []
    result = fold_model(model, progress=folding.append)
    export_pair(result, trace(model), 17, progress=exporting.append)
    assert folding[0] == 1 / 4 and folding[-1] == 1.0
    assert set(folding) <= {1 / 4, 2 / 4, 3 / 4, 1.0}
    assert folding == sorted(folding)
    assert exporting == sorted(exporting) and exporting[-1] == 1.0
    calls = len(trace(model).calls)
    assert len(exporting) > calls  # every layer call of each export, then its last steps
    assert 0.0 < exporting[0] < 0.5


def test_a_stage_s_progress_is_passed_on_at_most_every_interval():
    import itertools
    import time

    from folding.specs import StageProgress

    heard = []

    def on_stage(stage: str, fraction: float | None) -> None:
        heard.append((time.monotonic(), fraction))

    progress = StageProgress(on_stage, "x")
    started = time.monotonic()
    while time.monotonic() - started < 0.35:
        progress.part(0.5, 1.0)(2.0)  # beyond its part: held to the stage's 0..1
    times = [at for at, _ in heard]
    assert 2 <= len(heard) <= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= progress.interval - 1e-3  # timed when heard, a little after it is sent
    assert {fraction for _, fraction in heard} == {1.0}


def test_a_float32_model_holding_a_float16_constant_is_judged_in_float32():
    from folding.sources.onnx.source import compute_dtype
    from folding.verify.verdict import perturbed

    model = conv_then_bn()
    table = numpy_helper.from_array(np.arange(6, dtype=np.float16) + 1, "lookup")
    model.graph.initializer.append(table)  # a small float16 table beside float32 weights
    assert compute_dtype(model) == "float32"
    moved = {
        tensor.name: numpy_helper.to_array(tensor) for tensor in perturbed(model).graph.initializer
    }
    assert np.array_equal(moved["lookup"], numpy_helper.to_array(table))  # left as it is
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    floats = [
        name for name, array in originals.items() if array.dtype == np.float32 and array.size > 1
    ]
    assert floats and all(not np.array_equal(moved[n], originals[n]) for n in floats)

    half = onnx.ModelProto()
    half.CopyFrom(model)
    for index, tensor in enumerate(half.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            half.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(array.astype(np.float16), tensor.name)
            )
    assert compute_dtype(half) == "float16"
    moved = {
        tensor.name: numpy_helper.to_array(tensor) for tensor in perturbed(half).graph.initializer
    }
    assert not np.array_equal(moved["lookup"], numpy_helper.to_array(table))
