"""Load, fold, export both variants, verify: the whole job on one model."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from folding.errors import ExportError
from folding.export.direct import Unsupported
from folding.export.exporters import (
    DEFAULT_OPSET,
    OnnxModel,
    export_direct,
    layer_exporter,
    summarize,
)
from folding.export.fallback import export_general
from folding.keras_graph.fold import FoldResult
from folding.keras_graph.graph import Graph
from folding.publish import publish_directory  # noqa: F401 - part of this module's API
from folding.report import FoldReport, OnnxSummary, TensorInfo, Verification
from folding.sources.keras import loader_of
from folding.specs import StageCallback, no_stages
from folding.verify.probes import DEFAULT_SAMPLES, load_user_probes, make_probes, sample_count
from folding.verify.verdict import (
    DEFAULT_EXPORT_RTOL,
    DEFAULT_RTOL,
    HALF_PRECISION_EXPORT_RTOL,
    NOISE_FACTOR,
    Answers,
    exact_answers,
    failure_error,
    judge,
    perturbed,
    run_onnx,
    session,
)

FOLDED_FILE = "model.onnx"
UNFOLDED_FILE = "unfolded.onnx"
REPORT_FILE = "report.json"


def flat_caller(model: Any) -> Callable[[list[Any]], list[Any]]:
    """``model`` as a function from a flat list of inputs to a flat list of outputs."""
    from keras import tree

    structure = getattr(model, "_inputs_struct", None)
    if structure is None and hasattr(model, "_functional"):
        structure = model._functional._inputs_struct

    def call(inputs: list[Any]) -> list[Any]:
        packed = tree.pack_sequence_as(structure, inputs) if structure is not None else inputs[0]
        return tree.flatten(model(packed, training=False))

    return call


def fold_to_directory(
    model: Any,
    directory: Path,
    *,
    opset: int = DEFAULT_OPSET,
    rtol: float = DEFAULT_RTOL,
    export_rtol: float | None = None,
    noise_factor: float = NOISE_FACTOR,
    samples: int = DEFAULT_SAMPLES,
    probe_path: Path | None = None,
    name: str | None = None,
    calibration: list[np.ndarray] | None = None,
    recalibrate_on: list[np.ndarray] | None = None,
    on_stage: StageCallback = no_stages,
    exporter: str = "auto",
) -> FoldReport:
    """Fold ``model`` and write model.onnx, unfolded.onnx and report.json into ``directory``.

    ``on_stage(stage, progress)`` hears of each stage as it starts; within
    "verifying", ``progress`` counts its steps done (reference run, ONNX runs and
    verdict, files written) over their total.

    Raises VerificationError (carrying the report) when folding changed the
    answers (``failure == "fold"``) or when the unfolded export already differs
    from the Keras model (``failure == "export"``), each judged against its own
    tolerance and the model's float32 noise (see ``folding.verify.verdict``).

    ``exporter``: "auto" (the direct exporter, tf2onnx where it has no form for a
    layer) or "tf2onnx" (the general exporter for the whole model).
    """
    from folding.keras_graph.fold import fold_model
    from folding.keras_graph.graph import trace

    on_stage("folding", None)
    started = time.perf_counter()
    if calibration is None and probe_path is not None:  # the user's rows: variance shift too
        calibration = load_user_probes(trace(model).inputs, Path(probe_path))
    result = fold_model(model, calibration, recalibrate_on)
    unfolded_graph = trace(model)
    folded_at = time.perf_counter()

    on_stage("exporting", None)
    exported = export_pair(result, unfolded_graph, opset, exporter)
    on_stage("verifying", 0.0)
    exported_at = time.perf_counter()
    with ThreadPoolExecutor(max_workers=3) as pool:
        # Writing ~2x the weights to disk and loading the ONNX Runtime sessions
        # overlap with running the Keras model on the probes.
        writes = [
            pool.submit((directory / file).write_bytes, model_.data)
            for file, model_ in ((FOLDED_FILE, exported.folded), (UNFOLDED_FILE, exported.unfolded))
        ]
        sessions = pool.submit(
            lambda: (session(exported.unfolded.data, unfolded=True), session(exported.folded.data))
        )
        names = [spec.name for spec in result.inputs]
        count = samples if probe_path is not None else sample_count(unfolded_graph, samples)
        probes, source = make_probes(result.inputs, count, probe_path, graph=unfolded_graph)
        keras_out = [np.asarray(out) for out in flat_caller(model)(probes)]
        on_stage("verifying", 1 / 3)
        dtype = compute_dtype(unfolded_graph)
        if export_rtol is None:
            export_rtol = DEFAULT_EXPORT_RTOL if dtype == "float32" else HALF_PRECISION_EXPORT_RTOL
        try:
            verification = verify_exports(
                result.output_names,
                names,
                probes,
                keras_out,
                exported,
                sessions.result(),
                rtol=rtol,
                export_rtol=export_rtol,
                compared_dtype=dtype,
                probes=source,
                noise_factor=noise_factor,
            )
        except Exception as error:  # ONNX Runtime's own kinds, raised from its C++ core
            if not type(error).__module__.startswith("onnxruntime"):
                raise
            pairs = zip(names, probes, strict=True)
            shape = ", ".join(f"{name} {list(array.shape)}" for name, array in pairs)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise ExportError(
                f"ONNX Runtime cannot run the exported model ({exported.exporter} exporter) on "
                f"probes of shape {shape}: {first}"
            ) from None
        on_stage("verifying", 2 / 3)
        for write in writes:
            write.result()
    on_stage("verifying", 1.0)
    verified_at = time.perf_counter()

    report = FoldReport(
        model=name or model.name,
        inputs=[TensorInfo(s.name, s.dtype, list(s.shape)) for s in result.inputs],
        outputs=[
            TensorInfo(n, str(r.dtype), [None, *r.shape[1:]])
            for n, r in zip(result.output_names, keras_out, strict=True)
        ],
        folded=result.folded,
        not_folded=result.not_folded,
        removed=result.removed,
        verification=verification,
        onnx={
            "folded": OnnxSummary(**summarize(exported.folded)),
            "unfolded": OnnxSummary(**summarize(exported.unfolded)),
        },
        timings={
            "fold_s": round(folded_at - started, 4),
            "export_s": round(exported_at - folded_at, 4),
            "verify_s": round(verified_at - exported_at, 4),
        },
        exporter=exported.exporter,
        loader=loader_of(model),
        warnings=_export_warnings(exported, unfolded_graph),
        recalibration=result.recalibration,
    )
    (directory / REPORT_FILE).write_text(report.to_json())
    error = failure_error(
        verification, report, reference="the Keras model", noise_factor=noise_factor
    )
    if error is not None:
        raise error
    return report


@dataclass(frozen=True)
class ExportedPair:
    folded: OnnxModel
    unfolded: OnnxModel
    exporter: str
    fallback_reason: str | None = None  # why the general exporter wrote the model
    spliced: list[Unsupported] = field(default_factory=list)  # layers it wrote alone


EXPORTERS = ("auto", "tf2onnx")


def export_pair(
    result: FoldResult, unfolded_graph: Graph, opset: int, exporter: str = "auto"
) -> ExportedPair:
    """Both models as ONNX: directly from the traced graphs (``exporter`` "auto"), a
    layer with no direct form exported alone by the general exporter and spliced in;
    when even that fails, or ``exporter`` is "tf2onnx", both models whole through the
    general exporter."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "tf2onnx":
        return _export_general(result, opset, None)
    try:
        spliced: list[Unsupported] = []
        fallback = layer_exporter()
        unfolded = export_direct(unfolded_graph, opset, layer_fallback=fallback, spliced=spliced)
        folded = export_direct(result.graph, opset, result.weights, layer_fallback=fallback)
        return ExportedPair(folded, unfolded, "direct", spliced=spliced)
    except Unsupported as unsupported:
        reason = unsupported
    except ValueError as error:  # an opset the direct exporter does not write
        reason = error
    return _export_general(result, opset, reason)


def _export_general(result: FoldResult, opset: int, reason: object | None) -> ExportedPair:
    """The unfolded model through tf2onnx once, folded on its ONNX graph
    (``folding.export.fallback``); ``result``'s entries become what that fold did.
    ``reason`` says why the direct exporter could not (None: the general one was asked for)."""
    general = export_general(flat_caller(result.source), result, opset, reason)
    result.folded, result.not_folded = general.folded_entries, general.not_folded_entries
    return ExportedPair(
        general.folded,
        general.unfolded,
        "tf2onnx",
        None if reason is None else f"the direct exporter cannot write {reason}",
    )


def verify_exports(
    output_names: list[str],
    input_names: list[str],
    arrays: list[np.ndarray],
    keras_out: list[np.ndarray],
    exported: ExportedPair,
    sessions: tuple[Any, Any],
    **settings: Any,
) -> Verification:
    """Run both exports on the probes and judge them (see ``folding.verify.verdict``). The
    noise floor (a third run, on a perturbed copy) is measured only when an error
    is over its plain tolerance, since only then can it change the verdict."""
    feed = dict(zip(input_names, arrays, strict=True))
    unfolded, folded = (runner.run(None, feed) for runner in sessions)
    exact = exact_answers(exported.unfolded.proto, input_names, arrays)
    verification = judge(
        output_names, Answers(keras_out, unfolded, folded, None, exact), **settings
    )
    if verification.passed or not settings.get("noise_factor", NOISE_FACTOR):
        return verification
    noisy = run_onnx(perturbed(exported.unfolded.proto), input_names, arrays, unfolded=True)
    return judge(output_names, Answers(keras_out, unfolded, folded, noisy, exact), **settings)


def _export_warnings(exported: ExportedPair, unfolded_graph: Graph) -> list[str]:
    from keras import layers

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
        "unfolded.onnx: comparisons with it measure less than all of the BN arithmetic",
    ]


def compute_dtype(graph: Graph) -> str:
    """The dtype the model computes in: float16/bfloat16 under mixed precision."""
    dtypes = {str(getattr(call.layer, "compute_dtype", "float32")) for call in graph.calls}
    for half in ("float16", "bfloat16"):
        if half in dtypes:
            return half
    return "float32"
