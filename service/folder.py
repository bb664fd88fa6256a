"""Runs fold jobs and Keras reference predictions in a separate worker process.

TensorFlow is imported only in that process (``service.fold_job``), so the
serving process stays small and keeps answering while a fold runs. One job
runs at a time; a job that crashes or overruns its timeout takes the worker
down with it and a fresh one is started for the next job.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from service import fold_job
from service.errors import Conflict, InvalidInput, NotFound, Unprocessable

logger = logging.getLogger("foldserve.folder")

JOBS_PER_WORKER = 200
"""A fresh worker process after this many jobs: what TensorFlow keeps between
models (it never gives everything back) cannot accumulate without bound."""

NO_TENSORFLOW = (
    "this server is a serving-only image without TensorFlow and cannot fold models: "
    "upload to a server running the full foldserve image, or fold with "
    "'foldserve fold <model.keras> -o <models-dir>/<name>/<version>' and copy the "
    "version directory into the model repository"
)

NO_FOLDING_ON_RAY = (
    "Ray Serve replicas serve models but do not fold them: upload to a foldserve server "
    "started with the default engine ('foldserve serve') on the same model repository, or "
    "fold with 'foldserve fold <model.keras> -o <models-dir>/<name>/<version>'; the "
    "replicas pick the new version up from the repository"
)


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported here, found without importing it."""
    return importlib.util.find_spec("tensorflow") is not None


class Folder:
    def __init__(
        self,
        rtol: float,
        samples: int,
        timeout: float,
        *,
        export_rtol: float | None = None,
        noise_factor: float = 10.0,
        archive_limits: tuple[int, int] | None = None,
        memory_limit_mb: int = 0,
        custom_objects: str = "",
        available: bool | None = None,
        refusal: str = NO_TENSORFLOW,
    ) -> None:
        self.rtol = rtol
        self.samples = samples
        self.timeout = timeout
        self.export_rtol = export_rtol
        self.noise_factor = noise_factor
        self.archive_limits = archive_limits
        self.memory_limit_mb = memory_limit_mb
        self.custom_objects = custom_objects
        """Operator-trusted modules the worker imports (custom Keras layers)."""
        self._context = multiprocessing.get_context("spawn")
        self._over_limit = self._context.Event()
        self.available = tensorflow_installed() if available is None else available
        """False in the serving-only image: folds and Keras predictions are refused."""
        self.refusal = refusal
        """Why, naming where folding runs (the 409's message)."""
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._over_limit.clear()
            recycle = (
                {"max_tasks_per_child": JOBS_PER_WORKER} if sys.version_info >= (3, 11) else {}
            )
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=self._context,
                initializer=fold_job.init_worker,
                initargs=(os.getpid(), self.memory_limit_mb * 1024 * 1024, self._over_limit),
                **recycle,
            )
        return self._pool

    def prewarm(self) -> None:
        """Start the worker and import TensorFlow in it, without waiting."""
        if not self.available:
            logger.info("TensorFlow is not installed: this server serves but does not fold")
            return
        self._ensure_pool().submit(fold_job.warm)

    def require(self) -> None:
        """Raise the 409 naming where folding runs, when it cannot run here."""
        if not self.available:
            raise Conflict(self.refusal)

    async def _call(self, function: Any, *args: Any) -> Any:
        self.require()
        async with self._lock:
            pool = self._ensure_pool()
            future = asyncio.get_running_loop().run_in_executor(pool, function, *args)
            try:
                return await asyncio.wait_for(future, self.timeout)
            except asyncio.CancelledError:  # the job was cancelled: stop its worker too
                self._restart()
                self.prewarm()
                raise
            except asyncio.TimeoutError:
                self._restart()
                raise Unprocessable(
                    f"the fold worker did not finish within {self.timeout:g} s"
                ) from None
            except BrokenProcessPool:
                over_limit = self._over_limit.is_set()
                self._restart()
                if over_limit:
                    raise Unprocessable(
                        f"the fold job went over the fold worker's memory limit of "
                        f"{self.memory_limit_mb} MB (FOLDSERVE_FOLD_MEMORY_LIMIT_MB)"
                    ) from None
                raise InvalidInput("the fold worker crashed on this model") from None

    def _restart(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    async def fold(
        self,
        source: Path,
        out_dir: Path,
        name: str,
        label: str | None = None,
        probe: Path | None = None,
        calibration: Path | None = None,
        signature: str | None = None,
        progress: Path | None = None,
    ) -> dict[str, Any]:
        """Fold ``source`` into ``out_dir``; return the report or raise a ServingError.

        ``source``: a Keras or ONNX file, a SavedModel directory, or a .zip/.tar.gz of
        one (unpacked into ``out_dir/saved_model``); ``signature``: a SavedModel's.

        ``probe``: the user's .npy/.npz verification inputs (else the model's own);
        ``calibration``: a .npy/.npz every BN is recalibrated on before folding;
        ``progress``: a file the worker keeps its stage and progress in.
        Cancelling the awaiting task stops the worker (a fresh one is started)."""
        options = fold_job.FoldOptions(
            rtol=self.rtol,
            samples=self.samples,
            export_rtol=self.export_rtol,
            noise_factor=self.noise_factor,
            probe=None if probe is None else str(probe),
            calibration=None if calibration is None else str(calibration),
            archive_limits=self.archive_limits,
            signature=signature,
            custom_objects=self.custom_objects,
        )
        result = await self._call(
            fold_job.fold_source,
            str(source),
            str(out_dir),
            name,
            options,
            label,
            None if progress is None else str(progress),
        )
        if result["ok"]:
            return result["report"]
        if result["kind"] == "verification":
            raise Unprocessable(result["error"], report=result.get("report"))
        if result["kind"] == "invalid":
            raise InvalidInput(result["error"])
        raise Unprocessable(result["error"])

    async def keras_predict(self, source: Path | None, arrays: list[Any]) -> list[Any]:
        if source is None:
            raise NotFound("this version has no source model to compare against")
        result = await self._call(fold_job.keras_predict, str(source), arrays, self.custom_objects)
        if not result["ok"]:
            raise InvalidInput(f"the source model failed on these inputs: {result['error']}")
        return result["outputs"]

    def close(self) -> None:
        self._restart()
