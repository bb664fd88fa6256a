"""Running an upload job (server side): the fold in a fold worker, its stages and progress,
then the commit into the repository and the load of the new version.

A monitor loop carries each running job's progress from the fold worker's progress
file into the job, refreshes its heartbeat, and stops it when a cancel request
(from any process) appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio

from service.core.registry import ModelRegistry
from service.core.repository import FOLDED_FILE, PRECISIONS, UNFOLDED_FILE, variant_file
from service.errors import InvalidInput, NotReady, ServingError
from service.jobs.store import INTERRUPTED, STAGES, JobStore, failed_version, is_terminal
from service.jobs.submit import Staged, storage_error
from service.jobs.worker_pool import FoldWorkerPool
from service.metrics import Metrics

logger = logging.getLogger("foldserve.uploads")

MONITOR_INTERVAL_S = 0.2
HEARTBEAT_INTERVAL_S = 2.0


@dataclass
class Running:
    """A job this process runs: its record and the task running it."""

    job: dict[str, Any]
    task: asyncio.Task
    seen_progress: str = ""


class JobRunner:
    """Runs the jobs this process owns, each from queued to a finished state."""

    def __init__(
        self,
        registry: ModelRegistry,
        fold_workers: FoldWorkerPool,
        store: JobStore,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.repository = registry.repository
        self.fold_workers = fold_workers
        self.store = store
        self.metrics = metrics
        self.running: dict[str, Running] = {}
        self.stopping = False
        self.failures: dict[str, tuple[int, str]] = {}
        """Per model, the version this process's last upload of it failed on and why: what
        a lookup of a model with no loaded version answers instead of "no model named"."""

    def start(self, staged: Staged) -> None:
        """Run the staged upload's job in a task of its own."""
        task = asyncio.create_task(self._run(staged))
        self.running[staged.job["id"]] = Running(staged.job, task)

    async def stop(self) -> None:
        """Jobs still running are stopped and marked failed, "interrupted"."""
        self.stopping = True
        for running in list(self.running.values()):
            if running.job["state"] != "committing":  # a commit under way is let finish
                running.task.cancel()
        for running in list(self.running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await running.task

    async def _run(self, staged: Staged) -> ServingError | None:
        """The job from queued to a finished state; what failed, as the synchronous
        upload raises it (None when done or cancelled)."""
        job, staging = staged.job, staged.staging
        started = time.perf_counter()
        progress = self.store.progress_file(job["id"])
        try:
            try:
                report = await self.fold_workers.fold(
                    staged.source,
                    staging,
                    job["name"],
                    staged.label,
                    probe=staged.probe,
                    recalibrate=staged.recalibrate,
                    signature=staged.signature,
                    progress=progress,
                    variants=staged.variants,
                )
            finally:
                self.metrics.fold_duration.observe(time.perf_counter() - started)
            self._take_progress(self.running[job["id"]])
            self._enter(job, "committing", None)
            await self._commit(staged)
            self.metrics.fold_jobs.labels("ok").inc()
            self._close_stage(job)
            self.store.finish(job, "done", report=report)
            self.failures.pop(job["name"], None)
            return None
        except asyncio.CancelledError:
            if self.stopping:
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
            self.running.pop(job["id"], None)

    async def _commit(self, staged: Staged) -> None:
        """Check the folded files against the memory limit (422 over it), move them into
        the repository as the job's version, and load it and its variants."""
        job, staging = staged.job, staged.staging
        calibration = None if staged.variants is None else staged.variants.calibration
        for rows in (staged.recalibrate, calibration):
            if rows is not None:
                rows.unlink(missing_ok=True)
        served = [FOLDED_FILE, UNFOLDED_FILE, *map(variant_file, PRECISIONS)]
        checked = [staging / name for name in served if (staging / name).is_file()]
        sessions = sum(path.name != UNFOLDED_FILE for path in checked)  # built on load
        steps = len(checked) + 1 + sessions  # committing's progress counts these
        for done, path in enumerate(checked):
            self._committing(job, done / steps)
            await anyio.to_thread.run_sync(self.registry.runtime.check_memory, path)
        self._committing(job, len(checked) / steps)
        await anyio.to_thread.run_sync(self.repository.commit, staging, job["name"], job["version"])
        async with self.registry.lock:
            committed = self.repository.version_dir(job["name"], job["version"])
            self._committing(job, (len(checked) + 1) / steps)
            await self.registry.load(committed)
            for done, variant in enumerate(self.repository.variants_of(committed)):
                self._committing(job, (len(checked) + 2 + done) / steps)
                await self.registry.load(variant)
            self.registry.count_loaded()

    # -- stages and progress ---------------------------------------------------------

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
        running = self.running.get(job["id"])
        if running is not None:
            self._take_progress(running)

    def _take_progress(self, running: Running) -> None:
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

    async def watch(self) -> None:
        """The monitor loop: progress, heartbeats and cancel requests of running jobs."""
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            for running in list(self.running.values()):
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

    def _note_failure(self, job: dict[str, Any]) -> None:
        if failed_version(job):
            self.failures[job["name"]] = (job["version"], job["error"] or "failed")


def _job_failure(error: Exception, job: dict[str, Any]) -> ServingError:
    """What a job that failed outside the fold (storing or loading its version) says;
    never a server path."""
    what = f"version {job['version']} of '{job['name']}'"
    if isinstance(error, OSError):
        return storage_error(error, what)
    return ServingError(f"{what} could not be stored or loaded: {type(error).__name__}")
