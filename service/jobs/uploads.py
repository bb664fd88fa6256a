"""Uploads as jobs: submit (checks, staging, a version number), run (the fold worker,
its stages and progress), cancel, and the state of versions still folding or failed.

The job files are ``service.jobs.store``'s; this module runs the jobs this process owns.
A monitor loop carries each running job's progress from the fold worker's progress
file into the job, refreshes its heartbeat, and stops it when a cancel request
(from any process) appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from folding.sources import FORMATS, ONNX, SAME_AS, model_suffix
from service.core.registry import ModelRegistry
from service.core.repository import (
    FOLDED_FILE,
    PRECISIONS,
    UNFOLDED_FILE,
    Repository,
    validate_name,
    variant_file,
)
from service.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotReady,
    ServingError,
    TooManyRequests,
    error_code,
)
from service.jobs.folder import Folder, Variants
from service.jobs.store import INTERRUPTED, STAGES, JobStore, failed_version, is_terminal
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger("foldserve.uploads")

UPLOAD_SUFFIXES = {  # suffix: the name the upload is staged under
    suffix: "original.onnx" if kind == ONNX else f"model{SAME_AS.get(suffix, suffix)}"
    for suffix, kind in FORMATS.items()  # an archive is unpacked into saved_model/ by the worker
}
ARRAY_SUFFIXES = (".npy", ".npz")
MONITOR_INTERVAL_S = 0.2
HEARTBEAT_INTERVAL_S = 2.0
CANCEL_WAIT_S = 10.0
RETRY_AFTER_S = 10
"""``Retry-After`` of an upload refused because too much is queued or staged."""
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
"""What a write gets when the disk (or the process's file size limit, or a quota) is full."""


@dataclass(frozen=True)
class VersionState:
    """A version known from its job: still folding (``LOADING``) or ``FAILED``."""

    state: str
    reason: str
    status_code: int | None = None

    @property
    def error_code(self) -> str:
        if self.state == "LOADING":
            return "OK"
        return error_code(self.status_code)


@dataclass
class _Running:
    job: dict[str, Any]
    task: asyncio.Task
    seen_progress: str = ""


class Uploads:
    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        registry: ModelRegistry,
        folder: Folder,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.registry = registry
        self.folder = folder
        self.metrics = metrics
        self.store = JobStore(
            repository.root,
            stale_after=settings.job_stale_after,
            keep_seconds=settings.job_retention,
            keep_count=settings.job_history,
        )
        self._running: dict[str, _Running] = {}
        self._receiving: dict[object, int] = {}
        """Uploads admitted and still being received: their declared sizes."""
        self._monitor: asyncio.Task | None = None
        self._stopping = False
        self.failures: dict[str, tuple[int, str]] = {}
        """Per model, the version this process's last upload of it failed on and why: what
        a lookup of a model with no loaded version answers instead of "no model named"."""

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        """Mark the jobs a previous run left unfinished as interrupted; prune old ones."""
        await anyio.to_thread.run_sync(self.store.prune)
        for (name, version), state in sorted((await self.version_states()).items()):
            if state.state == "FAILED":  # the highest failed version of each model
                self.failures[name] = (version, state.reason)
        self._monitor = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Jobs still running are stopped and marked failed, "interrupted"."""
        self._stopping = True
        for running in list(self._running.values()):
            if running.job["state"] != "committing":  # a commit under way is let finish
                running.task.cancel()
        for running in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor

    # -- submitting ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admitted(self, declared: int | None) -> AsyncIterator[None]:
        """Room for one more upload of ``declared`` bytes, held while it is received
        and submitted: 429 when ``max_queued_jobs`` jobs are unfinished (in any process
        of the repository, and uploads still arriving here), 507 when the staging area
        would go over ``max_staging_bytes``; both with ``Retry-After``."""
        self.folder.require()
        unfinished, staged = await anyio.to_thread.run_sync(self._occupancy)
        unfinished |= set(self._running)
        limit = self.settings.max_queued_jobs
        if len(unfinished) + len(self._receiving) >= limit:
            raise TooManyRequests(
                f"{limit} upload jobs are already queued or folding (the limit, "
                "FOLDSERVE_MAX_QUEUED_JOBS); try again when one has finished",
                RETRY_AFTER_S,
            )
        held = staged + sum(self._receiving.values())
        budget = self.settings.max_staging_bytes
        if held + (declared or 0) > budget:
            raise InsufficientStorage(
                f"uploads being folded hold {held} bytes of staging; this upload of "
                f"{declared or 0} bytes would go over the limit of {budget} bytes "
                "(FOLDSERVE_MAX_STAGING_BYTES); try again when one has finished",
                RETRY_AFTER_S,
            )
        token = object()
        self._receiving[token] = declared or 0
        try:
            yield
        finally:
            del self._receiving[token]

    def _occupancy(self) -> tuple[set[str], int]:
        """The ids of unfinished jobs, and the bytes in the staging area."""
        unfinished = {job["id"] for job in self.store.all() if not is_terminal(job)}
        return unfinished, self.repository.staging_bytes()

    async def submit(
        self,
        upload: BinaryIO,
        file_name: str,
        name: str | None,
        probe: tuple[BinaryIO, str | None] | None = None,
        calibration: tuple[BinaryIO, str | None] | None = None,
        signature: str | None = None,
        recalibrate: tuple[BinaryIO, str | None] | None = None,
        precision: str | None = None,
        equalize: bool = False,
    ) -> dict[str, Any]:
        """Check the upload, copy it to a staging directory, give it the next version
        number of ``name`` and start its job; the job (queued) is returned at once.

        ``probe``: (file, file name) of a .npy/.npz the fold verifies on; it is kept
        beside the model as probe.npy / probe.npz. ``recalibrate`` (file, file name):
        every BN is recalibrated on that data first. ``precision`` ("fp16,int8"): the
        variants made after folding, calibrated and judged on the ``calibration`` rows
        (else the probes), int8 after cross-layer equalization with ``equalize``; neither
        rows file is kept. A ``.zip`` or ``.tar.gz`` holds a SavedModel; ``signature``
        names its signature."""
        self.folder.require()
        probe_suffix = _array_suffix(probe, "probe")
        calibration_suffix = _array_suffix(calibration, "calibration")
        recalibrate_suffix = _array_suffix(recalibrate, "recalibrate")
        precisions = parse_precision(precision)
        if calibration is not None and not precisions:
            raise InvalidInput(
                "form field 'calibration' holds the rows that calibrate the precision "
                "variants: send 'precision' (fp16, int8) with it, or send the rows as "
                "'recalibrate' to re-estimate the BN statistics before folding"
            )
        if equalize and "int8" not in precisions:
            raise InvalidInput(
                "form field 'equalize' applies to the int8 variant: send precision=int8"
            )
        suffix = upload_suffix(file_name)
        if suffix is None:
            raise InvalidInput(
                f"uploaded file {file_name!r} is not a model file: expected .keras, .h5, .onnx, "
                "or a SavedModel as .zip or .tar.gz"
            )
        if not name:
            name = validate_name(name_from_file(file_name))
            existing = await anyio.to_thread.run_sync(self.repository.scan)
            if name in existing:
                raise InvalidInput(
                    f"no 'name' given, and a model named '{name}' (from the file name) exists: "
                    f"send name={name} to add a version to it, or another name"
                )
        name = validate_name(name)
        if name.rsplit("-", 1)[-1] in PRECISIONS:
            raise InvalidInput(
                f"model name {name!r} ends like a precision variant's: names ending in "
                f"{', '.join('-' + p for p in PRECISIONS)} are kept for the variants "
                "(upload the base model with precision=... instead)"
            )
        try:
            staging = await anyio.to_thread.run_sync(self.repository.new_staging)
        except OSError as error:
            raise _storage_error(error, "a staging folder for the upload") from None
        writing = f"the model file ({UPLOAD_SUFFIXES[suffix]})"
        try:
            source = staging / UPLOAD_SUFFIXES[suffix]
            await anyio.to_thread.run_sync(_copy, upload, source)
            probe_path = calibration_path = recalibrate_path = None
            if probe is not None:
                writing = "the probe file"
                probe_path = staging / f"probe{probe_suffix}"
                await anyio.to_thread.run_sync(_copy, probe[0], probe_path)
            if calibration is not None:
                writing = "the calibration file"
                calibration_path = staging / f".calibration{calibration_suffix}"
                await anyio.to_thread.run_sync(_copy, calibration[0], calibration_path)
            if recalibrate is not None:
                writing = "the recalibrate file"
                recalibrate_path = staging / f".recalibrate{recalibrate_suffix}"
                await anyio.to_thread.run_sync(_copy, recalibrate[0], recalibrate_path)
            writing = "the upload's job record"
            job = await anyio.to_thread.run_sync(self._create, name, file_name, staging.name)
        except OSError as error:
            self.repository.discard(staging)
            raise _storage_error(error, writing) from None
        except BaseException:
            self.repository.discard(staging)
            raise
        variants = None
        if precisions:
            variants = Variants(precisions, calibration_path, equalize)
        task = asyncio.create_task(
            self._run(
                job, staging, source, file_name, probe_path, recalibrate_path, signature, variants
            )
        )
        self._running[job["id"]] = _Running(job, task)
        return job

    def _create(self, name: str, file_name: str, staging: str) -> dict[str, Any]:
        """The job, with the next version of ``name``: one past those on disk and those
        of its jobs still running or failed (under the repository lock); old finished
        jobs are pruned first."""
        with self.repository.locked():
            self.store.prune()  # keeps the finished jobs bounded while the server runs
            on_disk = self.repository.scan().get(name, {})
            taken = [
                job["version"]
                for job in self.store.all()
                if job["name"] == name and _holds_version(job)
            ]
            version = max([*on_disk, *taken], default=0) + 1
            return self.store.create(name, version, file_name, staging)

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any] | None:
        """Wait for a job of this process to finish: the job when done, None when still
        running after ``timeout`` seconds; raise its error when it failed."""
        running = self._running.get(job_id)
        if running is None:
            return self.store.read(job_id)
        done, _ = await asyncio.wait({running.task}, timeout=timeout)
        if not done:
            return None
        error = running.task.result()
        if error is not None:
            raise error
        return running.job

    # -- running -------------------------------------------------------------------

    async def _run(
        self,
        job: dict[str, Any],
        staging: Path,
        source: Path,
        label: str,
        probe: Path | None,
        recalibrate: Path | None,
        signature: str | None = None,
        variants: Variants | None = None,
    ) -> ServingError | None:
        """The job from queued to a finished state; what failed, as the synchronous
        upload raises it (None when done or cancelled)."""
        started = time.perf_counter()
        progress = self.store.progress_file(job["id"])
        try:
            try:
                report = await self.folder.fold(
                    source,
                    staging,
                    job["name"],
                    label,
                    probe=probe,
                    recalibrate=recalibrate,
                    signature=signature,
                    progress=progress,
                    variants=variants,
                )
            finally:
                self.metrics.fold_duration.observe(time.perf_counter() - started)
            self._take_progress(self._running[job["id"]])
            self._enter(job, "committing", None)
            for rows in (recalibrate, None if variants is None else variants.calibration):
                if rows is not None:
                    rows.unlink(missing_ok=True)
            served = [FOLDED_FILE, UNFOLDED_FILE, *map(variant_file, PRECISIONS)]
            checked = [staging / name for name in served if (staging / name).is_file()]
            sessions = sum(path.name != UNFOLDED_FILE for path in checked)  # built on load
            steps = len(checked) + 1 + sessions  # committing's progress counts these
            for done, path in enumerate(checked):  # over the memory limit: 422
                self._committing(job, done / steps)
                await anyio.to_thread.run_sync(self.registry.runtime.check_memory, path)
            self._committing(job, len(checked) / steps)
            await anyio.to_thread.run_sync(
                self.repository.commit, staging, job["name"], job["version"]
            )
            async with self.registry.lock:
                committed = self.repository.version_dir(job["name"], job["version"])
                self._committing(job, (len(checked) + 1) / steps)
                await self.registry.load(committed)
                for done, variant in enumerate(self.repository.variants_of(committed)):
                    self._committing(job, (len(checked) + 2 + done) / steps)
                    await self.registry.load(variant)
                self.registry.count_loaded()
            self.metrics.fold_jobs.labels("ok").inc()
            self._close_stage(job)
            self.store.finish(job, "done", report=report)
            self.failures.pop(job["name"], None)
            return None
        except asyncio.CancelledError:
            if self._stopping:
                self.store.finish(job, "failed", error=INTERRUPTED, status_code=503)
                return NotReady("the server shut down before the upload was folded")
            self.store.finish(job, "cancelled")
            return None
        except ServingError as error:
            outcome = "refused" if isinstance(error, InvalidInput) else "failed"
            self.metrics.fold_jobs.labels(outcome).inc()
            self._catch_up(job)
            stage = job["state"]
            self._close_stage(job)
            self.store.finish(
                job,
                "failed",
                error=(error.message.strip().splitlines() or ["failed"])[0],
                status_code=error.status_code,
                report=error.extra.get("report"),
                failed_stage=stage,
            )
            self._note_failure(job)
            return error
        except Exception as error:  # the repository or a session load went wrong
            logger.exception("upload job %s failed", job["id"])
            self.metrics.fold_jobs.labels("failed").inc()
            failure = _job_failure(error, job)
            self._catch_up(job)
            self.store.finish(
                job,
                "failed",
                error=failure.message,
                status_code=failure.status_code,
                failed_stage=job["state"],
            )
            self._note_failure(job)
            return failure
        finally:
            self.repository.discard(staging)
            progress.unlink(missing_ok=True)
            self._running.pop(job["id"], None)

    def _enter(self, job: dict[str, Any], stage: str, at: float | None) -> None:
        """Move ``job`` into ``stage``, timing the stage it leaves."""
        now = at or time.time()
        if job["state"] != stage:
            self._close_stage(job, now)
            if job["state"] == "queued":
                job["started_at"] = now
            job["state"] = stage
            job["stage_started_at"] = now
        job["progress"] = None
        self.store.write(job)

    def _committing(self, job: dict[str, Any], progress: float) -> None:
        """Committing's progress, so that a big model's checks and session loads (seconds
        each) show as movement rather than a frozen bar."""
        job["progress"] = round(min(progress, 1.0), 3)
        self.store.write(job)

    def _close_stage(self, job: dict[str, Any], now: float | None = None) -> None:
        begun = job.pop("stage_started_at", None) or job["created_at"]
        job["timings"][job["state"]] = round((now or time.time()) - begun, 4)

    def _catch_up(self, job: dict[str, Any]) -> None:
        """A failed job takes in the stages its worker reported last, so that the stage it
        is recorded as having failed in is the one the worker was in."""
        running = self._running.get(job["id"])
        if running is not None:
            self._take_progress(running)

    def _take_progress(self, running: _Running) -> None:
        """Bring the fold worker's stage and progress into the job when they changed."""
        try:
            text = self.store.progress_file(running.job["id"]).read_text()
            reported = json.loads(text)
        except (OSError, ValueError):
            return
        if text == running.seen_progress or reported.get("stage") not in STAGES:
            return
        running.seen_progress = text
        job = running.job
        started = reported.get("started", {})
        for stage in STAGES[STAGES.index(job["state"]) + 1 :]:
            if stage in started:
                self._enter(job, stage, started[stage])
        job["progress"] = reported.get("progress")
        self.store.write(job)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            for running in list(self._running.values()):
                job = running.job
                if is_terminal(job) or running.task.done():
                    continue
                try:
                    committing = job["state"] == "committing"
                    if not committing and self.store.cancel_requested(job["id"]):
                        running.task.cancel()
                        continue
                    self._take_progress(running)
                    if time.time() - job["heartbeat_at"] > HEARTBEAT_INTERVAL_S:
                        self.store.write(job)
                except OSError:  # a full or vanished disk: try again on the next round
                    logger.exception("cannot update job %s", job["id"])

    # -- cancelling ------------------------------------------------------------------

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job, whichever process runs it; Conflict when it has finished."""
        job = await anyio.to_thread.run_sync(self.store.read, job_id)
        if is_terminal(job):
            raise Conflict(f"job {job_id} has already finished ({job['state']})")
        if job["state"] == "committing":
            raise Conflict(f"job {job_id} is storing its version and can no longer be cancelled")
        running = self._running.get(job_id)
        if running is not None:
            # checked again with no await before the cancel: the job may have gone on
            # to commit while its file was read
            if running.job["state"] == "committing":
                raise Conflict(
                    f"job {job_id} is storing its version and can no longer be cancelled"
                )
            running.task.cancel()
            await asyncio.wait({running.task})
            job = running.job
        else:
            await anyio.to_thread.run_sync(self.store.request_cancel, job_id)
            deadline = time.monotonic() + CANCEL_WAIT_S
            while not is_terminal(job) and time.monotonic() < deadline:
                await asyncio.sleep(MONITOR_INTERVAL_S / 2)
                job = await anyio.to_thread.run_sync(self.store.read, job_id)
        if job["state"] in ("done", "failed"):
            raise Conflict(f"job {job_id} finished ({job['state']}) before it could be cancelled")
        return job

    def folding(self, name: str) -> dict[str, Any] | None:
        """The job this process is folding a version of ``name`` in, if any."""
        return next((run.job for run in self._running.values() if run.job["name"] == name), None)

    def _note_failure(self, job: dict[str, Any]) -> None:
        if failed_version(job):
            self.failures[job["name"]] = (job["version"], job["error"] or "failed")

    # -- reading -------------------------------------------------------------------

    async def jobs(self, limit: int) -> list[dict[str, Any]]:
        return (await anyio.to_thread.run_sync(self.store.all))[:limit]

    async def read(self, job_id: str) -> dict[str, Any]:
        running = self._running.get(job_id)
        if running is not None:
            return running.job
        return await anyio.to_thread.run_sync(self.store.read, job_id)

    async def version_states(self) -> dict[tuple[str, int], VersionState]:
        """The versions not on disk that jobs account for: folding, or failed (until
        deleted, or until a later version of the model is on disk)."""
        jobs, on_disk = await anyio.to_thread.run_sync(
            lambda: (self.store.all(), self.repository.scan())
        )
        states: dict[tuple[str, int], VersionState] = {}
        for job in jobs:  # newest first: the newest job of a version speaks for it
            key = (job["name"], job["version"])
            versions = on_disk.get(job["name"], {})
            if key in states or job["version"] in versions:
                continue
            if not is_terminal(job):
                reason = f"{job['state']} (upload job {job['id']})"
                states[key] = VersionState("LOADING", reason)
            elif failed_version(job):
                if any(version > job["version"] for version in versions):
                    continue
                states[key] = VersionState("FAILED", job["error"] or "failed", job["status_code"])
        return states

    async def failure(self, name: str, version: int | None) -> dict[str, Any] | None:
        """What a failed version's report page shows: the newest failed job of ``name``'s
        ``version`` (the highest failed one for None) that is still listed, else None."""
        states = await self.version_states()
        failed = sorted(
            number
            for (model, number), state in states.items()
            if model == name and state.state == "FAILED" and version in (None, number)
        )
        if not failed:
            return None
        jobs = await anyio.to_thread.run_sync(self.store.all)
        job = next(j for j in jobs if j["name"] == name and j["version"] == failed[-1])
        stage = job.get("failed_stage") or next(
            (stage for stage in reversed(STAGES) if stage in job.get("timings", {})), "queued"
        )
        return {
            "name": name,
            "version": job["version"],
            "failed": True,
            "failure": {
                "stage": stage,
                "error": job["error"],
                "status_code": job["status_code"],
                "job": job["id"],
                "file": job["filename"],
                "timings": job.get("timings", {}),
            },
            # a verification failure keeps the report of what was folded and measured
            "report": job.get("report"),
        }

    async def dismiss(self, name: str, version: int | None) -> list[int]:
        """Hide the failed jobs of ``name`` (one version, or all): a user's delete."""

        def dismiss() -> list[int]:
            gone = []
            for job in self.store.all():
                if job["name"] != name or not failed_version(job):
                    continue
                if version is None or job["version"] == version:
                    self.store.dismiss(job)
                    gone.append(job["version"])
            return sorted(set(gone))

        return await anyio.to_thread.run_sync(dismiss)


def _holds_version(job: dict[str, Any]) -> bool:
    """Whether a job keeps its version number from the next upload: while it runs, and
    after it failed until the failure is deleted."""
    return not is_terminal(job) or failed_version(job)


def _array_suffix(upload: tuple[BinaryIO, str | None] | None, field: str) -> str | None:
    """The suffix of an uploaded .npy/.npz array file (None when there is none)."""
    if upload is None:
        return None
    suffix = Path(upload[1] or "").suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InvalidInput(f"{field} file {upload[1]!r} is not a .npy or .npz array file")
    return suffix


def no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE


def _storage_error(error: OSError, what: str) -> ServingError:
    """An upload's write that failed, as the answer: 507 naming what could not be
    written when the disk is full, else a 500 with no path in it."""
    reason = (error.strerror or type(error).__name__).lower()
    if no_space(error):
        return InsufficientStorage(f"{what} could not be written to the model store: {reason}")
    return ServingError(f"{what} could not be written to the model store: {reason}")


def _job_failure(error: Exception, job: dict[str, Any]) -> ServingError:
    """What a job that failed outside the fold (storing or loading its version) says;
    never a server path."""
    what = f"version {job['version']} of '{job['name']}'"
    if isinstance(error, OSError):
        return _storage_error(error, what)
    return ServingError(f"{what} could not be stored or loaded: {type(error).__name__}")


def _copy(upload: BinaryIO, target: Path) -> None:
    upload.seek(0)
    with open(target, "wb") as handle:
        shutil.copyfileobj(upload, handle, length=1024 * 1024)


def upload_suffix(file_name: str | None) -> str | None:
    """The key of ``UPLOAD_SUFFIXES`` that ``file_name`` ends with (``.tar.gz`` too)."""
    return model_suffix(file_name)


def name_from_file(file_name: str) -> str:
    suffix = upload_suffix(file_name) or Path(file_name).suffix
    stem = Path(file_name[: len(file_name) - len(suffix)] if suffix else file_name).name.lower()
    return re.sub(r"[^a-z0-9._-]", "-", stem).lstrip("._-")[:64]


def parse_precision(text: str | None) -> tuple[str, ...]:
    """The upload's ``precision`` field, ``"fp16,int8"``: the variants to make."""
    from folding.errors import FoldingError
    from folding.precision import parse_precisions

    try:
        return parse_precisions(text)
    except FoldingError as error:
        raise InvalidInput(f"form field 'precision': {error} (comma-separated)") from None
