"""The protocol-free core: every protocol's one entry.

Routes of both protocols parse their wire format into numpy arrays, call this,
and render what it returns. Nothing here knows about HTTP. Lookup, metadata and the
repository index are the ``catalog``'s, ``:compare`` the ``comparison``'s; inference,
deletes and the start-up folds are here.
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

from service.core.catalog import Catalog
from service.core.compare import Comparison
from service.core.registry import LoadedVersion, ModelRegistry
from service.core.repository import (
    FOLDED_FILE,
    REPORT_FILE,
    UNFOLDED_FILE,
    Repository,
    VersionDir,
    parse_version,
)
from service.core.validation import validate_inputs
from service.errors import Conflict, InvalidInput, NotFound
from service.jobs.uploads import Uploads
from service.jobs.worker_pool import FoldWorkerPool
from service.metrics import Metrics
from service.runtime.sessions import Runtime
from service.settings import Settings

logger = logging.getLogger("foldserve.dataplane")


class DataPlane:
    """What every route and servicer calls: lookup (``get``, ``versions``; the rest of the
    catalogue is ``catalog``'s), ``infer``, ``:compare`` (``comparison``), uploads
    (``uploads``), ``delete``, and the life cycle (start-up folds, the repository poller)."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        runtime: Runtime,
        fold_workers: FoldWorkerPool,
        metrics: Metrics,
    ) -> None:
        self.settings, self.metrics = settings, metrics
        self.repository, self.runtime, self.fold_workers = repository, runtime, fold_workers
        self.registry = ModelRegistry(settings, repository, runtime, metrics)
        self.uploads = Uploads(settings, self.registry, fold_workers, metrics)
        self.catalog = Catalog(self.registry, self.uploads, fold_workers)
        self.comparison = Comparison(settings, self.registry, fold_workers)
        self.ready = False
        self.draining = False
        self._poller: asyncio.Task | None = None

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        await anyio.to_thread.run_sync(
            self.repository.clean_staging, self.settings.fold_timeout * 2
        )
        if self.settings.prewarm_folder:
            self.fold_workers.prewarm()
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
        self.fold_workers.close()

    async def _fold_missing(self) -> None:
        """Fold every version on disk that has a Keras source but no ONNX files yet.

        With several server processes, each version is folded by whichever claims it
        first; the others pick it up from disk when it is ready. A server without
        TensorFlow leaves them to a server that has it.
        """
        if not self.fold_workers.available:
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

    # -- lookup (the catalog's) ---------------------------------------------------------

    def get(self, name: str, version: str | int | None = None) -> LoadedVersion:
        return self.catalog.get(name, version)

    def versions(self, name: str) -> list[LoadedVersion]:
        return self.catalog.versions(name)

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

    # -- start-up folds and deletes -----------------------------------------------

    async def _timed_fold(self, source: Path, out_dir: Path, name: str) -> dict[str, Any]:
        """A start-up fold, counted and timed as upload jobs are."""
        started = time.perf_counter()
        try:
            report = await self.fold_workers.fold(source, out_dir, name)
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
