"""A Keras model as a source: folded on its layer graph (``folding.keras_graph``), both
variants exported (``folding.export.pair``), judged against the Keras model itself on
probes that follow what its first layers expect (``folding.verify.probes``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from folding.errors import ProbeError
from folding.options import FoldOptions, VerifyOptions
from folding.publish import UNFOLDED_FILE
from folding.sources import Folded, Source, stage_timings
from folding.sources.early import EarlyReference
from folding.specs import StageCallback, StageProgress


class KerasSource(Source):
    """``model`` (a loaded ``keras.Model``); ``options.recalibrate``'s rows, when given,
    are read here, so that rows of the wrong shape fail before folding starts."""

    reference_name = "the Keras model"

    def __init__(self, model: Any, options: FoldOptions | None = None, name: str | None = None):
        self.model = model
        self.name = name or model.name
        self.recalibrate_on: list[np.ndarray] | None = None
        recalibrate = None if options is None else options.recalibrate
        if recalibrate is not None:
            from folding.keras_graph.recalibrate import load_calibration

            try:
                self.recalibrate_on = load_calibration(model, Path(recalibrate))
            except ProbeError as error:
                raise ProbeError(str(error), option="recalibrate") from None
        self._graph: Any = None
        self._inputs: list[Any] = []
        self._early: EarlyReference | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        options: FoldOptions,
        name: str | None,
        label: str | None,
        progress: Callable[[float], None] | None = None,
    ) -> KerasSource:
        """The Keras file at ``path``, checked without Keras first, then loaded safely
        (``folding.sources.keras.loading``)."""
        from folding.quiet import import_keras
        from folding.sources.keras.loading import DEFAULT_LIMITS, check_model_file, load_keras_model

        limits = options.archive_limits or DEFAULT_LIMITS
        check_model_file(path, label, limits)  # fails fast, before TensorFlow is imported
        import_keras()
        return cls(load_keras_model(path, label, limits, progress), options, name)

    def fold(self, options: FoldOptions, on_stage: StageCallback) -> Folded:
        from folding.export.pair import export_pair
        from folding.keras_graph.fold import fold_model
        from folding.keras_graph.graph import trace
        from folding.sources.keras.loading import loader_of
        from folding.verify.probes import load_user_probes

        on_stage("folding", None)
        folding = StageProgress(on_stage, "folding")
        started = time.perf_counter()
        calibration = None
        if options.verify.probes is not None:  # the user's rows: variance shift too
            calibration = load_user_probes(trace(self.model).inputs, Path(options.verify.probes))
        result = fold_model(self.model, calibration, self.recalibrate_on, folding)
        self._graph = trace(self.model)
        self._inputs = result.inputs
        self._early, on_traced = None, None
        if options.exporter == "tf2onnx":  # run as traced for it, once it is
            on_traced = lambda run: self._start_early(options.verify, run)  # noqa: E731
        else:
            self._start_early(options.verify)
        folded_at = time.perf_counter()
        on_stage("exporting", None)
        exporting = StageProgress(on_stage, "exporting")
        exported = export_pair(
            result, self._graph, options.opset, options.exporter, exporting, on_traced
        )
        exported_at = time.perf_counter()
        return Folded(
            folded_onnx=exported.folded,
            unfolded_onnx=exported.unfolded,
            inputs=result.inputs,
            output_names=result.output_names,
            exporter=exported.exporter,
            timings=stage_timings(started, folded_at, exported_at),
            folded=result.folded,
            not_folded=result.not_folded,
            removed=result.removed,
            recalibration=result.recalibration,
            loader=loader_of(self.model),
            warnings=export_warnings(exported, self._graph),
            compute_dtype=compute_dtype(self._graph),
        )

    def probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        if self._early is not None and self._early.serves(verify):
            return self._early.probes, self._early.described
        return self._make_probes(verify)

    def reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray]:
        early = self.early_reference(probes)
        return self._run(probes) if early is None else early

    def early_reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        return None if self._early is None else self._early.answers(probes)

    def _start_early(
        self, verify: VerifyOptions, traced: Callable[[list[Any]], list[Any]] | None = None
    ) -> None:
        """The Keras model's answers computed beside the exports
        (``folding.sources.early``): by the eager model (``_run``), the same call as
        ``reference`` makes, or, for the general exporter, by ``traced``, the model as
        it traced it (in graph mode, as ``model.predict`` runs it; the eager model when
        that refuses the probes): eager Keras would spend as long in Python as the
        trace, each holding the GIL from the other, where the traced graph runs in
        TensorFlow's kernels alone."""

        def run(probes: list[np.ndarray]) -> list[np.ndarray]:
            if traced is not None:
                try:
                    return traced(probes)
                except Exception:  # the traced signature refuses them: the eager call says why
                    pass
            return self._run(probes)

        self._early = EarlyReference.start(self._make_probes, verify, run, "keras-reference")

    def _make_probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        from folding.verify.probes import make_probes, sample_count

        count = verify.samples
        if verify.probes is None:  # fewer rows for a large network
            count = sample_count(self._graph, verify.samples)
        return make_probes(self._inputs, count, verify.probes, graph=self._graph)

    def _run(self, probes: Sequence[np.ndarray]) -> list[np.ndarray]:
        from folding.export.pair import flat_caller

        return [np.asarray(output) for output in flat_caller(self.model)(list(probes))]


def export_warnings(exported: Any, unfolded_graph: Any) -> list[str]:
    """What the report says about how ``exported`` (an ``ExportedPair``) was written."""
    from keras import layers

    from folding.export.exporters import summarize

    if exported.exporter == "direct":
        return [
            f"layer '{layer.layer}' ({layer.class_name}) was exported alone by the general "
            f"exporter (tf2onnx): {layer.reason}"
            for layer in exported.spliced
        ]
    warnings = []  # asked for by name (--exporter tf2onnx), the general exporter needs no word
    if exported.fallback_reason is not None:
        warnings.append(f"exported by {exported.exporter}: {exported.fallback_reason}")
    keras_count = sum(
        type(call.layer) is layers.BatchNormalization for call in unfolded_graph.calls
    )
    ops = summarize(exported.unfolded)["op_counts"]
    onnx_count = ops.get("BatchNormalization", 0) + ops.get("Mul", 0)
    if onnx_count >= keras_count:
        return warnings
    return [
        *warnings,
        f"the general exporter ({exported.exporter}) merged some of the model's "
        f"{keras_count} BatchNormalizations into neighbouring layers while writing "
        f"{UNFOLDED_FILE}: comparisons with it measure less than all of the BN arithmetic",
    ]


def compute_dtype(graph: Any) -> str:
    """The dtype the model computes in: float16/bfloat16 under mixed precision."""
    dtypes = {str(getattr(call.layer, "compute_dtype", "float32")) for call in graph.calls}
    for half in ("float16", "bfloat16"):
        if half in dtypes:
            return half
    return "float32"
