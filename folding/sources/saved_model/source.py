"""A TensorFlow SavedModel in: its serving signature converted to ONNX, then folded
on the ONNX graph like any ONNX model, and verified against the signature itself.

A SavedModel has no Keras layers, only a TensorFlow graph. Its serving
signature (``serving_default`` unless another is named) is frozen and converted
by tf2onnx **without the rewrites that would fold BatchNormalization away
before this project sees it** (``folding.export.tf2onnx_convert``, shared with the
general Keras exporter). So ``unfolded.onnx`` still holds every BN as its own ops; the folding
(``folding.onnx_graph``) then says where each one went.

Before anything in the SavedModel runs, ``folding.sources.saved_model.scan`` reads its
protobuf and refuses graphs that reach outside the model.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from folding.errors import ExportError, ModelLoadError, VerificationError
from folding.options import DEFAULT_SIGNATURE, FoldOptions, VerifyOptions
from folding.sources import Folded
from folding.sources.early import EarlyReference
from folding.sources.onnx.source import OnnxSource, random_probes
from folding.sources.saved_model.scan import SAVED_MODEL_FILE, SignatureSpec, check_saved_model
from folding.specs import StageCallback


@dataclass
class ServingFunction:
    """A SavedModel's signature: flat lists of arrays in and out, in key order."""

    spec: SignatureSpec
    function: Any
    keepalive: Any  # the loaded object: the function's variables live as long as it does

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import tensorflow as tf

        feed = {
            key: tf.constant(array) for key, array in zip(self.spec.inputs, arrays, strict=True)
        }
        try:
            result = self.function(**feed)
        except tf.errors.OpError as error:
            raise VerificationError(
                f"signature '{self.spec.name}' failed when run on the probe inputs: "
                f"{type(error).__name__}: {_reason(error)}"
            ) from None
        return [np.asarray(result[key]) for key in self.spec.outputs]


_TF_ERROR_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node")


def _reason(error: Exception) -> str:
    """The line of a TensorFlow error that says what failed, without its traceback; an
    assertion's message (which may carry the tensors it checked) is left out."""
    lines = [line.strip() for line in str(error).splitlines()]
    useful = [line for line in lines if line and not line.startswith(_TF_ERROR_NOISE)]
    reason = useful[0] if useful else "no message"
    if "assertion failed" in reason.lower():
        return "an assertion in the model failed"
    return reason[:300]


def load_saved_model(
    directory: Path,
    signature: str = DEFAULT_SIGNATURE,
    label: str | None = None,
    *,
    scan: bool = True,
) -> ServingFunction:
    """Check ``directory`` (see ``folding.sources.saved_model.scan``), then load its signature.

    ``scan=False`` skips the check (tests of the confinement behind it only: whatever
    the SavedModel does then runs)."""
    directory = Path(directory)
    label = label or directory.name
    if not directory.is_dir():
        raise ModelLoadError(f"no such directory: {directory}")
    if not (directory / SAVED_MODEL_FILE).is_file():
        raise ModelLoadError(
            f"'{label}' is a directory but not a SavedModel: it has no {SAVED_MODEL_FILE}"
        )
    spec = check_saved_model(directory, signature, label) if scan else None
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory), tags=["serve"])
    except Exception as error:  # TensorFlow raises many kinds for a broken SavedModel
        reason = _load_failure(error, tf)[:300]
        raise ModelLoadError(f"'{label}' could not be loaded as a SavedModel: {reason}") from None
    function = loaded.signatures[signature]
    if spec is None:  # unscanned: the keys of the loaded signature itself
        outputs = sorted(function.structured_outputs)
        spec = SignatureSpec(signature, sorted(function.structured_input_signature[1]), outputs)
    return ServingFunction(spec, function, loaded)


def _load_failure(error: Exception, tf: Any) -> str:
    """What went wrong, in one line: an op that failed while loading (a file it may not
    read, under the fold worker's confinement) is named by its own message, not by
    "Graph execution error:" and the Python stack TensorFlow puts before it."""
    if not isinstance(error, tf.errors.OpError):
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    lines = [
        line
        for line in error.message.splitlines()
        if line.strip()
        and not line[0].isspace()
        and not line.startswith(("Graph execution error", "Detected at node", "[["))
    ]
    last = lines[-1] if lines else type(error).__name__
    return re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", last)


def export_signature(serving: ServingFunction, opset: int = FoldOptions.opset) -> onnx.ModelProto:
    """The signature as ONNX, every BatchNormalization still its own ops; graph inputs
    and outputs carry the signature's keys."""
    import tensorflow as tf

    from folding.export.exporters import _quiet_loggers, _rename_outputs
    from folding.export.tf2onnx_convert import convert_function

    concrete = serving.function
    # the signature's own inputs come first; after them, what the function captures
    # (variables, and constant tensors such as a Normalization layer's mean), frozen below
    own_inputs = concrete.inputs[: len(concrete.inputs) - len(concrete.captured_inputs)]
    input_names = [t.name for t in own_inputs if t.dtype != tf.resource]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    if len(input_names) != len(serving.spec.inputs):
        raise ExportError(
            f"signature '{serving.spec.name}' has {len(serving.spec.inputs)} inputs but its "
            f"function takes {len(input_names)}"
        )
    renames = dict(zip(input_names, serving.spec.inputs, strict=True))
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("tf2onnx"):
            proto = convert_function(concrete, input_names, output_names, renames, opset)
    except Exception as error:  # tf2onnx raises bare exceptions of many kinds
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"ONNX conversion failed: {type(error).__name__}: {first}") from None
    _rename_outputs(proto.graph, serving.spec.outputs)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"ONNX conversion produced an invalid graph: {first}") from None
    return proto


class SavedModelSource(OnnxSource):
    """A SavedModel: its signature converted to ONNX when opened (the conversion is part
    of loading), then folded on the ONNX graph and judged against the signature itself.
    ``directory``: where the SavedModel is; ``signature``: the signature's name."""

    def __init__(self, serving: ServingFunction, directory: Path, name: str, opset: int) -> None:
        super().__init__(
            export_signature(serving, opset),
            name,
            serving,
            reference_name="the model it was converted from",
            exporter="tf2onnx",
        )
        self.serving = serving
        self.directory = directory
        self.signature = serving.spec.name
        self._early: EarlyReference | None = None

    def fold(self, options: FoldOptions, on_stage: StageCallback) -> Folded:
        """The ONNX fold, with the signature's answers on the probes computed beside it
        (``folding.sources.early``): TensorFlow runs the signature without the GIL that
        the ONNX folder holds, and as it was saved, without grappler's rewrites
        (``functions_run_as_traced``: on a ResNet50, optimising the function takes as
        long as running it on its probes)."""
        from folding._compat import functions_run_as_traced

        def reference(probes: list[np.ndarray]) -> list[np.ndarray]:
            with functions_run_as_traced():
                return self.reference(probes)

        self._early = EarlyReference.start(
            self._make_probes, options.verify, reference, "saved-model-reference"
        )
        return super().fold(options, on_stage)

    def probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        if self._early is not None and self._early.serves(verify):
            return self._early.probes, self._early.described
        return self._make_probes(verify)

    def early_reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        return None if self._early is None else self._early.answers(probes)

    def _make_probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        """Random rows, as for any ONNX graph, but as few as a Keras model of the same
        cost gets (``folding.verify.probes.sample_count``): 64 rows of a ResNet50 take
        the signature and both exports a minute to run; 2 take seconds."""
        if verify.probes is not None:
            return OnnxSource.probes(self, verify)
        from folding.verify.onnx_cost import multiply_accumulates
        from folding.verify.probes import DEFAULT_SAMPLES, samples_within_budget

        requested = min(verify.samples, DEFAULT_SAMPLES)
        count = samples_within_budget(multiply_accumulates(self.model), requested)
        return random_probes(self._specs, count), "random"

    @classmethod
    def open(  # type: ignore[override]
        cls, directory: Path, options: FoldOptions, name: str | None, label: str | None
    ) -> SavedModelSource:
        from folding.quiet import import_keras

        import_keras()  # quietly: TensorFlow's start-up chatter
        signature = options.signature or DEFAULT_SIGNATURE
        serving = load_saved_model(directory, signature, label, scan=options.scan)
        return cls(serving, directory, name or Path(directory).resolve().name, options.opset)
