"""The protocol-free core: inference, compare, upload, delete, start-up folds.

Routes of both protocols parse their wire format into numpy arrays, call this,
and render what it returns. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from folding.verify.difference import max_difference
from service.core.registry import LoadedVersion, ModelRegistry
from service.core.repository import (
    FOLDED_FILE,
    REPORT_FILE,
    UNFOLDED_FILE,
    Repository,
    VersionDir,
    find_version,
    parse_version,
    validate_name,
)
from service.core.timing import interleaved
from service.errors import Conflict, DeadlineExceeded, InvalidInput, NotFound
from service.jobs.folder import Folder
from service.jobs.uploads import Uploads
from service.metrics import Metrics
from service.runtime.sessions import RunStopped, Runtime, Session, TensorMeta
from service.settings import Settings

logger = logging.getLogger("foldserve.dataplane")

DEFAULT_COMPARE_REPEATS = 10
MAX_COMPARE_REPEATS = 200

REFERENCES = ("keras", "source")
"""``:compare`` references: the stored source model (Keras or SavedModel), run in the
fold worker; "keras" is the older name of "source"."""


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        runtime: Runtime,
        folder: Folder,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.runtime = runtime
        self.folder = folder
        self.metrics = metrics
        self.registry = ModelRegistry(settings, repository, runtime, metrics)
        self.uploads = Uploads(settings, repository, self.registry, folder, metrics)
        self.ready = False
        self.draining = False
        self._poller: asyncio.Task | None = None

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        await anyio.to_thread.run_sync(
            self.repository.clean_staging, self.settings.fold_timeout * 2
        )
        if self.settings.prewarm_folder:
            self.folder.prewarm()
        await self._fold_missing()
        await self.registry.refresh()
        await self.uploads.start()
        self._poller = asyncio.create_task(self._poll())
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.uploads.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self.folder.close()

    async def _fold_missing(self) -> None:
        """Fold every version on disk that has a Keras source but no ONNX files yet.

        With several server processes, each version is folded by whichever claims it
        first; the others pick it up from disk when it is ready. A server without
        TensorFlow leaves them to a server that has it.
        """
        if not self.folder.available:
            return
        for versions in self.repository.scan().values():
            for directory in versions.values():
                if directory.ready or directory.source is None:
                    continue
                with self.repository.claim(directory) as claimed:
                    if claimed and not directory.ready:
                        await self._fold_in_place(directory)

    async def _fold_in_place(self, directory: VersionDir) -> None:
        staging = self.repository.new_staging()
        try:
            logger.info("folding %s/%d at start-up", directory.name, directory.version)
            await self._timed_fold(directory.source, staging, directory.name)
            self.repository.complete(staging, directory, (REPORT_FILE, UNFOLDED_FILE, FOLDED_FILE))
        except Exception as error:  # a bad model on disk must not stop the server
            message = getattr(error, "message", str(error))
            self.registry.mark_failed(directory.name, directory.version, message)
            logger.error("%s/%d not served: %s", directory.name, directory.version, message)
        finally:
            self.repository.discard(staging)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.registry.refresh()
            except Exception:  # keep polling whatever one scan hit
                logger.exception("repository scan failed")

    # -- reading -----------------------------------------------------------------

    def get(self, name: str, version: str | int | None = None) -> LoadedVersion:
        try:
            return self.registry.get(name, version)
        except NotFound:
            if self.registry.is_loaded(name):
                raise
            job = self.uploads.folding(name)
            if job is not None:
                raise NotFound(
                    f"model '{name}' has no version being served yet: version {job['version']} "
                    f"is being folded ({job['state']}, upload job {job['id']})"
                ) from None
            failure = self.uploads.failures.get(name)
            if failure is None:
                raise
            number, reason = failure
            raise NotFound(
                f"model '{name}' has no version being served: version {number} failed "
                f"to fold ({reason}); see GET /v1/models/{name}/versions/{number}/report"
            ) from None

    def versions(self, name: str) -> list[LoadedVersion]:
        return self.registry.versions(name)

    async def catalogue(self) -> list[dict[str, Any]]:
        """Every model on disk with each version's state (the disk is read off the loop),
        and the versions of upload jobs still folding (LOADING, the stage as reason) or
        failed (UNAVAILABLE, the error as reason)."""
        scanned = await anyio.to_thread.run_sync(self.repository.scan)
        listing = {model["name"]: model for model in self.registry.catalogue(scanned)}
        for (name, version), job_state in (await self.uploads.version_states()).items():
            state = "LOADING" if job_state.state == "LOADING" else "UNAVAILABLE"
            model = listing.setdefault(name, {"name": name, "versions": []})
            model["versions"].append(
                {"version": version, "state": state, "reason": job_state.reason}
            )
            model["versions"].sort(key=lambda entry: entry["version"])
        return [listing[name] for name in sorted(listing)]

    async def artifact(self, name: str, version: str, file_name: str) -> Path:
        """The path of a stored version's ``file_name`` (``version`` may be "latest");
        NotFound when the version or the file is missing."""
        validate_name(name)
        number = parse_version(version)
        scanned = await anyio.to_thread.run_sync(self.repository.scan)
        number, directory = find_version(scanned, name, number)
        if file_name == FOLDED_FILE:  # a precision variant's model.onnx is its own file
            file_name = directory.folded_file
        path = (directory.path / file_name).resolve()
        if not path.is_relative_to(self.repository.root) or not path.is_file():
            raise NotFound(f"model '{name}' version {number} has no {file_name}")
        return path

    async def version_status(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """TF Serving's ``model_version_status`` entries: the loaded versions of ``name``
        (or the one asked for), and those its upload jobs are folding or failed on."""
        jobs = {
            number: job_state
            for (model, number), job_state in (await self.uploads.version_states()).items()
            if model == name
        }
        if version is not None:
            number = parse_version(version)
            numbers = [number] if number in jobs else [self.get(name, version).version]
        else:
            loaded = []
            if self.registry.is_loaded(name) or not jobs:  # neither: NotFound
                loaded = [model.version for model in self.versions(name)]
            numbers = sorted({*loaded, *jobs})
        statuses = []
        for number in numbers:
            if number in jobs:
                job_state = jobs[number]
                state = "LOADING" if job_state.state == "LOADING" else "END"
                code = job_state.error_code
                message = "" if job_state.state == "LOADING" else job_state.reason
            else:
                state, message = self.registry.state_of(name, number)
                code = "OK" if not message else "UNAVAILABLE"
            statuses.append(
                {
                    "version": str(number),
                    "state": state,
                    "status": {"error_code": code, "error_message": message},
                }
            )
        return statuses

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton-style statistics of one version, every version of ``name``, or all."""
        if name is None:
            loaded = self.registry.loaded()
        elif version is None:
            loaded = self.registry.versions(name)
        else:
            loaded = [self.registry.get(name, version)]
        return [model.stats.as_dict() for model in loaded]

    # -- inference ---------------------------------------------------------------

    async def infer(
        self,
        model: LoadedVersion,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        variant: str = "folded",
    ) -> dict[str, np.ndarray]:
        executor = await self.registry.executor_of(model, variant)
        session = executor.session
        feed = validate_inputs(session.inputs, inputs)
        names = outputs or session.output_names
        unknown = [name for name in names if name not in session.output_names]
        if unknown:
            raise InvalidInput(
                f"unknown output '{unknown[0]}'; model outputs are: "
                f"{', '.join(session.output_names)}"
            )
        results = dict(zip(session.output_names, await executor.run(feed), strict=True))
        return {name: results[name] for name in names}

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
            outputs = await self.folder.keras_predict(model.directory.source, arrays)
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

    # -- writing -----------------------------------------------------------------

    async def _timed_fold(
        self,
        source: Path,
        out_dir: Path,
        name: str,
        label: str | None = None,
        probe: Path | None = None,
        calibration: Path | None = None,
        signature: str | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            report = await self.folder.fold(
                source, out_dir, name, label, probe, calibration, signature
            )
        except InvalidInput:
            self.metrics.fold_jobs.labels("refused").inc()
            raise
        except Exception:
            self.metrics.fold_jobs.labels("failed").inc()
            raise
        finally:
            self.metrics.fold_duration.observe(time.perf_counter() - started)
        self.metrics.fold_jobs.labels("ok").inc()
        return report

    async def delete(self, name: str, version: str | None) -> list[int]:
        """Delete one version (``"latest"``: the highest one) or, with no version, all;
        a version whose upload job failed is forgotten (no longer listed) likewise."""
        number = parse_version(version) if version is not None else None
        latest = version is not None and number is None
        delete = functools.partial(self.repository.delete, name, number, latest=latest)
        missing: NotFound | None = None
        try:
            removed = await anyio.to_thread.run_sync(delete)
        except NotFound as error:
            if latest:
                raise
            removed, missing = [], error
        dismissed = [] if latest else await self.uploads.dismiss(name, number)
        if missing is not None and not dismissed:
            folding = number is not None and (await self.uploads.version_states()).get(
                (name, number)
            )
            if folding and folding.state == "LOADING":
                raise Conflict(
                    f"model '{name}' version {number} is still being uploaded "
                    f"({folding.reason}): cancel its job instead"
                )
            raise missing
        removed = sorted({*removed, *dismissed})
        async with self.registry.lock:
            for gone in removed:
                self.registry.forget(name, gone)
                if self.uploads.failures.get(name, (None,))[0] == gone:
                    del self.uploads.failures[name]
            self.registry.count_loaded()
        return removed


def validate_inputs(
    expected: list[TensorMeta], inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Check names, rank, fixed dimensions, dtype and a common non-empty batch."""
    names = [meta.name for meta in expected]
    for name in inputs:
        if name not in names:
            raise InvalidInput(f"unknown input '{name}'; model inputs are: {', '.join(names)}")
    feed = {}
    batch = None
    for meta in expected:
        if meta.name not in inputs:
            raise InvalidInput(f"missing input '{meta.name}'; model inputs are: {', '.join(names)}")
        array = inputs[meta.name]
        if array.dtype != meta.dtype:
            if not np.can_cast(array.dtype, meta.dtype, casting="same_kind"):
                raise InvalidInput(
                    f"input '{meta.name}' has dtype {array.dtype}; model expects {meta.dtype}"
                )
            with np.errstate(over="ignore"):
                converted = array.astype(meta.dtype)
            if np.issubdtype(meta.dtype, np.floating) and np.issubdtype(array.dtype, np.floating):
                overflow = np.isinf(converted) & np.isfinite(array)
                if overflow.any():
                    raise InvalidInput(
                        f"input '{meta.name}' has values outside the range of {meta.dtype} "
                        f"(e.g. {array[overflow].flat[0]:g})"
                    )
            array = converted
        fits = array.ndim == len(meta.shape) and all(
            want < 0 or got == want for got, want in zip(array.shape, meta.shape, strict=True)
        )
        if not fits:
            raise InvalidInput(
                f"input '{meta.name}' has shape {list(array.shape)}; "
                f"model expects {list(meta.shape)}"
            )
        if array.shape[0] == 0:
            raise InvalidInput(f"input '{meta.name}' has an empty batch")
        if batch is not None and array.shape[0] != batch:
            raise InvalidInput(
                f"input '{meta.name}' has batch size {array.shape[0]}; other inputs have {batch}"
            )
        batch = array.shape[0]
        feed[meta.name] = np.ascontiguousarray(array)
    return feed


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
