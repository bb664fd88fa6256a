"""Where a model comes from: a Keras file (``.keras``, legacy ``.h5``), an ONNX file or a
TensorFlow SavedModel (a folder, or an uploaded ``.zip``/``.tar.gz``), each read and checked
before anything in it runs. A source yields the model in memory plus what it is judged against.

``FORMATS`` is the one suffix table, ``open_source`` the one format dispatch: the command
line, the fold worker and the upload checks all go through them. One module per format:
``keras_source`` (over the loader in ``keras``), ``onnx_source``, ``saved_model``. Nothing
here imports TensorFlow at import time.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from folding.errors import InvalidOption, ModelLoadError
from folding.options import FoldOptions, VerifyOptions
from folding.sources.onnx.model import OnnxModel
from folding.specs import InputSpec, StageCallback

if TYPE_CHECKING:
    import numpy as np

KERAS = "keras"
ONNX = "onnx"
SAVED_MODEL = "saved_model"
FORMATS = {
    ".keras": KERAS,
    ".h5": KERAS,
    ".hdf5": KERAS,
    ".onnx": ONNX,
    ".zip": SAVED_MODEL,  # archives of a SavedModel folder
    ".tar.gz": SAVED_MODEL,
    ".tgz": SAVED_MODEL,
}
SAME_AS = {".hdf5": ".h5", ".tgz": ".tar.gz"}
"""Suffixes that are another's spelling of the same kind of file."""


def suffixes(kind: str) -> tuple[str, ...]:
    """The suffixes of one format, in table order."""
    return tuple(suffix for suffix, format_ in FORMATS.items() if format_ == kind)


KERAS_SUFFIXES = suffixes(KERAS)
ARCHIVE_SUFFIXES = suffixes(SAVED_MODEL)


def model_suffix(file_name: str | None) -> str | None:
    """The key of ``FORMATS`` that ``file_name`` ends with (``.tar.gz`` too), any case."""
    lowered = (file_name or "").lower()
    return next((suffix for suffix in FORMATS if lowered.endswith(suffix)), None)


def format_of(path: str | Path) -> str | None:
    """``SAVED_MODEL`` for a folder or an archive, ``ONNX``, ``KERAS``; None when the
    suffix is none of the table's."""
    if Path(path).is_dir():
        return SAVED_MODEL
    return FORMATS.get(model_suffix(Path(path).name) or "")


@dataclass
class Folded:
    """A source's model folded, both variants as ONNX, and what the shared tail of
    ``folding.pipeline.fold_to_directory`` needs to judge and report them."""

    folded_onnx: OnnxModel
    unfolded_onnx: OnnxModel
    inputs: list[InputSpec]
    output_names: list[str]
    exporter: str
    timings: dict[str, float]  # fold_s, export_s
    folded: list[Any] = field(default_factory=list)  # the report's entries
    not_folded: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    recalibration: Any = None
    loader: str | None = None
    warnings: list[str] = field(default_factory=list)
    compute_dtype: str = "float32"


def stage_timings(started: float, folded_at: float, exported_at: float) -> dict[str, float]:
    """The report's ``fold_s`` and ``export_s``, from ``time.perf_counter`` readings."""
    return {
        "fold_s": round(folded_at - started, 4),
        "export_s": round(exported_at - folded_at, 4),
    }


class Source:
    """A model in memory: ``fold`` it (the "folding" and "exporting" stages), then
    ``probes`` and ``reference`` give what both exports are judged on and against."""

    name: str
    reference_name: str
    """What the exports are judged against, in messages: "the Keras model", ..."""

    def fold(self, options: FoldOptions, on_stage: StageCallback) -> Folded:
        raise NotImplementedError

    def probes(self, verify: VerifyOptions) -> tuple[list[np.ndarray], str]:
        """Probe rows for each input (after ``fold``), and where they came from."""
        raise NotImplementedError

    def reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The reference's answers on ``probes``, in output order."""
        raise NotImplementedError

    def early_reference(self, probes: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """``reference(probes)`` when the source computed it already (beside the
        exports), else None: the pipeline then runs it chunk by chunk."""
        return None


NO_BN_LAYERS = {
    ONNX: "needs a Keras model; an ONNX model has no BN layers",
    SAVED_MODEL: "needs a Keras model; a SavedModel has no BN layers",
}


def open_source(
    path: str | Path,
    options: FoldOptions | None = None,
    *,
    name: str | None = None,
    label: str | None = None,
    unpack_into: Path | None = None,
    external_data: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Source:
    """The model at ``path``, loaded and checked, as a source to fold.

    ``name``: the report's model name (default: the file's name without its suffix);
    ``label``: the file's name in messages (the name it was uploaded under);
    ``unpack_into``: where an archive's SavedModel folder is moved once unpacked (it must
    not exist; an archive without it is refused); ``external_data``: an ONNX file's
    tensors may be read from files beside it (the operator's own disk, never an upload);
    ``progress``: called with the fraction of a Keras file loaded so far.
    Options that do not apply to the format raise ``InvalidOption``."""
    from folding.sources.keras.custom_objects import import_modules

    options = options or FoldOptions()
    path = Path(path)
    kind = format_of(path)
    suffix = model_suffix(path.name)
    stem = path.resolve().name if path.is_dir() else path.name[: len(path.name) - len(suffix or "")]
    name = name or stem
    import_modules(options.custom_objects)
    if kind == SAVED_MODEL:
        if options.recalibrate is not None:
            raise InvalidOption("recalibrate", NO_BN_LAYERS[SAVED_MODEL])
        from folding.sources.saved_model.source import SavedModelSource

        directory = path if path.is_dir() else _unpack(path, unpack_into, label, options)
        return SavedModelSource.open(directory, options, name, label or directory.name)
    if options.signature is not None:
        raise InvalidOption("signature", "applies to a SavedModel only")
    if kind == ONNX:
        if options.recalibrate is not None:
            raise InvalidOption("recalibrate", NO_BN_LAYERS[ONNX])
        from folding.sources.onnx.source import OnnxSource

        return OnnxSource.open(path, name, label, external_data)
    from folding.sources.keras.source import KerasSource

    return KerasSource.open(path, options, name, label, progress)


def _unpack(archive: Path, into: Path | None, label: str | None, options: FoldOptions) -> Path:
    """The SavedModel folder of ``archive``, unpacked within the archive limits to ``into``."""
    from folding.sources.archives import extract_saved_model
    from folding.sources.keras.loading import DEFAULT_LIMITS

    label = label or archive.name
    if into is None:
        raise ModelLoadError(f"'{label}' is an archive: unpack the SavedModel and give its folder")
    unpacked = into.parent / ".unpacked"
    root = extract_saved_model(archive, unpacked, label, options.archive_limits or DEFAULT_LIMITS)
    root.rename(into)
    shutil.rmtree(unpacked, ignore_errors=True)
    return into
