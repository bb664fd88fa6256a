"""Load a Keras model from a ``.keras`` or legacy ``.h5`` file, safely.

Keras's safe mode is always on: a file whose config carries Python code (a
``Lambda`` layer, a serialised function) is refused before anything in it is
deserialised, and never executed.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class ArchiveLimits:
    """What a ``.keras`` archive may hold, checked from its directory before anything
    is extracted or inflated (a few MB can inflate to gigabytes)."""

    max_total_bytes: int = 4 * 1024**3
    max_entries: int = 10_000
    max_config_bytes: int = 64 * 1024**2
    max_ratio: float = 100.0
    """Most an archive may inflate to, as a multiple of its own size, once it inflates
    to more than ``ratio_floor_bytes`` (Keras stores its members uncompressed: about 1x)."""
    ratio_floor_bytes: int = 64 * 1024**2


def check_inflation(total: int, packed: int, label: str, limits: ArchiveLimits) -> None:
    """Refuse an archive of ``packed`` bytes whose entries declare ``total`` bytes: above
    the absolute limit, or above ``max_ratio`` times its size (past the floor)."""
    if total > limits.max_total_bytes:
        raise ModelLoadError(
            f"'{label}' would inflate to {total} bytes; at most {limits.max_total_bytes} are "
            "accepted"
        )
    if total > max(limits.ratio_floor_bytes, limits.max_ratio * packed):
        raise ModelLoadError(
            f"'{label}' would inflate to {total} bytes from {packed} "
            f"({total / max(packed, 1):.0f}x); beyond {limits.ratio_floor_bytes} bytes an "
            f"archive may inflate to at most {limits.max_ratio:g}x its size"
        )


DEFAULT_LIMITS = ArchiveLimits()
_CODE_CLASSES = {"Lambda"}
_CODE_MARKERS = {"__lambda__", "function_type"}


def check_model_file(
    path: str | Path, label: str | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> None:
    """Everything that can be checked without Keras: the file exists, has a Keras
    suffix, is a readable archive with a model config, and carries no code.

    ``label`` names the file in messages (default: its file name)."""
    path = Path(path)
    label = label or path.name
    if not path.is_file():
        raise ModelLoadError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise ModelLoadError(
            f"'{label}' is not a Keras model file: expected one of {', '.join(KERAS_SUFFIXES)}"
        )
    _refuse_code(_read_config(path, suffix, label, limits), label)


def load_keras_model(
    path: str | Path, label: str | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> Any:
    """The Keras model stored at ``path``, loaded with ``safe_mode=True``."""
    path = Path(path)
    label = label or path.name
    check_model_file(path, label, limits)
    import keras  # heavy: imported only when a model is actually loaded

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a bad file
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        unknown = re.search(r"Could not locate class '([^']+)'", str(error))
        if unknown:
            raise ModelLoadError(
                f"'{label}' uses the custom layer '{unknown.group(1)}', which is not registered: "
                "the operator can import the module that registers it with --custom-objects "
                "MODULE (FOLDSERVE_CUSTOM_OBJECTS on a server)"
            ) from None
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise UnsafeModelError(f"'{label}' carries code and is refused: {message}") from None
        raise ModelLoadError(f"'{label}' could not be loaded as a Keras model: {message}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"'{label}' holds a {type(model).__name__}, not a Keras model")
    return model


def _read_config(path: Path, suffix: str, label: str, limits: ArchiveLimits) -> Any:
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                config = _check_archive(archive, path.stat().st_size, label, limits)
                with archive.open(config) as handle:
                    raw = handle.read(limits.max_config_bytes + 1)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
            raise ModelLoadError(f"'{label}' is not a valid .keras archive: {error}") from None
        if len(raw) > limits.max_config_bytes:
            raise ModelLoadError(
                f"'{label}': config.json is larger than {limits.max_config_bytes} bytes"
            )
    else:
        raw = _read_h5_config(path, label)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"'{label}' has an unreadable model config: {error}") from None


def _check_archive(
    archive: zipfile.ZipFile, packed: int, label: str, limits: ArchiveLimits
) -> zipfile.ZipInfo:
    """Refuse an archive whose directory promises too much; return config.json's entry."""
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise ModelLoadError(
            f"'{label}' holds {len(entries)} archive entries; at most {limits.max_entries} "
            "are accepted"
        )
    config = next((entry for entry in entries if entry.filename == "config.json"), None)
    if config is None:
        raise ModelLoadError(f"'{label}' is not a valid .keras archive: it has no config.json")
    if config.file_size > limits.max_config_bytes:
        raise ModelLoadError(
            f"'{label}': config.json would inflate to {config.file_size} bytes; at most "
            f"{limits.max_config_bytes} are accepted"
        )
    check_inflation(sum(entry.file_size for entry in entries), packed, label, limits)
    return config


def _read_h5_config(path: Path, label: str) -> bytes:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as error:
        raise ModelLoadError(f"'{label}' is not a valid HDF5 file: {error}") from None
    if raw is None:
        raise ModelLoadError(f"'{label}' holds weights only, no model config")
    return raw.encode() if isinstance(raw, str) else bytes(raw)


def _refuse_code(config: Any, file_name: str) -> None:
    """Raise UnsafeModelError when the config anywhere names a code-carrying object."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            class_name = item.get("class_name")
            if class_name in _CODE_CLASSES:
                name = (
                    item.get("config", {}).get("name", "?")
                    if isinstance(item.get("config"), dict)
                    else "?"
                )
                raise UnsafeModelError(
                    f"'{file_name}' contains a {class_name} layer '{name}', which carries "
                    "Python code; it is refused (safe mode)"
                )
            if class_name in _CODE_MARKERS:
                raise UnsafeModelError(
                    f"'{file_name}' contains serialised Python code; it is refused (safe mode)"
                )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
