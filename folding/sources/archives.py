"""Unpack an uploaded ``.zip`` / ``.tar.gz`` holding a SavedModel, within bounds.

Checked before a byte is written: the entry count, the total size the entries
declare, every name (relative, no ``..``, no drive or backslash tricks), every
entry's kind (regular files and directories only: no symlinks, hard links,
devices or FIFOs). While writing, the bytes actually inflated are counted
against the same total, so a lying header cannot get further. Everything lands
inside the target directory; the SavedModel may sit at the archive's root or in
its one top-level folder.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from folding._compat import tar_info_checking_extensions
from folding.errors import ModelLoadError
from folding.sources import ARCHIVE_SUFFIXES
from folding.sources.keras.loading import DEFAULT_LIMITS, ArchiveLimits, check_inflation
from folding.sources.saved_model.scan import SAVED_MODEL_FILE

_CHUNK = 1024 * 1024
MAX_TAR_HEADER_BYTES = 64 * 1024
"""Largest pax / GNU long-name header accepted: tarfile reads and parses one whole
(in quadratic time), so a few KB of gzip holding a multi-MB header pins a CPU."""
_METADATA_DIRS = ("__MACOSX",)
"""Folders archivers add beside the content (macOS Finder's resource forks): skipped."""


def archive_suffix(file_name: str) -> str | None:
    """``.zip``, ``.tar.gz`` or ``.tgz`` when ``file_name`` ends so, else None."""
    lowered = file_name.lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if lowered.endswith(suffix)), None)


def extract_saved_model(
    archive: Path, target: Path, label: str, limits: ArchiveLimits = DEFAULT_LIMITS
) -> Path:
    """Unpack ``archive`` into ``target`` (created; must not exist) and return the
    directory that holds ``saved_model.pb``. On any refusal ``target`` is removed."""
    suffix = archive_suffix(archive.name)
    if suffix is None:
        raise ModelLoadError(f"'{label}' is not a .zip or .tar.gz archive")
    target.mkdir(parents=True)
    try:
        if suffix == ".zip":
            _extract_zip(archive, target, label, limits)
        else:
            _extract_tar(archive, target, label, limits)
        return _saved_model_root(target, label)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _safe_name(name: str, label: str) -> PurePosixPath | None:
    """The entry's relative path, or None for the archive's root itself."""
    if "\\" in name or "\x00" in name:
        raise ModelLoadError(f"'{label}' has an entry with a disallowed name: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise ModelLoadError(f"'{label}' has an entry with an absolute path: {name!r}")
    if ".." in path.parts:
        raise ModelLoadError(f"'{label}' has an entry that points outside the archive: {name!r}")
    parts = [part for part in path.parts if part != "."]
    return PurePosixPath(*parts) if parts else None


def _skipped(relative: PurePosixPath) -> bool:
    """Archiver metadata, never part of a SavedModel: ``__MACOSX/...``, ``.DS_Store``."""
    return relative.parts[0] in _METADATA_DIRS or relative.name == ".DS_Store"


def _check_unique(names: list[str], label: str) -> None:
    seen: set[PurePosixPath] = set()
    for name in names:
        relative = _safe_name(name, label)
        if relative is None:
            continue
        if relative in seen and not name.endswith("/"):
            raise ModelLoadError(f"'{label}' holds {name!r} twice; which one is meant?")
        seen.add(relative)


def _make_parent(path: Path, relative: PurePosixPath, label: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ModelLoadError(
            f"'{label}': entry {str(relative)!r} lies under a name that is also a file"
        ) from None


def _check_counts(
    count: int, declared: int, label: str, limits: ArchiveLimits, packed: int
) -> None:
    if count > limits.max_entries:
        raise ModelLoadError(
            f"'{label}' holds {count} archive entries; at most {limits.max_entries} are accepted"
        )
    check_inflation(declared, packed, label, limits)


class _Budget:
    """Bytes written so far, against the total limit."""

    def __init__(self, label: str, limits: ArchiveLimits) -> None:
        self.left = limits.max_total_bytes
        self.label = label
        self.limits = limits

    def copy(self, source: BinaryIO, destination: Path) -> None:
        with open(destination, "wb") as handle:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                self.left -= len(chunk)
                if self.left < 0:
                    raise ModelLoadError(
                        f"'{self.label}' inflates to more than {self.limits.max_total_bytes} "
                        "bytes; refused"
                    )
                handle.write(chunk)


def _place(target: Path, relative: PurePosixPath) -> Path:
    path = target.joinpath(*relative.parts)
    resolved = path.resolve()
    if not resolved.is_relative_to(target.resolve()):
        raise ModelLoadError(f"archive entry {str(relative)!r} points outside the archive")
    return path


def _write_entries(
    target: Path,
    label: str,
    limits: ArchiveLimits,
    entries: Iterable[tuple[str, bool, Callable[[], BinaryIO]]],
) -> None:
    """Write each checked entry (its name, whether it is a directory, how to open it)
    under ``target``, skipping metadata folders, within ``limits``' byte budget."""
    budget = _Budget(label, limits)
    for name, is_directory, open_entry in entries:
        relative = _safe_name(name, label)
        if relative is None or _skipped(relative):
            continue
        path = _place(target, relative)
        if is_directory:
            _make_parent(path / "entry", relative, label)
            continue
        _make_parent(path, relative, label)
        with open_entry() as source:
            budget.copy(source, path)


def _extract_zip(archive: Path, target: Path, label: str, limits: ArchiveLimits) -> None:
    try:
        with zipfile.ZipFile(archive) as handle:
            entries = handle.infolist()
            total = sum(e.file_size for e in entries)
            _check_counts(len(entries), total, label, limits, archive.stat().st_size)
            for entry in entries:
                mode = entry.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    what = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
                    raise ModelLoadError(
                        f"'{label}' has {what} ({entry.filename!r}); only files and "
                        "directories are accepted"
                    )
                _safe_name(entry.filename, label)
                if entry.flag_bits & 0x1:
                    raise ModelLoadError(
                        f"'{label}' is encrypted ({entry.filename!r}); upload it unencrypted"
                    )
            _check_unique([entry.filename for entry in entries], label)
            _write_entries(
                target,
                label,
                limits,
                ((e.filename, e.is_dir(), partial(handle.open, e)) for e in entries),
            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as error:
        raise ModelLoadError(f"'{label}' is not a readable .zip archive: {error}") from None


def _tar_members(
    handle: tarfile.TarFile, label: str, limits: ArchiveLimits, packed: int
) -> Iterator:
    declared = 0
    for count, member in enumerate(handle, start=1):
        declared += max(member.size, 0)
        _check_counts(count, declared, label, limits, packed)
        if not (member.isfile() or member.isdir()):
            what = (
                "a symbolic link"
                if member.issym()
                else "a hard link"
                if member.islnk()
                else "a device or special file"
            )
            raise ModelLoadError(
                f"'{label}' has {what} ({member.name!r}); only files and directories are accepted"
            )
        yield member


def _check_extension_header(size: int) -> None:
    """Refuse a pax / GNU long-name extension larger than ``MAX_TAR_HEADER_BYTES``,
    before tarfile reads it."""
    if size > MAX_TAR_HEADER_BYTES:
        raise ModelLoadError(
            f"the archive has a {size}-byte extended tar header; at most "
            f"{MAX_TAR_HEADER_BYTES} are accepted"
        )


_BoundedTarInfo = tar_info_checking_extensions(_check_extension_header)


def _extract_tar(archive: Path, target: Path, label: str, limits: ArchiveLimits) -> None:
    try:
        with tarfile.open(archive, "r:gz", tarinfo=_BoundedTarInfo) as handle:
            members = list(_tar_members(handle, label, limits, archive.stat().st_size))
            for member in members:
                _safe_name(member.name, label)
            _check_unique([m.name + ("/" if m.isdir() else "") for m in members], label)
            _write_entries(
                target,
                label,
                limits,
                ((m.name, m.isdir(), partial(_open_member, handle, m, label)) for m in members),
            )
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ModelLoadError(f"'{label}' is not a readable .tar.gz archive: {error}") from None


def _open_member(handle: tarfile.TarFile, member: tarfile.TarInfo, label: str) -> BinaryIO:
    source = handle.extractfile(member)
    if source is None:
        raise ModelLoadError(f"'{label}': entry {member.name!r} cannot be read")
    return source


def _saved_model_root(target: Path, label: str) -> Path:
    if (target / SAVED_MODEL_FILE).is_file():
        return target
    children = list(target.iterdir())
    if len(children) == 1 and children[0].is_dir() and (children[0] / SAVED_MODEL_FILE).is_file():
        return children[0]
    raise ModelLoadError(
        f"'{label}' holds no SavedModel: expected {SAVED_MODEL_FILE} at the archive's root or "
        "in its one top-level folder"
    )
