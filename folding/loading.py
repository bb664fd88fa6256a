"""Load a Keras model from a ``.keras`` or legacy ``.h5`` file, safely.

Keras's safe mode is always on: a file whose config carries Python code (a
``Lambda`` layer, a serialised function) is refused before anything in it is
deserialised, and never executed.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_CODE_CLASSES = {"Lambda"}
_CODE_MARKERS = {"__lambda__", "function_type"}


def check_model_file(path: str | Path, label: str | None = None) -> None:
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
    _refuse_code(_read_config(path, suffix, label), label)


def load_keras_model(path: str | Path, label: str | None = None) -> Any:
    """The Keras model stored at ``path``, loaded with ``safe_mode=True``."""
    path = Path(path)
    label = label or path.name
    check_model_file(path, label)
    import keras  # heavy: imported only when a model is actually loaded

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a bad file
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise UnsafeModelError(f"'{label}' carries code and is refused: {message}") from None
        raise ModelLoadError(f"'{label}' could not be loaded as a Keras model: {message}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"'{label}' holds a {type(model).__name__}, not a Keras model")
    return model


def _read_config(path: Path, suffix: str, label: str) -> Any:
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read("config.json")
        except (zipfile.BadZipFile, KeyError, OSError) as error:
            raise ModelLoadError(f"'{label}' is not a valid .keras archive: {error}") from None
    else:
        raw = _read_h5_config(path, label)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"'{label}' has an unreadable model config: {error}") from None


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
