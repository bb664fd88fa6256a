"""The model repository on disk: ``<root>/<name>/<version>/``.

A version directory holds the source model (``model.keras``, ``model.h5``,
``original.onnx``, or a SavedModel directory ``saved_model/`` with the signature
it was folded with in ``signature.txt``), the folded ``model.onnx``,
``unfolded.onnx`` and ``report.json``.
A version is *ready* once its ``model.onnx`` exists. New versions are built in
``<root>/.staging/`` and renamed into place, so no reader ever sees half a
model; deletions are renamed out of the way before they are removed. Several
server processes share one repository: writes take a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Reduced-precision variants written beside model.onnx (``foldserve fold --precision``): each
# is served as a model of its own, ``<name>-<precision>``, with the base model's versions.
from folding.precision import PRECISIONS, variant_file
from folding.publish import FOLDED_FILE, REPORT_FILE, UNFOLDED_FILE  # noqa: F401 (served here)
from service.errors import Conflict, InvalidInput, NotFound

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SOURCE_FILES = ("model.keras", "model.h5", "original.onnx", "saved_model")
SAVED_MODEL_DIR = "saved_model"
CONFIG_FILE = "config.json"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²', which ``int`` refuses."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def parse_version(version: str | int | None) -> int | None:
    """``None`` and ``"latest"`` mean the highest version; otherwise a positive integer."""
    if version is None or version == "latest":
        return None
    text = str(version)
    if not _is_number(text) or int(text) < 1:
        raise InvalidInput(f"invalid model version {text!r}: expected a positive integer")
    return int(text)


@dataclass(frozen=True)
class VersionDir:
    name: str
    version: int
    path: Path
    folded_file: str = FOLDED_FILE  # what is served: model.onnx, or a variant's file
    variant_of: str | None = None  # the base model of a ``<name>-<precision>`` variant

    @property
    def ready(self) -> bool:
        return (self.path / self.folded_file).is_file()

    @property
    def source(self) -> Path | None:
        for file_name in SOURCE_FILES:
            path = self.path / file_name
            if path.is_file() or (file_name == SAVED_MODEL_DIR and path.is_dir()):
                return path
        return None

    def report(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / REPORT_FILE).read_text())
        except (OSError, ValueError):
            return {}


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".staging").mkdir(exist_ok=True)

    def scan(self) -> dict[str, dict[int, VersionDir]]:
        """Every model and version on disk, ready or not (hidden entries skipped), and
        each precision variant as a model of its own (a model stored under that name wins)."""
        models = self._scan_stored()
        variants: dict[str, dict[int, VersionDir]] = {}
        for versions in models.values():
            for number, directory in versions.items():
                for variant in self.variants_of(directory):
                    variants.setdefault(variant.name, {})[number] = variant
        for alias, versions in variants.items():
            if alias not in models and NAME_PATTERN.fullmatch(alias):
                models[alias] = dict(sorted(versions.items()))
        return dict(sorted(models.items()))

    def variants_of(self, directory: VersionDir) -> list[VersionDir]:
        """The precision variants stored in ``directory``, each as its own model's version."""
        return [
            VersionDir(
                f"{directory.name}-{precision}",
                directory.version,
                directory.path,
                variant_file(precision),
                directory.name,
            )
            for precision in PRECISIONS
            if (directory.path / variant_file(precision)).is_file()
        ]

    def _scan_stored(self) -> dict[str, dict[int, VersionDir]]:
        models: dict[str, dict[int, VersionDir]] = {}
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not NAME_PATTERN.fullmatch(model_dir.name):
                continue
            versions = {}
            for version_dir in model_dir.iterdir():
                if version_dir.is_dir() and _is_number(version_dir.name) and int(version_dir.name):
                    number = int(version_dir.name)
                    versions[number] = VersionDir(model_dir.name, number, version_dir)
            if versions:
                models[model_dir.name] = dict(sorted(versions.items()))
        return models

    def model_config(self, name: str) -> dict[str, Any]:
        """``<root>/<name>/config.json``, the settings of every version of ``name``
        (``{}`` when absent or unreadable)."""
        try:
            config = json.loads((self.root / validate_name(name) / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    def version_dir(self, name: str, version: int) -> VersionDir:
        validate_name(name)
        return VersionDir(name, version, self.root / name / str(version))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock shared by every process using this repository."""
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def claim(self, target: VersionDir) -> Iterator[bool]:
        """Try to become the one process that builds ``target``'s missing files.

        Yields False at once when another process holds the claim.
        """
        with open(target.path / ".build.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def new_staging(self) -> Path:
        path = self.root / ".staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, name: str, version: int | None = None) -> int:
        """Move a fully built staging directory in as ``version`` of ``name`` (None:
        the next one); Conflict when that version exists."""
        validate_name(name)
        with self.locked():
            model_dir = self.root / name
            model_dir.mkdir(exist_ok=True)
            if version is None:
                existing = [int(p.name) for p in model_dir.iterdir() if _is_number(p.name)]
                version = max(existing, default=0) + 1
            if (model_dir / str(version)).exists():
                raise Conflict(f"model '{name}' already has a version {version}")
            os.rename(staging, model_dir / str(version))
        return version

    def complete(self, staging: Path, target: VersionDir, files: tuple[str, ...]) -> None:
        """Move built files into an existing version, ``model.onnx`` last (it marks ready)."""
        ordered = sorted(files, key=lambda file_name: file_name == FOLDED_FILE)
        for file_name in ordered:
            os.replace(staging / file_name, target.path / file_name)

    def delete(self, name: str, version: int | None = None, *, latest: bool = False) -> list[int]:
        """Remove one version, the highest one (``latest``), or every version of ``name``;
        returns the versions removed."""
        validate_name(name)
        with self.locked():
            versions = self.scan().get(name, {})
            base = next((d.variant_of for d in versions.values() if d.variant_of), None)
            if base is not None:
                raise Conflict(
                    f"'{name}' is a precision variant of model '{base}'; it goes with the "
                    f"version of '{base}' it was made from: delete that version"
                )
            if latest:
                if not versions:
                    raise NotFound(f"no model named '{name}'")
                version = max(versions)
            if version is not None:
                if version not in versions:
                    raise NotFound(f"model '{name}' has no version {version}")
                doomed = [versions[version].path]
                removed = [version]
            else:
                if not versions:
                    raise NotFound(f"no model named '{name}'")
                doomed = [self.root / name]
                removed = list(versions)
            trash = self.root / ".staging" / f"deleted-{uuid.uuid4().hex}"
            trash.mkdir()
            for index, path in enumerate(doomed):
                os.rename(path, trash / str(index))
            model_dir = self.root / name
            if model_dir.is_dir() and not any(model_dir.iterdir()):
                model_dir.rmdir()
        shutil.rmtree(trash, ignore_errors=True)
        return removed

    def staging_bytes(self) -> int:
        """Bytes of the files in ``.staging`` (uploads being folded, and leftovers)."""
        total = 0
        for folder, _, files in os.walk(self.root / ".staging"):
            for file_name in files:
                with contextlib.suppress(OSError):  # gone meanwhile
                    total += os.lstat(os.path.join(folder, file_name)).st_size
        return total

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def clean_staging(self, older_than: float) -> None:
        """Remove what crashed uploads left in ``.staging`` (never visible as a model).

        Only entries older than ``older_than`` seconds go: a younger one may be
        another process's upload in progress.
        """
        cutoff = time.time() - older_than
        with self.locked():
            for leftover in (self.root / ".staging").iterdir():
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)


def find_version(
    models: dict[str, dict[int, Any]], name: str, version: int | None
) -> tuple[int, Any]:
    """Look ``name``/``version`` (None: latest) up in a ``{name: {version: x}}`` map."""
    versions = models.get(name)
    if not versions:
        raise NotFound(f"no model named '{name}'")
    if version is None:
        latest = max(versions)
        return latest, versions[latest]
    if version not in versions:
        available = ", ".join(str(v) for v in sorted(versions))
        raise NotFound(f"model '{name}' has no version {version} (available: {available})")
    return version, versions[version]
