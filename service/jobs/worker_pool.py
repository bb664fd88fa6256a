"""Runs fold jobs and Keras reference predictions in separate, confined worker processes.

TensorFlow is imported only in those processes (``service.jobs.in_worker``), so the
serving process stays small and keeps answering while a fold runs. Every job
gets a fresh process (``service.jobs.workers``), confined to that job's files
before the model is opened; a spare one is kept warm (TensorFlow imported) so
that a job does not wait for the import. One job runs at a time; a job that
crashes, is cancelled or overruns its timeout has its worker killed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from folding.confine import Capability, ConfinementError, capability
from folding.options import FoldOptions, VerifyOptions
from folding.sources.keras.loading import ArchiveLimits
from service.errors import Conflict, InsufficientStorage, InvalidInput, NotFound, Unprocessable
from service.jobs import in_worker as fold_job
from service.jobs.in_worker import Variants
from service.jobs.workers import MEMORY_EXIT_CODE, Request, WorkerGone, WorkerProcess

logger = logging.getLogger("foldserve.folder")

PRIVATE_TMP = ".tmp"
"""The worker's temporary directory, inside the folder it may write."""

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


class FoldWorkerPool:
    """The server side of the worker boundary: hands fold jobs and source-model
    predictions to fresh, confined worker processes, one at a time."""

    def __init__(
        self,
        rtol: float,
        samples: int,
        timeout: float,
        *,
        export_rtol: float | None = None,
        noise_factor: float = VerifyOptions.noise_factor,
        archive_limits: tuple[int, int] | None = None,
        memory_limit_mb: int = 0,
        file_limit_mb: int = 0,
        custom_objects: str = "",
        skip_scan: bool = False,
        available: bool | None = None,
        refusal: str = NO_TENSORFLOW,
    ) -> None:
        self.timeout = timeout
        limits = None
        if archive_limits is not None:  # total inflated bytes, entries
            limits = ArchiveLimits(max_total_bytes=archive_limits[0], max_entries=archive_limits[1])
        self.options = FoldOptions(
            verify=VerifyOptions(
                rtol=rtol, export_rtol=export_rtol, noise_factor=noise_factor, samples=samples
            ),
            custom_objects=custom_objects,
            archive_limits=limits,
            scan=not skip_scan,
        )
        """What every job is folded with; each upload adds its probes, recalibration rows
        and signature."""
        self.memory_limit_mb = memory_limit_mb
        self.file_limit_mb = file_limit_mb
        self.custom_objects = custom_objects
        """Operator-trusted modules the worker imports (custom Keras layers)."""
        self.skip_scan = skip_scan
        """Tests only: SavedModels are loaded without their op scan."""
        self.available = tensorflow_installed() if available is None else available
        """False in the serving-only image: folds and Keras predictions are refused."""
        self.refusal = refusal
        """Why, naming where folding runs (the 409's message)."""
        self.confinement: Capability = capability()
        """What the kernel confines each worker to (see ``folding.confine``)."""
        self._spare: WorkerProcess | None = None
        self._running: WorkerProcess | None = None
        self._keep_spare = False
        self._lock = asyncio.Lock()

    def _start_spare(self) -> None:
        if self._spare is not None and not self._spare.alive:  # died waiting (OOM killer)
            self._spare.close()
            self._spare = None
        if self.available and self._spare is None:
            self._spare = WorkerProcess(
                self.memory_limit_mb * 1024 * 1024, self.file_limit_mb * 1024 * 1024
            )

    def prewarm(self) -> None:
        """Start a spare worker (importing TensorFlow) without waiting, and keep one
        from now on: each job's worker is replaced as soon as it is handed its job."""
        if not self.available:
            logger.info("TensorFlow is not installed: this server serves but does not fold")
            return
        self._keep_spare = True
        self._start_spare()

    def announce_confinement(self, required: bool = False) -> None:
        """Say in one log line what the fold workers are confined to; with ``required``,
        refuse (``ConfinementError``) when files or TCP cannot be confined here."""
        if not self.available:
            return
        if self.skip_scan:
            logger.warning(
                "FOLDSERVE_UNSAFE_SKIP_SCAN is set: SavedModels are loaded without their op "
                "scan (for tests only)"
            )
        full = self.confinement.files and self.confinement.network
        if required and not full:
            raise ConfinementError(
                f"FOLDSERVE_REQUIRE_CONFINEMENT is set but {self.confinement.describe()}"
            )
        (logger.info if full else logger.warning)("%s", self.confinement.describe())

    def require(self) -> None:
        """Raise the 409 naming where folding runs, when it cannot run here."""
        if not self.available:
            raise Conflict(self.refusal)

    async def _call(
        self,
        request: Request,
        progress: fold_job.StageReporter | None = None,
    ) -> Any:
        """Run ``request`` in a fresh worker confined to its paths (one at a time)."""
        self.require()
        async with self._lock:
            self._start_spare()
            worker, self._spare = self._spare, None
            if worker is None:  # available was checked: a spare was just started
                raise Conflict(self.refusal)
            self._running = worker
            if self._keep_spare:  # the next job's worker warms up while this one runs
                self._start_spare()
            try:  # a cancelled job, or one out of time, has its worker stopped below
                return await asyncio.wait_for(
                    asyncio.to_thread(worker.run, request, progress), self.timeout
                )
            except asyncio.TimeoutError:
                raise Unprocessable(
                    f"the fold worker did not finish within {self.timeout:g} s"
                ) from None
            except WorkerGone as gone:
                if gone.returncode == MEMORY_EXIT_CODE:
                    raise Unprocessable(
                        f"the fold job went over the fold worker's memory limit of "
                        f"{self.memory_limit_mb} MB (FOLDSERVE_FOLD_MEMORY_LIMIT_MB)"
                    ) from None
                raise InvalidInput("the fold worker crashed on this model") from None
            finally:
                self._running = None
                worker.stop()  # ``run`` (in its thread) then reaps it and closes the pipes

    async def fold(
        self,
        source: Path,
        out_dir: Path,
        name: str,
        label: str | None = None,
        probe: Path | None = None,
        recalibrate: Path | None = None,
        signature: str | None = None,
        progress: Path | None = None,
        variants: Variants | None = None,
    ) -> dict[str, Any]:
        """Fold ``source`` into ``out_dir``; return the report or raise a ServingError.

        ``source``: a Keras or ONNX file, a SavedModel directory, or a .zip/.tar.gz of
        one (unpacked into ``out_dir/saved_model``); ``signature``: a SavedModel's.

        ``probe``: the user's .npy/.npz verification inputs (else the model's own);
        ``recalibrate``: a .npy/.npz every BN is recalibrated on before folding;
        ``variants``: the precision variants to make after folding, and their rows;
        ``progress``: a file the worker keeps its stage and progress in.
        Cancelling the awaiting task stops the worker (a fresh one is started)."""
        out_dir = Path(out_dir)
        options = replace(
            self.options,
            verify=replace(self.options.verify, probes=probe),
            recalibrate=recalibrate,
            signature=signature,
        )
        tmp = out_dir / PRIVATE_TMP
        tmp.mkdir(parents=True, exist_ok=True)
        rows = None if variants is None else variants.calibration
        inputs = [path for path in (source, probe, recalibrate, rows) if path is not None]
        request = Request(
            "fold_source",
            (str(source), str(out_dir), name, options, label),
            kwargs={"variants": variants},
            read=tuple(str(path) for path in inputs),
            write=(str(out_dir),),
            tmp=str(tmp),
            custom_objects=self.custom_objects,
            progress=progress is not None,
        )
        try:
            result = await self._call(
                request, None if progress is None else fold_job.StageReporter(str(progress))
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if result["ok"]:
            return result["report"]
        if result["kind"] == "verification":
            raise Unprocessable(result["error"], report=result.get("report"))
        if result["kind"] == "invalid":
            raise InvalidInput(result["error"])
        if result["kind"] == "storage":
            raise InsufficientStorage(result["error"])
        raise Unprocessable(result["error"])

    async def keras_predict(self, source: Path | None, arrays: list[Any]) -> list[Any]:
        if source is None:
            raise NotFound("this version has no source model to compare against")
        tmp = Path(tempfile.mkdtemp(prefix="foldserve-compare-"))
        request = Request(
            "keras_predict",
            (str(source), arrays, self.custom_objects, self.skip_scan),
            read=(str(source.parent),),  # the stored version: its source and signature.txt
            write=(str(tmp),),
            tmp=str(tmp),
            custom_objects=self.custom_objects,
        )
        try:
            result = await self._call(request)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not result["ok"]:
            raise InvalidInput(f"the source model failed on these inputs: {result['error']}")
        return result["outputs"]

    def close(self) -> None:
        self._keep_spare = False
        if self._running is not None:
            self._running.stop()
        if self._spare is not None:
            self._spare.close()
            self._spare = None
