"""The model versions loaded in this process, kept in step with the repository on disk."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from service.core.repository import (
    UNFOLDED_FILE,
    Repository,
    VersionDir,
    find_version,
    parse_version,
)
from service.errors import NotFound
from service.metrics import Metrics
from service.runtime.batching import BatchPolicy, Executor
from service.runtime.sessions import Runtime, Session, TensorMeta
from service.runtime.stats import ModelStats
from service.settings import Settings

logger = logging.getLogger("foldserve.registry")


@dataclass
class LoadedVersion:
    """One served model version: its folded session and, on demand, the unfolded one."""

    name: str
    version: int
    directory: VersionDir
    folded: Session
    executor: Executor
    report: dict[str, Any]
    policy: BatchPolicy
    unfolded: Executor | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def stats(self) -> ModelStats:
        return self.executor.stats

    @property
    def inputs(self) -> list[TensorMeta]:
        return self.folded.inputs

    @property
    def outputs(self) -> list[TensorMeta]:
        return self.folded.outputs


class ModelRegistry:
    """Loads ready versions (one ONNX Runtime session and executor each), drops vanished
    ones, remembers which could not be loaded and why."""

    def __init__(
        self, settings: Settings, repository: Repository, runtime: Runtime, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.runtime = runtime
        self.metrics = metrics
        self.lock = asyncio.Lock()
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._loading: dict[tuple[str, int], asyncio.Future] = {}
        self._failed: dict[tuple[str, int], str] = {}

    async def refresh(self) -> None:
        """Load versions that appeared on disk and drop those that disappeared."""
        async with self.lock:
            on_disk = await anyio.to_thread.run_sync(self.repository.scan)
            ready = {
                (name, version): directory
                for name, versions in on_disk.items()
                for version, directory in versions.items()
                if directory.ready
            }
            for name, versions in list(self._models.items()):
                for version in list(versions):
                    if (name, version) not in ready:
                        self.unload(name, version)
            for (name, version), directory in ready.items():
                if version in self._models.get(name, {}) or (name, version) in self._failed:
                    continue
                await self.load(directory)
            self.count_loaded()

    def count_loaded(self) -> None:
        self.metrics.loaded_models.set(sum(len(v) for v in self._models.values()))

    def mark_failed(self, name: str, version: int, message: str) -> None:
        self._failed[(name, version)] = message

    def forget(self, name: str, version: int) -> None:
        """A deleted version: out of memory and out of the failure list."""
        self.unload(name, version)
        self._failed.pop((name, version), None)

    def policy_for(self, name: str) -> BatchPolicy:
        """The server's batching settings, overridden by ``<name>/config.json``'s
        ``{"dynamic_batching": {"enabled", "max_batch_size",
        "max_queue_delay_microseconds", "instances"}}``."""
        settings = self.settings
        defaults = BatchPolicy(
            enabled=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=settings.max_queue_delay_us,
            instances=settings.instances,
            run_timeout_s=settings.run_timeout_s,
        )
        override = self.repository.model_config(name).get("dynamic_batching", {})
        if not isinstance(override, dict):
            override = {}
        try:
            return dataclasses.replace(
                defaults,
                enabled=bool(override.get("enabled", defaults.enabled)),
                max_batch_size=max(1, int(override.get("max_batch_size", defaults.max_batch_size))),
                max_queue_delay_us=max(
                    0,
                    int(override.get("max_queue_delay_microseconds", defaults.max_queue_delay_us)),
                ),
                instances=max(1, int(override.get("instances", defaults.instances))),
            )
        except (TypeError, ValueError):
            logger.error("%s/config.json has invalid dynamic_batching values; ignored", name)
            return defaults

    def _executor(self, session: Session, policy: BatchPolicy, name: str, version: int) -> Executor:
        stats = ModelStats(name, version)
        return Executor(session, policy, stats, self.metrics.observer(name))

    async def load(self, directory: VersionDir) -> None:
        """Load a version once: a second caller (the poller and an upload, say) waits for
        the first one's load instead of opening a second session."""
        key = (directory.name, directory.version)
        if directory.version in self._models.get(directory.name, {}):
            return
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(directory))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        await asyncio.shield(task)

    async def _load(self, directory: VersionDir) -> None:
        name, version = directory.name, directory.version
        policy = self.policy_for(name)
        try:
            session = await anyio.to_thread.run_sync(
                self.runtime.load, directory.path / directory.folded_file
            )
            executor = self._executor(session, policy, name, version)
        except Exception as error:  # a corrupt ONNX file on disk
            self._failed[(name, version)] = without_store_path(error, directory)
            logger.error("cannot load %s/%d: %s", name, version, error)
            return
        loaded = LoadedVersion(
            name, version, directory, session, executor, directory.report(), policy
        )
        self._models.setdefault(directory.name, {})[directory.version] = loaded
        logger.info("serving %s/%d on %s", directory.name, directory.version, session.provider)

    def unload(self, name: str, version: int) -> None:
        versions = self._models.get(name, {})
        model = versions.pop(version, None)
        if model is not None:
            model.executor.close()
        if not versions:
            self._models.pop(name, None)
        logger.info("unloaded %s/%d", name, version)

    def get(self, name: str, version: str | int | None = None) -> LoadedVersion:
        number = parse_version(version)
        if name not in self._models:
            if any(key[0] == name for key in self._failed):
                raise NotFound(f"model '{name}' has no version that could be loaded")
            raise NotFound(f"no model named '{name}'")
        return find_version(self._models, name, number)[1]

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def versions(self, name: str) -> list[LoadedVersion]:
        if name not in self._models:
            raise NotFound(f"no model named '{name}'")
        return [self._models[name][v] for v in sorted(self._models[name])]

    def loaded(self) -> list[LoadedVersion]:
        return [model for versions in self._models.values() for model in versions.values()]

    def has(self, name: str, version: int) -> bool:
        """Whether ``name``'s ``version`` is loaded."""
        return version in self._models.get(name, {})

    def failure(self, name: str, version: int) -> str | None:
        """Why ``name``'s ``version`` could not be loaded (None: it did not fail)."""
        return self._failed.get((name, version))

    async def executor_of(self, model: LoadedVersion, variant: str) -> Executor:
        if variant == "folded":
            return model.executor
        if model.unfolded is None:
            path = model.directory.path / UNFOLDED_FILE
            try:
                session = await anyio.to_thread.run_sync(
                    functools.partial(self.runtime.load, path, unfolded=True)
                )
            except Exception as error:  # missing or unreadable: ONNX Runtime's own kinds
                raise NotFound(
                    f"model '{model.name}' version {model.version} has no usable "
                    f"{UNFOLDED_FILE} to compare against "
                    f"({without_store_path(error, model.directory)[:200]})"
                ) from None
            unbatched = dataclasses.replace(model.policy, enabled=False)
            model.unfolded = self._executor(session, unbatched, model.name, model.version)
        return model.unfolded


def without_store_path(error: Exception, directory: VersionDir) -> str:
    """The first line of an error about a version's file, naming the file inside the
    repository (``name/version/model.onnx``), never where the repository is."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0].replace(f"{directory.path.parent.parent}{os.sep}", "")
