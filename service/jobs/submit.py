"""Submitting an upload (server side): admission against the queue and staging limits, the
checks of its fields and files, the copy into a staging folder, and its version number."""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from folding.sources import FORMATS, ONNX, SAME_AS, model_suffix
from service.core.repository import PRECISIONS, Repository, validate_name
from service.errors import InsufficientStorage, InvalidInput, ServingError, TooManyRequests
from service.jobs.in_worker import Variants
from service.jobs.store import JobStore, failed_version, is_terminal
from service.jobs.worker_pool import FoldWorkerPool
from service.settings import Settings

UPLOAD_SUFFIXES = {  # suffix: the name the upload is staged under
    suffix: "original.onnx" if kind == ONNX else f"model{SAME_AS.get(suffix, suffix)}"
    for suffix, kind in FORMATS.items()  # an archive is unpacked into saved_model/ by the worker
}
ARRAY_SUFFIXES = (".npy", ".npz")
RETRY_AFTER_S = 10
"""``Retry-After`` of an upload refused because too much is queued or staged."""
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
"""What a write gets when the disk (or the process's file size limit, or a quota) is full."""

Attachment = tuple[BinaryIO, str | None]
"""An uploaded array file: (file, file name)."""


@dataclass(frozen=True)
class Staged:
    """A submitted upload, its files in ``staging``: what its job runs on."""

    job: dict[str, Any]
    staging: Path
    source: Path
    label: str
    probe: Path | None = None
    recalibrate: Path | None = None
    signature: str | None = None
    variants: Variants | None = None


class Intake:
    """Admits, checks and stages uploads and gives each its job and version number."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        store: JobStore,
        fold_workers: FoldWorkerPool,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.store = store
        self.fold_workers = fold_workers
        self._receiving: dict[object, int] = {}
        """Uploads admitted and still being received: their declared sizes."""

    @contextlib.asynccontextmanager
    async def admitted(self, declared: int | None, running: Collection[str]) -> AsyncIterator[None]:
        """Room for one more upload of ``declared`` bytes, held while it is received
        and submitted: 429 when ``max_queued_jobs`` jobs are unfinished (in any process
        of the repository, ``running`` here, and uploads still arriving here), 507 when
        the staging area would go over ``max_staging_bytes``; both with ``Retry-After``."""
        self.fold_workers.require()
        unfinished, staged = await anyio.to_thread.run_sync(self._occupancy)
        unfinished |= set(running)
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

    async def stage(
        self,
        upload: BinaryIO,
        file_name: str,
        name: str | None,
        probe: Attachment | None = None,
        calibration: Attachment | None = None,
        signature: str | None = None,
        recalibrate: Attachment | None = None,
        precision: str | None = None,
        equalize: bool = False,
    ) -> Staged:
        """Check the upload, copy it to a staging directory and give it its job (queued)
        with the next version number of ``name`` (from the file name when None).

        ``probe``: (file, file name) of a .npy/.npz the fold verifies on; it is kept
        beside the model as probe.npy / probe.npz. ``recalibrate`` (file, file name):
        every BN is recalibrated on that data first. ``precision`` ("fp16,int8"): the
        variants made after folding, calibrated and judged on the ``calibration`` rows
        (else the probes), int8 after cross-layer equalization with ``equalize``; neither
        rows file is kept. A ``.zip`` or ``.tar.gz`` holds a SavedModel; ``signature``
        names its signature."""
        self.fold_workers.require()
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
        name = await self._model_name(name, file_name)
        try:
            staging = await anyio.to_thread.run_sync(self.repository.new_staging)
        except OSError as error:
            raise storage_error(error, "a staging folder for the upload") from None
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
            raise storage_error(error, writing) from None
        except BaseException:
            self.repository.discard(staging)
            raise
        variants = Variants(precisions, calibration_path, equalize) if precisions else None
        return Staged(
            job, staging, source, file_name, probe_path, recalibrate_path, signature, variants
        )

    async def _model_name(self, name: str | None, file_name: str) -> str:
        """The upload's model name: ``name``, else one from the file name that is not
        taken; never one that ends like a precision variant's."""
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
        return name

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


def _holds_version(job: dict[str, Any]) -> bool:
    """Whether a job keeps its version number from the next upload: while it runs, and
    after it failed until the failure is deleted."""
    return not is_terminal(job) or failed_version(job)


def _array_suffix(upload: Attachment | None, field: str) -> str | None:
    """The suffix of an uploaded .npy/.npz array file (None when there is none)."""
    if upload is None:
        return None
    suffix = Path(upload[1] or "").suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InvalidInput(f"{field} file {upload[1]!r} is not a .npy or .npz array file")
    return suffix


def no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in NO_SPACE


def storage_error(error: OSError, what: str) -> ServingError:
    """An upload's write that failed, as the answer: 507 naming what could not be
    written when the disk is full, else a 500 with no path in it."""
    reason = (error.strerror or type(error).__name__).lower()
    if no_space(error):
        return InsufficientStorage(f"{what} could not be written to the model store: {reason}")
    return ServingError(f"{what} could not be written to the model store: {reason}")


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
