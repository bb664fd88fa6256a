"""``:compare``: folded vs unfolded ONNX (and the source model, and the precision
variants) on the same inputs, timed in interleaved rounds and judged."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import anyio
import numpy as np

from folding.verify.difference import max_difference
from service.core.registry import LoadedVersion, ModelRegistry
from service.core.repository import Repository
from service.core.timing import interleaved
from service.core.validation import validate_inputs
from service.errors import DeadlineExceeded, InvalidInput, NotFound
from service.jobs.worker_pool import FoldWorkerPool
from service.runtime.sessions import RunStopped, Session
from service.settings import Settings

DEFAULT_COMPARE_REPEATS = 10
MAX_COMPARE_REPEATS = 200

REFERENCES = ("keras", "source")
"""``:compare`` references: the stored source model (Keras or SavedModel), run in the
fold worker; "keras" is the older name of "source"."""


class Comparison:
    """Runs ``:compare`` on the loaded versions of the registry."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, fold_workers: FoldWorkerPool
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.repository: Repository = registry.repository
        self.fold_workers = fold_workers

    async def compare(
        self,
        model: LoadedVersion,
        inputs: dict[str, np.ndarray],
        reference: str | None,
        repeats: int = DEFAULT_COMPARE_REPEATS,
        return_outputs: bool = True,
        variants: bool = False,
    ) -> dict[str, Any]:
        """Folded vs unfolded ONNX (and optionally the Keras original, and with
        ``variants`` each precision variant of the version) on the same inputs.

        Latencies are medians over ``repeats`` rounds in which the folded and the
        unfolded model run one after the other (which one first alternates), so
        that a drift of the machine falls on both alike. The verdict judges the
        folded outputs against the unfolded ones with the server's fold rtol.
        """
        feed = validate_inputs(model.inputs, inputs)
        sessions = {
            variant: (await self.registry.executor_of(model, variant)).session
            for variant in ("folded", "unfolded")
        }
        precisions = []
        if variants:
            for directory in self.repository.variants_of(model.directory):
                precision = directory.folded_file.split(".")[1]
                try:
                    served = self.registry.get(directory.name, directory.version)
                except NotFound:
                    continue  # not loaded (yet, or it could not be): nothing to time
                sessions[precision] = served.executor.session
                precisions.append(precision)
        label = f"model '{model.name}' version {model.version}"
        options = Session.run_options()  # every round's runs stop at the one time budget
        budget = self.settings.run_timeout_s
        stop = asyncio.get_running_loop().call_later(budget, setattr, options, "terminate", True)
        try:
            timing = await anyio.to_thread.run_sync(
                lambda: interleaved(
                    {
                        variant: functools.partial(session.run, feed, options=options, label=label)
                        for variant, session in sessions.items()
                    },
                    min_rounds=repeats,
                )
            )
        except RunStopped:
            raise DeadlineExceeded(
                f"{label}: :compare took longer than {budget:g} s (FOLDSERVE_RUN_TIMEOUT_S) "
                "and was stopped"
            ) from None
        finally:
            stop.cancel()
        timings: dict[str, float] = {
            variant: spread.median for variant, spread in timing.milliseconds.items()
        }
        results: dict[str, dict[str, np.ndarray]] = {
            variant: dict(zip(sessions[variant].output_names, answer, strict=True))
            for variant, answer in timing.outputs.items()
        }
        if reference in REFERENCES:
            started = time.perf_counter()
            arrays = [feed[meta.name] for meta in model.inputs]
            outputs = await self.fold_workers.keras_predict(model.directory.source, arrays)
            timings[reference] = (time.perf_counter() - started) * 1e3
            names = [meta.name for meta in model.outputs]
            results[reference] = dict(zip(names, outputs, strict=True))
        elif reference is not None:
            raise InvalidInput(f"unknown reference {reference!r}; expected 'source' or 'keras'")
        comparison = {}
        rtol, compared = self._compare_judgement(model)
        for meta in model.outputs:
            baseline = results["unfolded"][meta.name]
            entry: dict[str, Any] = {}
            if return_outputs:
                entry.update(
                    {
                        variant: values[meta.name]
                        for variant, values in results.items()
                        if variant not in precisions
                    }
                )
            entry.update(differences(baseline, results["folded"][meta.name]))
            entry["passed"] = entry["max_rel_diff"] <= rtol
            for precision in precisions:  # judged against float32 folded, as when made
                entry[precision] = differences(
                    results["folded"][meta.name], results[precision][meta.name]
                )
                if return_outputs:
                    entry[precision]["outputs"] = results[precision][meta.name]
            if reference in REFERENCES:
                source_diff = differences(
                    results[reference][meta.name], results["folded"][meta.name]
                )
                entry.update({f"{reference}_{key}": value for key, value in source_diff.items()})
            comparison[meta.name] = entry
        verdict = {
            "passed": all(entry["passed"] for entry in comparison.values()),
            "rtol": rtol,
            "compared": compared,
        }
        return {
            "outputs": comparison,
            "verdict": verdict,
            "latency_ms": timings,
            "latency": {
                "repeats": timing.rounds,
                "statistic": "median of interleaved rounds: the ONNX sessions called directly "
                "in one worker thread, no batching queue in front of any, rotating which runs "
                "first (keras/source: one run in the fold worker)",
                "iqr_ms": {
                    variant: spread.as_dict() for variant, spread in timing.milliseconds.items()
                },
                "unfolded_over_folded": timing.ratio.median,
                "unfolded_over_folded_iqr": [timing.ratio.q1, timing.ratio.q3],
                **{
                    f"{precision}_speedup": _speedup(timing.ratios[precision])
                    for precision in precisions
                },
            },
        }

    def _compare_judgement(self, model: LoadedVersion) -> tuple[float, str]:
        """The rtol ``:compare`` judges by and what it compares: the server's fold rtol,
        or for a ``<name>-<precision>`` variant the rtol its upload judged it by."""
        scale = "max |difference| / the unfolded output's scale"
        if model.directory.variant_of is None:
            return self.settings.fold_rtol, f"folded vs unfolded ONNX: {scale}"
        precision = model.name.rsplit("-", 1)[1]
        judged = next(
            (
                entry
                for entry in model.report.get("variants") or []
                if entry.get("precision") == precision and entry.get("rtol") is not None
            ),
            {"rtol": self.settings.fold_rtol},
        )
        return (
            float(judged["rtol"]),
            f"folded {precision} vs unfolded float32 ONNX: {scale}, judged at the rtol "
            f"the {precision} variant was accepted with",
        )


def differences(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Max absolute and relative difference, measured as the fold's verification measures
    them (``folding.verify.difference``); argmax agreement for 2-D class scores."""
    max_abs, scale = max_difference(reference, candidate)
    result: dict[str, Any] = {"max_abs_diff": max_abs, "max_rel_diff": max_abs / scale}
    want, got = np.asarray(reference), np.asarray(candidate)
    if want.ndim == 2 and want.shape[1] > 1:
        result["argmax_agreement"] = float(np.mean(want.argmax(axis=1) == got.argmax(axis=1)))
    return result


def _speedup(ratio: Any) -> dict[str, float]:
    """A variant's time over float32 folded's, per round, as a speedup with its quartiles."""
    return {"median": 1 / ratio.median, "iqr": [1 / ratio.q3, 1 / ratio.q1]}
