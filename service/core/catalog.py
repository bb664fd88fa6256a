"""Model lookup, metadata and the repository index: one answer for every protocol.

What is stored, loaded, being folded or failed is decided here, once, as plain data
(``ModelEntry`` and ``VersionEntry``); REST and gRPC, V2 and TF Serving only render it
in their own words (V2's READY is TF Serving's AVAILABLE, V2's UNAVAILABLE its END).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from service import __version__
from service.core.registry import LoadedVersion, ModelRegistry
from service.core.repository import (
    FOLDED_FILE,
    Repository,
    VersionDir,
    find_version,
    parse_version,
    validate_name,
)
from service.errors import NotFound
from service.jobs.uploads import Uploads
from service.jobs.worker_pool import FoldWorkerPool
from service.runtime.sessions import Runtime, TensorMeta

AVAILABLE, LOADING, UNAVAILABLE = "AVAILABLE", "LOADING", "UNAVAILABLE"
PLATFORM = "onnxruntime_onnx"
NOTHING_TO_FOLD = "no ONNX files and no Keras source to fold"


@dataclass(frozen=True)
class VersionEntry:
    """One version's state: AVAILABLE (loaded), LOADING (being folded, or waiting to be)
    or UNAVAILABLE (it failed: ``reason`` says why, ``error_code`` as a canonical code)."""

    version: int
    state: str
    reason: str = ""
    error_code: str = "OK"
    source: str | None = None
    """The stored source model's file name (``:compare`` can run it as the reference)."""


@dataclass
class ModelEntry:
    name: str
    versions: list[VersionEntry] = field(default_factory=list)
    variant_of: str | None = None
    """For a ``<base>-<precision>`` variant: the base model it is served from."""

    def as_dict(self) -> dict[str, Any]:
        """The model as ``GET /v1/models`` lists it."""
        versions = []
        for entry in self.versions:
            version: dict[str, Any] = {"version": entry.version, "state": entry.state}
            if entry.source is not None:
                version["source"] = entry.source
            if entry.reason:
                version["reason"] = entry.reason
            versions.append(version)
        listed: dict[str, Any] = {"name": self.name, "versions": versions}
        if self.variant_of is not None:
            listed["variant_of"] = self.variant_of
            listed["precision"] = self.name.rsplit("-", 1)[1]
        return listed


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index (V2's ``RepositoryIndex``)."""

    name: str
    version: int
    state: str
    reason: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """A loaded version's V2 metadata."""

    name: str
    version: int
    versions: list[int]
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    execution_provider: str
    platform: str = PLATFORM


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    execution_provider: str
    confinement: dict[str, Any]


class Catalog:
    """Which models and versions there are and in which state: the registry (loaded or
    failed to load), the repository on disk, and the upload jobs (folding or failed)."""

    def __init__(
        self, registry: ModelRegistry, uploads: Uploads, fold_workers: FoldWorkerPool
    ) -> None:
        self.registry = registry
        self.repository: Repository = registry.repository
        self.runtime: Runtime = registry.runtime
        self.uploads = uploads
        self.fold_workers = fold_workers

    # -- lookup ----------------------------------------------------------------------

    def get(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """The loaded version (None or "latest": the highest); NotFound naming why not,
        and for a model whose upload is folding or failed, that upload."""
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

    # -- the catalogue -----------------------------------------------------------------

    async def models(self) -> list[ModelEntry]:
        """Every model on disk with each version's state (the disk is read off the loop),
        and the versions of upload jobs still folding (LOADING, the stage as reason) or
        failed (UNAVAILABLE, the error as reason)."""
        scanned = await anyio.to_thread.run_sync(self.repository.scan)
        listing: dict[str, ModelEntry] = {}
        for name, versions in scanned.items():
            model = listing[name] = ModelEntry(name)
            model.versions = [self._stored(name, number, d) for number, d in versions.items()]
            model.variant_of = next((d.variant_of for d in versions.values() if d.variant_of), None)
        for (name, number), job in (await self.uploads.version_states()).items():
            state = LOADING if job.state == "LOADING" else UNAVAILABLE
            model = listing.setdefault(name, ModelEntry(name))
            model.versions.append(VersionEntry(number, state, job.reason, job.error_code))
        for model in listing.values():
            model.versions.sort(key=lambda entry: entry.version)
        return [listing[name] for name in sorted(listing)]

    def _stored(self, name: str, number: int, directory: VersionDir) -> VersionEntry:
        source = None if directory.source is None else directory.source.name
        if self.registry.has(name, number):
            return VersionEntry(number, AVAILABLE, source=source)
        failure = self.registry.failure(name, number)
        if failure is not None:
            return VersionEntry(number, UNAVAILABLE, failure, UNAVAILABLE, source)
        if directory.source is None:
            return VersionEntry(number, UNAVAILABLE, NOTHING_TO_FOLD, UNAVAILABLE)
        return VersionEntry(number, LOADING, source=source)

    async def catalogue(self) -> list[dict[str, Any]]:
        """``GET /v1/models``'s ``models``."""
        return [model.as_dict() for model in await self.models()]

    async def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version of every model (only the AVAILABLE ones with ``ready_only``)."""
        return [
            IndexEntry(model.name, entry.version, entry.state, entry.reason)
            for model in await self.models()
            for entry in model.versions
            if not ready_only or entry.state == AVAILABLE
        ]

    async def version_status(self, name: str, version: str | None = None) -> list[VersionEntry]:
        """The versions of ``name`` (or the one asked for; "latest": the highest loaded)
        with their states; NotFound for a model or version there is nothing of."""
        model = next((model for model in await self.models() if model.name == name), None)
        if model is None:  # loaded but gone from disk since the last scan, or NotFound
            entries = [VersionEntry(m.version, AVAILABLE) for m in self.versions(name)]
        else:
            entries = model.versions
        if version is None:
            return entries
        number = parse_version(version)
        listed = next((entry for entry in entries if entry.version == number), None)
        if listed is not None:
            return [listed]
        number = self.get(name, version).version  # "latest", or the NotFound
        return [next((e for e in entries if e.version == number), VersionEntry(number, AVAILABLE))]

    # -- metadata ----------------------------------------------------------------------

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self.get(name, version)
        return ModelMetadata(
            name=model.name,
            version=model.version,
            versions=[loaded.version for loaded in self.versions(model.name)],
            inputs=model.inputs,
            outputs=model.outputs,
            execution_provider=model.folded.provider,
        )

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the version is served (a version or model not served: False)."""
        try:
            self.get(name, version)
        except NotFound:
            return False
        return True

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(
            name="foldserve",
            version=__version__,
            execution_provider=self.runtime.provider,
            confinement=self.fold_workers.confinement.to_dict(),
        )

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton-style statistics of one version, every version of ``name``, or all."""
        if name is None:
            loaded = self.registry.loaded()
        elif version is None:
            loaded = self.registry.versions(name)
        else:
            loaded = [self.registry.get(name, version)]
        return [model.stats.as_dict() for model in loaded]
