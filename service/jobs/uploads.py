"""Uploads as jobs (server side): submit (``submit``), run (``runner``), wait, cancel, and
the state of versions still folding or failed.

The job files are ``service.jobs.store``'s; this process runs the jobs it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio

from service.core.registry import ModelRegistry
from service.errors import Conflict, NotReady, error_code
from service.jobs.runner import MONITOR_INTERVAL_S, JobRunner
from service.jobs.store import STAGES, JobStore, failed_version, is_terminal
from service.jobs.submit import Intake
from service.jobs.worker_pool import FoldWorkerPool
from service.metrics import Metrics
from service.settings import Settings

CANCEL_WAIT_S = 10.0
WAIT_ANSWER_MARGIN_S = 1.0
"""How long before the server's graceful-shutdown timeout the uploads still waiting for
their job answer 503 (at most half the timeout), so that none is cut off with a 500."""


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


class Uploads:
    """The upload jobs of one repository, as this process sees and runs them."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        fold_workers: FoldWorkerPool,
        metrics: Metrics,
    ) -> None:
        self.repository = registry.repository
        self.store = JobStore(
            self.repository.root,
            stale_after=settings.job_stale_after,
            keep_seconds=settings.job_retention,
            keep_count=settings.job_history,
        )
        self.intake = Intake(settings, self.repository, self.store, fold_workers)
        self.runner = JobRunner(registry, fold_workers, self.store, metrics)
        self.failures = self.runner.failures
        self._monitor: asyncio.Task | None = None
        self._closing = asyncio.Event()

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        """Mark the jobs a previous run left unfinished as interrupted; prune old ones."""
        await anyio.to_thread.run_sync(self.store.prune)
        for (name, version), state in sorted((await self.version_states()).items()):
            if state.state == "FAILED":  # the highest failed version of each model
                self.failures[name] = (version, state.reason)
        self._monitor = asyncio.create_task(self.runner.watch())

    async def stop(self) -> None:
        """Jobs still running are stopped and marked failed, "interrupted"."""
        await self.runner.stop()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor

    def shutting_down(self, grace: float) -> None:
        """The server stops in ``grace`` seconds (SIGTERM; its graceful-shutdown timeout):
        an upload still waiting for its job then answers 503 a little before
        (``WAIT_ANSWER_MARGIN_S``). Called in the event loop."""
        delay = max(grace - min(WAIT_ANSWER_MARGIN_S, grace / 2), 0.0)
        asyncio.get_running_loop().call_later(delay, self._closing.set)

    # -- submitting ----------------------------------------------------------------

    def admitted(self, declared: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Room for one more upload of ``declared`` bytes (``Intake.admitted``)."""
        return self.intake.admitted(declared, self.runner.running)

    async def submit(
        self, upload: BinaryIO, file_name: str, *args: Any, **fields: Any
    ) -> dict[str, Any]:
        """Check the upload, copy it to a staging directory, give it the next version
        number and start its job; the job (queued) is returned at once. The fields are
        ``Intake.stage``'s."""
        staged = await self.intake.stage(upload, file_name, *args, **fields)
        self.runner.start(staged)
        return staged.job

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any] | None:
        """Wait for a job of this process to finish: the job when done, None when still
        running after ``timeout`` seconds; raise its error when it failed."""
        running = self.runner.running.get(job_id)
        if running is None:
            return self.store.read(job_id)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            done, _ = await asyncio.wait(
                {running.task, closing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closing.cancel()
        if running.task not in done:
            if closing in done:
                raise NotReady(_stopped_before(running.job))
            return None
        error = running.task.result()
        if error is not None:
            raise error
        return running.job

    # -- cancelling ------------------------------------------------------------------

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job, whichever process runs it; Conflict when it has finished."""
        job = await anyio.to_thread.run_sync(self.store.read, job_id)
        if is_terminal(job):
            raise Conflict(f"job {job_id} has already finished ({job['state']})")
        if job["state"] == "committing":
            raise Conflict(f"job {job_id} is storing its version and can no longer be cancelled")
        running = self.runner.running.get(job_id)
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
        return next(
            (run.job for run in self.runner.running.values() if run.job["name"] == name), None
        )

    # -- reading -------------------------------------------------------------------

    async def jobs(self, limit: int) -> list[dict[str, Any]]:
        return (await anyio.to_thread.run_sync(self.store.all))[:limit]

    async def read(self, job_id: str) -> dict[str, Any]:
        running = self.runner.running.get(job_id)
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


def _stopped_before(job: dict[str, Any]) -> str:
    """Why a waiting upload answers 503 when the server stops before its job ends."""
    what = f"the server is shutting down; job {job['id']} ({job['name']}) "
    if job["state"] == "committing":
        return (
            what + "is storing its version, which is kept: "
            f"GET /v1/jobs/{job['id']} once the server is back"
        )
    return (
        what + f'was still {job["state"]} and is stopped, marked failed ("interrupted"): '
        "it does not resume when the server restarts; upload the model again"
    )
