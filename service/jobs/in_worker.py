"""What runs inside the fold worker process: the only place TensorFlow is imported.

Functions here are called in a fresh, confined worker process (``service.jobs.workers``);
they take and return plain, picklable values, and never raise for a bad model:
failures come back as ``{"ok": False, "kind": ..., "error": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folding.options import FoldOptions

Progress = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class Variants:
    """An upload's precision variants: which, the rows that calibrate and judge them
    (the upload's ``calibration`` file, else the probes), and how they are judged."""

    precision: tuple[str, ...]
    calibration: Path | None = None
    equalize: bool = False
    min_agreement: float = 0.98  # top-1 agreement with float32 a classifier's variant keeps


SAVED_MODEL_DIR = "saved_model"
SIGNATURE_FILE = "signature.txt"


def warm() -> bool:
    """Import TensorFlow, Keras and the folding package ahead of the first job."""
    from folding.quiet import import_keras

    import_keras(first_op=False)  # no op yet: the worker is confined single-threaded
    import folding.pipeline  # noqa: F401

    return True


def prepare(custom_objects: str) -> dict | None:
    """Before the worker is confined: TensorFlow imported, and the operator's custom-object
    modules (trusted code, read from wherever they are installed); a failure is the job's
    answer."""
    warm()
    return _import_custom_objects(custom_objects)


class StageReporter:
    """``on_stage(stage, progress)``, in the server process: writes the stage the fold
    worker reports, its progress and when each stage started to ``path`` (a JSON file
    replaced atomically), where the upload's monitor reads it. With no path, nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = None if path is None else Path(path)
        self.started: dict[str, float] = {}

    def __call__(self, stage: str, progress: float | None) -> None:
        import json
        import os
        import time

        if self.path is None:
            return
        self.started.setdefault(stage, time.time())
        state = {"stage": stage, "progress": progress, "started": self.started}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.path)


def fold_source(
    source: str,
    out_dir: str,
    name: str,
    options: FoldOptions,
    label: str | None = None,
    progress: Progress | None = None,
    variants: Variants | None = None,
) -> dict:
    """Load ``source`` safely, fold it and write the exports and report into ``out_dir``
    (``folding.sources.open_source``, then ``folding.pipeline.fold_to_directory``).

    ``source``: a Keras or ONNX file, a SavedModel directory, or an archive of one
    (unpacked into ``out_dir/saved_model``, then removed; the signature used is kept
    beside it); ``label`` names the file in error messages (the name it was uploaded
    under); ``variants``: the precision variants made after the fold
    (``folding.precision.variants``); ``progress(stage, fraction)`` is told each stage as
    it begins, and its progress. Unpacking, the op check and a SavedModel's conversion to
    ONNX are the "loading" stage."""

    def on_stage(stage: str, fraction: float | None) -> None:
        if progress is not None:
            progress(stage, fraction)

    on_stage("loading", None)
    warm()
    result = _outcome(lambda: _fold(Path(source), Path(out_dir), name, options, label, on_stage))
    if result["ok"] and variants is not None:
        return _with_variants(result, Path(out_dir), variants, on_stage)
    return result


def _fold(
    path: Path, out_dir: Path, name: str, options: FoldOptions, label: str | None, on_stage: Any
) -> Any:
    from folding.errors import ProbeError
    from folding.pipeline import fold_to_directory
    from folding.sources import ARCHIVE_SUFFIXES, open_source
    from folding.sources.keras.source import KerasSource
    from folding.sources.saved_model.source import SavedModelSource

    try:
        source = open_source(
            path,
            options,
            name=name,
            label=label,
            unpack_into=out_dir / SAVED_MODEL_DIR,
            progress=lambda done: on_stage("loading", done),
        )
    except ProbeError as error:
        if error.option != "recalibrate":
            raise
        message = str(error).replace(str(options.recalibrate), "the upload")
        message = message.removeprefix("calibration data: ")
        raise ProbeError(f"form field 'recalibrate': {message}") from None
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        path.unlink()  # unpacked into saved_model/: the archive is not kept
    report = fold_to_directory(source, out_dir, options, on_stage=on_stage)
    if isinstance(source, SavedModelSource):
        (out_dir / SIGNATURE_FILE).write_text(source.signature)
    if isinstance(source, KerasSource) and source.recalibrate_on is not None:
        source.model.save(path)  # the stored source is what ``:compare`` runs: recalibrated
    return report


def _with_variants(result: dict, out_dir: Path, wanted: Variants, on_stage: Any) -> dict:
    """Make the precision variants of the folded model (a "quantizing" stage) and list
    them in the report; rows of the wrong shape are the upload's fault."""
    from folding.errors import FoldingError, ProbeError
    from folding.precision import add_variants

    on_stage("quantizing", None)
    calibration = None if wanted.calibration is None else Path(wanted.calibration)
    try:
        variants = add_variants(
            out_dir,
            wanted.precision,
            calibration,
            wanted.equalize,
            min_agreement=wanted.min_agreement,
        )
    except ProbeError as error:
        message = str(error).replace(calibration.name if calibration else "", "the 'calibration'")
        return {"ok": False, "kind": "invalid", "error": f"calibration rows: {message}"}
    except FoldingError as error:
        return {"ok": False, "kind": "fold", "error": f"precision variants: {error}"}
    result["report"]["variants"] = [variant.as_dict() for variant in variants]
    return result


def _import_custom_objects(spec: str) -> dict | None:
    """Import the operator's custom-object modules; a failure is the job's answer."""
    from folding.errors import FoldingError
    from folding.sources.keras.custom_objects import import_modules

    try:
        import_modules(spec)
    except FoldingError as error:
        return {"ok": False, "kind": "fold", "error": str(error)}
    return None


def _outcome(job: Any) -> dict:
    """Run a fold job; its report, or what went wrong as a plain, picklable result."""
    try:
        report = job()
    except Exception as error:  # a model may break Keras or tf2onnx in unforeseen ways
        return _failure(error)
    return {"ok": True, "report": report.to_dict()}


def _failure(error: Exception) -> dict:
    from folding.errors import (
        ExportError,
        FoldingError,
        InvalidOption,
        ModelLoadError,
        ProbeError,
        VerificationError,
    )

    full = _disk_full(error)
    if full is not None:  # whichever step was writing: the disk, not the model
        return {"ok": False, "kind": "storage", "error": _storage_message(full)}
    if isinstance(error, VerificationError):
        report = error.report.to_dict() if error.report is not None else None
        return {"ok": False, "kind": "verification", "error": str(error), "report": report}
    if isinstance(error, ModelLoadError | ProbeError | InvalidOption):
        return {"ok": False, "kind": "invalid", "error": str(error)}
    if isinstance(error, ExportError):
        return {"ok": False, "kind": "export", "error": str(error)}
    if isinstance(error, FoldingError):
        return {"ok": False, "kind": "fold", "error": str(error)}
    return {"ok": False, "kind": "fold", "error": f"{type(error).__name__}: {error}"}


def _storage_message(error: OSError) -> str:
    import errno
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if error.errno == errno.EFBIG and limit != resource.RLIM_INFINITY:
        return (
            f"a file of the fold would be larger than the fold worker's limit of "
            f"{limit // (1024 * 1024)} MB (FOLDSERVE_FOLD_FILE_LIMIT_MB)"
        )
    reason = (error.strerror or "no space left on device").lower()
    return f"the fold's files could not be written to its staging folder: {reason}"


def _disk_full(error: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``error`` (itself, or its cause or context)."""
    from service.jobs.submit import NO_SPACE

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE:
            return current
        current = current.__cause__ or current.__context__
    return None


def keras_predict(
    source: str, arrays: list[Any], custom_objects: str = "", skip_scan: bool = False
) -> dict:
    """The source model's outputs (flat list) on ``arrays`` (flat list of inputs): the
    Keras model, or a SavedModel's signature (the one it was folded with). ``skip_scan``
    (tests only): a SavedModel is loaded without its op scan."""
    warm()
    import numpy as np

    from folding.errors import FoldingError

    failed = _import_custom_objects(custom_objects)
    if failed is not None:
        return {"ok": False, "error": failed["error"]}
    path = Path(source)
    try:
        outputs = _source_caller(path, scan=not skip_scan)(list(arrays))
    except FoldingError as error:
        return {"ok": False, "error": str(error)}
    except Exception as error:  # the model's own call failed on these inputs
        message = f"{type(error).__name__}: {error}".replace(str(path.parent), "")
        return {"ok": False, "error": message}  # no server paths in what a client reads
    return {"ok": True, "outputs": [np.asarray(output) for output in outputs]}


def _onnx_caller(path: Path) -> Any:
    """The uploaded ONNX model itself, as it came, on ONNX Runtime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [arg.name for arg in session.get_inputs()]
    return lambda arrays: session.run(None, dict(zip(names, arrays, strict=True)))


def _source_caller(path: Path, scan: bool = True) -> Any:
    from folding.export.pair import flat_caller
    from folding.options import DEFAULT_SIGNATURE
    from folding.sources import KERAS, ONNX, format_of
    from folding.sources.keras.loading import load_keras_model

    kind = format_of(path)
    if kind == ONNX:
        return _onnx_caller(path)
    if kind == KERAS or not path.is_dir():
        return flat_caller(load_keras_model(path))
    from folding.sources.saved_model.source import load_saved_model

    recorded = path.parent / SIGNATURE_FILE
    signature = recorded.read_text().strip() if recorded.is_file() else DEFAULT_SIGNATURE
    return load_saved_model(path, signature, "the stored SavedModel", scan=scan)
