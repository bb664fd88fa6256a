"""The protocol-free core: inference, compare, upload, delete, start-up folds.

Routes of both protocols parse their wire format into numpy arrays, call this,
and render what it returns. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import numpy as np

from service.errors import InvalidInput
from service.folder import Folder
from service.metrics import Metrics
from service.registry import LoadedVersion, ModelRegistry
from service.repository import (
    FOLDED_FILE,
    REPORT_FILE,
    UNFOLDED_FILE,
    Repository,
    VersionDir,
    parse_version,
    validate_name,
)
from service.runtime import Runtime, TensorMeta
from service.settings import Settings

logger = logging.getLogger("foldserve.dataplane")

UPLOAD_SUFFIXES = {".keras": "model.keras", ".h5": "model.h5", ".hdf5": "model.h5"}


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
        self.ready = False
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
        self._poller = asyncio.create_task(self._poll())
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
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
        return self.registry.get(name, version)

    def versions(self, name: str) -> list[LoadedVersion]:
        return self.registry.versions(name)

    def catalogue(self) -> list[dict[str, Any]]:
        return self.registry.catalogue()

    def state_of(self, name: str, version: int) -> tuple[str, str]:
        return self.registry.state_of(name, version)

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
        self, model: LoadedVersion, inputs: dict[str, np.ndarray], reference: str | None
    ) -> dict[str, Any]:
        """Folded vs unfolded ONNX (and optionally the Keras original) on the same inputs."""
        feed = validate_inputs(model.inputs, inputs)
        timings: dict[str, float] = {}
        results: dict[str, dict[str, np.ndarray]] = {}
        for variant in ("folded", "unfolded"):
            started = time.perf_counter()
            results[variant] = await self.infer(model, feed, variant=variant)
            timings[variant] = (time.perf_counter() - started) * 1e3
        if reference == "keras":
            started = time.perf_counter()
            arrays = [feed[meta.name] for meta in model.inputs]
            outputs = await self.folder.keras_predict(model.directory.source, arrays)
            timings["keras"] = (time.perf_counter() - started) * 1e3
            names = [meta.name for meta in model.outputs]
            results["keras"] = dict(zip(names, outputs, strict=True))
        elif reference is not None:
            raise InvalidInput(f"unknown reference {reference!r}; the only one is 'keras'")
        comparison = {}
        for meta in model.outputs:
            baseline = results["unfolded"][meta.name]
            entry: dict[str, Any] = {
                variant: values[meta.name] for variant, values in results.items()
            }
            entry.update(differences(baseline, results["folded"][meta.name]))
            if "keras" in results:
                keras_diff = differences(results["keras"][meta.name], results["folded"][meta.name])
                entry.update({f"keras_{key}": value for key, value in keras_diff.items()})
            comparison[meta.name] = entry
        return {"outputs": comparison, "latency_ms": timings}

    # -- writing -----------------------------------------------------------------

    async def register(
        self, upload: BinaryIO, file_name: str, name: str | None
    ) -> tuple[str, int, dict[str, Any]]:
        """Fold an uploaded Keras file and store it as the next version of ``name``."""
        self.folder.require()
        suffix = Path(file_name or "").suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise InvalidInput(
                f"uploaded file {file_name!r} is not a Keras model: expected a .keras or .h5 file"
            )
        name = validate_name(name if name else name_from_file(file_name))
        staging = await anyio.to_thread.run_sync(self.repository.new_staging)
        try:
            source = staging / UPLOAD_SUFFIXES[suffix]
            await anyio.to_thread.run_sync(_copy, upload, source)
            report = await self._timed_fold(source, staging, name, label=file_name)
            version = await anyio.to_thread.run_sync(self.repository.commit, staging, name)
        finally:
            self.repository.discard(staging)
        async with self.registry.lock:
            await self.registry.load(self.repository.version_dir(name, version))
            self.registry.count_loaded()
        return name, version, report

    async def _timed_fold(
        self, source: Path, out_dir: Path, name: str, label: str | None = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            report = await self.folder.fold(source, out_dir, name, label)
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
        """Delete one version (``"latest"``: the highest one) or, with no version, all."""
        number = parse_version(version) if version is not None else None
        delete = functools.partial(
            self.repository.delete, name, number, latest=version is not None and number is None
        )
        removed = await anyio.to_thread.run_sync(delete)
        async with self.registry.lock:
            for gone in removed:
                self.registry.forget(name, gone)
            self.registry.count_loaded()
        return removed


def _copy(upload: BinaryIO, target: Path) -> None:
    upload.seek(0)
    with open(target, "wb") as handle:
        shutil.copyfileobj(upload, handle, length=1024 * 1024)


def name_from_file(file_name: str) -> str:
    stem = Path(file_name).stem.lower()
    return re.sub(r"[^a-z0-9._-]", "-", stem).lstrip("._-")[:64]


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
            array = array.astype(meta.dtype)
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
    """Max absolute and relative difference; argmax agreement for 2-D class scores."""
    want = np.asarray(reference, np.float64)
    got = np.asarray(candidate, np.float64)
    scale = float(np.max(np.abs(want))) or 1.0
    max_abs = float(np.max(np.abs(want - got)))
    result: dict[str, Any] = {"max_abs_diff": max_abs, "max_rel_diff": max_abs / scale}
    if want.ndim == 2 and want.shape[1] > 1:
        result["argmax_agreement"] = float(np.mean(want.argmax(axis=1) == got.argmax(axis=1)))
    return result
