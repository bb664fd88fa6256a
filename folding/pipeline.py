"""One fold for every format: a source folds and exports (``folding.sources``), then the
shared tail writes both variants, judges them against the source's reference and reports.

    source = open_source("model.keras", options)     # or .onnx, a SavedModel, an archive
    report = fold_to_directory(source, out, options)

Because the tail is written once, a difference is blamed the same way for every format:
on folding when the folded model differs from the unfolded one, on exporting when the
unfolded one already differs from the reference (``folding.verify.verdict.failure_error``).
Imports neither TensorFlow nor Keras (an ONNX file folds without them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from folding.errors import ExportError
from folding.options import FoldOptions, VerifyOptions
from folding.publish import FOLDED_FILE, REPORT_FILE, UNFOLDED_FILE
from folding.report import FoldReport, OnnxSummary, TensorInfo, Verification
from folding.sources import Folded, Source
from folding.sources.onnx.model import summarize
from folding.specs import Fraction, StageCallback, StageProgress, no_progress, no_stages
from folding.verify.chunks import Chunks
from folding.verify.verdict import (
    Answers,
    exact_answers,
    failure_error,
    judge,
    perturbed,
    session,
)

__all__ = ["FOLDED_FILE", "REPORT_FILE", "UNFOLDED_FILE", "fold_to_directory"]


def fold_to_directory(
    source: Source | Any,
    directory: Path,
    options: FoldOptions | None = None,
    *,
    on_stage: StageCallback = no_stages,
) -> FoldReport:
    """Fold ``source`` and write model.onnx, unfolded.onnx and report.json into ``directory``.

    ``source``: from ``folding.sources.open_source``, or a ``keras.Model`` in memory (taken
    as a Keras source). ``on_stage(stage, progress)`` hears of each stage as it starts;
    within "verifying", ``progress`` counts its steps done (the reference run and the
    ONNX runs, chunk by chunk (``folding.verify.chunks``); files written) over their total.

    Raises VerificationError (carrying the report) when folding changed the answers
    (``failure == "fold"``) or when the unfolded variant already differs from the
    reference (``failure == "export"``), each judged against its own tolerance and the
    model's float32 noise (see ``folding.verify.verdict``)."""
    options = options or FoldOptions()
    if not isinstance(source, Source):
        from folding.sources.keras.source import KerasSource

        source = KerasSource(source, options)
    verify = options.verify
    folded = source.fold(options, on_stage)
    on_stage("verifying", 0.0)
    exported_at = time.perf_counter()
    progress = StageProgress(on_stage, "verifying")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Writing ~2x the weights to disk overlaps with the runs. The ONNX Runtime
        # sessions are built after the reference has run, not beside it: building one
        # competes with the reference's first (warm-up) call, which then runs for
        # seconds with nothing to report.
        writes = [
            pool.submit((directory / file).write_bytes, model.data)
            for file, model in (
                (FOLDED_FILE, folded.folded_onnx),
                (UNFOLDED_FILE, folded.unfolded_onnx),
            )
        ]
        probes, described = source.probes(verify)
        batched = all(not spec.shape or spec.shape[0] is None for spec in folded.inputs)
        try:
            expected = source.early_reference(probes)
            if expected is not None:  # computed while the exports were written
                chunks = Chunks(((0, len(probes[0]) if probes else 0),))
            else:
                chunks, expected = Chunks.measured(
                    source.reference, probes, progress.part(0, 0.4), batched=batched
                )
            on_stage("verifying", 0.4)
            unfolded_session = session(folded.unfolded_onnx, unfolded=True)
            on_stage("verifying", 0.5)
            folded_session = session(folded.folded_onnx)
            on_stage("verifying", 0.6)
            verification = verify_exports(
                folded,
                probes,
                expected,
                (unfolded_session, folded_session),
                verify,
                described,
                chunks=chunks,
                progress=progress.part(0.6, 0.95),
            )
        except Exception as error:  # ONNX Runtime's own kinds, raised from its C++ core
            if not type(error).__module__.startswith("onnxruntime"):
                raise
            raise _runtime_error(error, folded, probes) from None
        on_stage("verifying", 0.95)
        for write in writes:
            write.result()
    on_stage("verifying", 1.0)
    report = FoldReport(
        model=source.name,
        inputs=[TensorInfo(s.name, s.dtype, list(s.shape)) for s in folded.inputs],
        outputs=[
            TensorInfo(n, str(r.dtype), [None, *r.shape[1:]])
            for n, r in zip(folded.output_names, expected, strict=True)
        ],
        folded=folded.folded,
        not_folded=folded.not_folded,
        removed=folded.removed,
        verification=verification,
        onnx={
            "folded": OnnxSummary(**summarize(folded.folded_onnx)),
            "unfolded": OnnxSummary(**summarize(folded.unfolded_onnx)),
        },
        timings={**folded.timings, "verify_s": round(time.perf_counter() - exported_at, 4)},
        exporter=folded.exporter,
        loader=folded.loader,
        warnings=folded.warnings,
        recalibration=folded.recalibration,
    )
    (directory / REPORT_FILE).write_text(report.to_json())
    error = failure_error(
        verification, report, reference=source.reference_name, noise_factor=verify.noise_factor
    )
    if error is not None:
        raise error
    return report


def verify_exports(
    folded: Folded,
    probes: list[np.ndarray],
    expected: list[np.ndarray],
    sessions: tuple[Any, Any],
    verify: VerifyOptions,
    described: str,
    *,
    chunks: Chunks | None = None,
    progress: Fraction | None = None,
) -> Verification:
    """Run both variants on the probes, over the reference's ``chunks``, and judge them
    against ``expected`` (see ``folding.verify.verdict``). The noise floor (a third
    run, on a perturbed copy) is measured only when an error is over its plain
    tolerance, since only then can it change the verdict."""
    names = [spec.name for spec in folded.inputs]
    chunks = chunks or Chunks(((0, len(probes[0]) if probes else 0),))
    unfolded_runner, folded_runner = sessions
    report = progress or no_progress
    unfolded = chunks.map(_runner(unfolded_runner, names), probes, lambda f: report(f / 2))
    folded_out = chunks.map(_runner(folded_runner, names), probes, lambda f: report((1 + f) / 2))
    exact = exact_answers(folded.unfolded_onnx.proto, names, probes, chunks.map)
    settings: dict[str, Any] = {
        "rtol": verify.rtol,
        "export_rtol": verify.export_limit(folded.compute_dtype),
        "compared_dtype": folded.compute_dtype,
        "probes": described,
        "noise_factor": verify.noise_factor,
    }
    answers = Answers(expected, unfolded, folded_out, None, exact)
    verification = judge(folded.output_names, answers, **settings)
    if verification.passed or not verify.noise_factor:
        return verification
    noisy = chunks.map(
        _runner(session(perturbed(folded.unfolded_onnx.proto), unfolded=True), names), probes
    )
    answers = Answers(expected, unfolded, folded_out, noisy, exact)
    return judge(folded.output_names, answers, **settings)


def _runner(onnx_session: Any, names: list[str]):
    """An ONNX Runtime session as a function of its input arrays (``chunks.Run``)."""
    return lambda arrays: onnx_session.run(None, dict(zip(names, arrays, strict=True)))


def _runtime_error(error: Exception, folded: Folded, probes: Sequence[np.ndarray]) -> ExportError:
    """ONNX Runtime refused to run a variant (or the reference, for an ONNX file)."""
    names = [spec.name for spec in folded.inputs]
    shape = ", ".join(f"{n} {list(a.shape)}" for n, a in zip(names, probes, strict=True))
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    what = (
        "this model"
        if folded.exporter == "onnx"
        else f"the exported model ({folded.exporter} exporter)"
    )
    return ExportError(f"ONNX Runtime cannot run {what} on probes of shape {shape}: {first}")
