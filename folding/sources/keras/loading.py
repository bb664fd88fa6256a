"""Load a Keras model from a ``.keras`` or legacy ``.h5`` file, safely.

Keras's safe mode is always on: a file whose config carries Python code (a
``Lambda`` layer, a serialised function) is refused before anything in it is
deserialised, and never executed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.errors import ModelLoadError, UnsafeModelError
from folding.sources import KERAS_SUFFIXES
from folding.sources.keras.custom_objects import trusted_classes
from folding.sources.keras.known_lambdas import known_function
from folding.sources.keras.legacy import is_keras2, translate_config
from folding.sources.keras.steps import in_steps, load_in_steps


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
LOADER_ATTRIBUTE = "_foldserve_loader"


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
    path: str | Path,
    label: str | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    progress: Callable[[float], None] | None = None,
) -> Any:
    """The Keras model stored at ``path``, loaded with ``safe_mode=True``.

    A file written by Keras 2 (``tf.keras`` / ``tf_keras``, ``.h5`` or ``.keras``) has
    its config translated first (``folding.sources.keras.legacy``); ``loader_of(model)``
    says which way it was loaded. With ``progress``, a plain ``.keras`` archive is built
    and then filled with its weights, ``progress(fraction)`` told how far the load got
    (``folding.sources.keras.steps``)."""
    path = Path(path)
    label = label or path.name
    check_model_file(path, label, limits)
    import keras  # heavy: imported only when a model is actually loaded

    suffix = path.suffix.lower()
    config = _read_config(path, suffix, label, limits)
    version = _keras_version(path, suffix, label)
    keras2 = is_keras2(version, config) or (suffix != ".keras" and version is None)
    with keras.saving.custom_object_scope(trusted_classes(config, by_name=keras2)):
        model, loader = _load(path, suffix, config, version, label, progress)
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"'{label}' holds a {type(model).__name__}, not a Keras model")
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        setattr(model, LOADER_ATTRIBUTE, loader)
    return model


def _load(
    path: Path,
    suffix: str,
    config: Any,
    version: str | None,
    label: str,
    progress: Callable[[float], None] | None,
) -> tuple[Any, str]:
    """The object the file holds, and how it was loaded."""
    import keras

    loader = f"keras {keras.__version__}"
    try:
        # an .h5 file that records no version predates Keras 3, which always does
        if version is not None and str(version).startswith(("0.", "1.")):
            raise ModelLoadError(
                f"'{label}' was written by Keras {version}, whose layer configs (Convolution2D, "
                "nb_filter, border_mode, ...) Keras 3 cannot read; load it with Keras 2 and save "
                "it again (model.save('model.h5')), then fold that file"
            )
        if is_keras2(version, config) or (suffix != ".keras" and version is None):
            translated, translation = translate_config(config, label)
            _refuse_code(translated, label)
            loader += (
                f", from a Keras {version or '2'} {suffix} file with its config translated "
                f"({translation.describe()})"
            )
            with tempfile.TemporaryDirectory(prefix="foldserve-keras2-") as scratch:
                copy = Path(scratch) / f"model{suffix}"
                _write_with_config(path, copy, suffix, translated)
                model = keras.models.load_model(copy, compile=False, safe_mode=True)
        elif progress is not None and suffix == ".keras" and in_steps(path):
            model = load_in_steps(path, config, progress)
        else:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
    except ModelLoadError:
        raise
    except Exception as error:  # Keras raises many kinds for a bad file
        failure = load_error(error, label)
        if suffix != ".keras" and "translated" in loader and CUSTOM_OBJECTS_HINT in str(failure):
            failure = ModelLoadError(f"{failure}{KERAS2_HINT}")
        raise failure from None
    return model, loader


def loader_of(model: Any) -> str | None:
    """How ``load_keras_model`` loaded ``model`` (None for a model built in code)."""
    return getattr(model, LOADER_ATTRIBUTE, None)


CUSTOM_OBJECTS_HINT = (
    "the operator can import the module that registers it with --custom-objects MODULE "
    "(FOLDSERVE_CUSTOM_OBJECTS on a server)"
)
KERAS2_HINT = (
    "; a Keras 2 file names a custom class only, with no module: the module must define "
    "a Keras 3 class of that name (it is found by name; a tf_keras class does not load)"
)
_MISSING_OBJECT = (
    (
        re.compile(r"Could not deserialize (\w+) '([^']+)' because its parent module (\S+) "),
        "'{label}' uses the {0} '{1}' from the module '{2}', which cannot be imported here: ",
    ),
    (
        re.compile(r"Could not locate (class|function) '([^']+)'"),
        "'{label}' uses the custom {0} '{1}', which is not registered: ",
    ),
    (
        re.compile(r"Could not deserialize '([^']+)' because it is not a KerasSaveable subclass"),
        "'{label}' uses the class '{0}', which this Keras does not have; if it is a custom class, ",
    ),
    (
        re.compile(r"Could not interpret (\w+ )?(?:function )?identifier: '?([^'\s]+)'?"),
        "'{label}' uses the {0}function '{1}', which is not registered: ",
    ),
    (
        re.compile(
            r"Unknown (layer|object|function|activation|initializer|regularizer"
            r"|constraint|loss|metric): '?([^'.\s]+)'?"
        ),
        "'{label}' uses the custom {0} '{1}', which is not registered: ",
    ),
)


def load_error(error: BaseException, label: str) -> ModelLoadError:
    """Keras's exception as one line with its actual reason; a custom-objects
    module would fix it, the line says so."""
    text = str(error)
    for pattern, template in _MISSING_OBJECT:
        found = pattern.search(text)
        if found:
            names = (group.rstrip(".") for group in found.groups(default=""))
            message = template.format(*names, label=label)
            return ModelLoadError(message + CUSTOM_OBJECTS_HINT + _package_hint(text))
    reason = error_reason(text) or type(error).__name__
    if "safe_mode" in text or "Lambda" in text:
        return UnsafeModelError(f"'{label}' carries code and is refused: {reason}")
    return ModelLoadError(f"'{label}' could not be loaded as a Keras model: {reason}")


_MODULE = re.compile(r"""['"]module['"]: ['"]([A-Za-z_][\w.]*)['"]""")


def _package_hint(text: str) -> str:
    """Which module to name, where Keras's message shows the class's module path."""
    found = _MODULE.search(text)
    # a Keras 2 function is written with the module 'builtins': no module to name
    if found is None or found.group(1).split(".")[0] in ("keras", "builtins"):
        return ""
    module = found.group(1)
    return f"; the class is in '{module}': --custom-objects {module.split('.')[0]}"


def error_reason(text: str, limit: int = 400) -> str:
    """The innermost reason of a (nested, multi-line) Keras message, on one line:
    what follows the last "Exception encountered:", prefixed with the class being
    deserialised, without the config dumps."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Keras's bold / colour codes
    segments = text.split("Exception encountered:")
    reason = re.split(r"\s*Full object config:", segments[-1])[0]
    reason = re.sub(r"\s*(using )?config=\{.*", "", reason, flags=re.DOTALL)
    reason = " ".join(reason.split())
    if len(segments) > 1:
        classes = re.findall(
            r"deserializing class '([^']+)'|<class '(?:[\w.]*\.)?(\w+)'> could not be",
            segments[-2],
        )
        if classes:
            reason = f"{next(name for name in classes[-1] if name)}: {reason}"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _keras_version(path: Path, suffix: str, label: str) -> str | None:
    """The Keras version that wrote the file, where the file records it."""
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" not in archive.namelist():
                    return None
                with archive.open("metadata.json") as handle:
                    metadata = json.loads(handle.read(1024 * 1024))
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    else:
        import h5py

        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return str(version) if version else None


def _write_with_config(source: Path, target: Path, suffix: str, config: Any) -> None:
    """A copy of the model file ``source`` at ``target`` whose config is ``config``."""
    text = json.dumps(config)
    if suffix == ".keras":
        with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as copy:
            for entry in archive.infolist():
                if entry.filename == "config.json":
                    copy.writestr("config.json", text)
                    continue
                with archive.open(entry) as read, copy.open(entry.filename, "w") as write:
                    shutil.copyfileobj(read, write, 1024 * 1024)
        return
    import h5py

    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as handle:
        handle.attrs["model_config"] = text


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


def _beside_code(layer: dict) -> list:
    """Everything in a known library Lambda's entry but its code: its arguments, output
    shape, defaults and the rest, which ``_refuse_code`` checks like any other entry."""
    config = layer["config"]
    return [
        *(value for key, value in layer.items() if key != "config"),
        *(value for key, value in config.items() if key != "function"),
        config["function"][1],  # the defaults
    ]


def _refuse_code(config: Any, file_name: str) -> None:
    """Raise UnsafeModelError when the config anywhere names a code-carrying object."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            class_name = item.get("class_name")
            if known_function(item) is not None:  # a library's function, computed by foldserve
                stack.extend(_beside_code(item))  # its code is never read; the rest is checked
                continue
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
