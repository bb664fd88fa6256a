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

Progress = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class FoldOptions:
    """How a fold job verifies (see ``folding.pipeline.fold_to_directory``)."""

    rtol: float
    samples: int
    export_rtol: float | None = None
    noise_factor: float = 10.0
    probe: str | None = None
    recalibrate: str | None = None  # rows the BN statistics are re-estimated on first
    archive_limits: tuple[int, int] | None = None  # total inflated bytes, entries
    signature: str | None = None  # a SavedModel's signature (default serving_default)
    custom_objects: str = ""  # operator-trusted modules registering Keras layers
    skip_scan: bool = False  # tests only: load a SavedModel without its op scan
    precision: tuple[str, ...] = ()  # reduced-precision variants to make: "fp16", "int8"
    calibration: str | None = None  # rows that calibrate int8 and judge the variants
    equalize: bool = False  # cross-layer equalization before int8
    min_agreement: float = 0.98  # top-1 agreement with float32 a classifier's variant keeps


SAVED_MODEL_DIR = "saved_model"
SIGNATURE_FILE = "signature.txt"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


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
) -> dict:
    """Load ``source`` safely, fold it and write the exports and report into ``out_dir``.

    ``label`` names the file in error messages (the name it was uploaded under);
    ``options.recalibrate`` is a .npy/.npz to recalibrate the BNs on before folding;
    ``options.precision`` names the variants made after it (``folding.precision.variants``);
    ``progress(stage, fraction)`` is told each stage as it begins, and its progress."""

    def on_stage(stage: str, fraction: float | None) -> None:
        if progress is not None:
            progress(stage, fraction)

    on_stage("loading", None)
    warm()
    from folding.sources.keras import DEFAULT_LIMITS, ArchiveLimits

    limits = DEFAULT_LIMITS
    if options.archive_limits is not None:
        total, entries = options.archive_limits
        limits = ArchiveLimits(max_total_bytes=total, max_entries=entries)
    custom = _import_custom_objects(options.custom_objects)
    if custom is not None:
        return custom
    if source.lower().endswith(ARCHIVE_SUFFIXES) or Path(source).is_dir():
        result = _fold_saved_model_source(source, out_dir, name, options, label, limits, on_stage)
    elif options.signature is not None:
        return {"ok": False, "kind": "invalid", "error": "'signature' applies to a SavedModel"}
    elif source.endswith(".onnx"):
        result = _fold_onnx_source(source, out_dir, name, options, label, on_stage)
    else:
        result = _fold_keras_source(source, out_dir, name, options, label, limits, on_stage)
    if result["ok"] and options.precision:
        return _with_variants(result, Path(out_dir), options, on_stage)
    return result


def _with_variants(result: dict, out_dir: Path, options: FoldOptions, on_stage: Any) -> dict:
    """Make the precision variants of the folded model (a "quantizing" stage) and list
    them in the report; rows of the wrong shape are the upload's fault."""
    from folding.errors import FoldingError, ProbeError
    from folding.precision import add_variants

    on_stage("quantizing", None)
    calibration = None if options.calibration is None else Path(options.calibration)
    try:
        variants = add_variants(
            out_dir,
            options.precision,
            calibration,
            options.equalize,
            min_agreement=options.min_agreement,
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
    from folding.sources.custom_objects import import_modules

    try:
        import_modules(spec)
    except FoldingError as error:
        return {"ok": False, "kind": "fold", "error": str(error)}
    return None


def _fold_saved_model_source(
    source: str,
    out_dir: str,
    name: str,
    options: FoldOptions,
    label: str | None,
    limits: Any,
    on_stage: Any,
) -> dict:
    """A SavedModel directory, or an uploaded archive of one (unpacked, within ``limits``,
    into ``out_dir/saved_model`` and then removed); the signature used is kept beside it.
    Unpacking, the op check and the conversion to ONNX are the "loading" stage."""
    import shutil

    from folding.sources.archives import extract_saved_model
    from folding.sources.saved_model import (
        DEFAULT_SIGNATURE,
        fold_saved_model_to_directory,
        load_saved_model,
    )

    if options.recalibrate is not None:
        return {"ok": False, "kind": "invalid", "error": "'recalibrate' needs a Keras model"}
    signature = options.signature or DEFAULT_SIGNATURE

    def job() -> Any:
        directory = Path(source)
        if not directory.is_dir():
            unpacked = Path(out_dir) / ".unpacked"
            root = extract_saved_model(directory, unpacked, label or directory.name, limits)
            directory = Path(out_dir) / SAVED_MODEL_DIR
            root.rename(directory)
            shutil.rmtree(unpacked, ignore_errors=True)
            Path(source).unlink()
        serving = load_saved_model(
            directory, signature, label or directory.name, scan=not options.skip_scan
        )
        report = fold_saved_model_to_directory(
            serving, Path(out_dir), name=name, on_stage=on_stage, **_verification(options)
        )
        (Path(out_dir) / SIGNATURE_FILE).write_text(signature)
        return report

    return _outcome(job)


def _fold_keras_source(
    source: str,
    out_dir: str,
    name: str,
    options: FoldOptions,
    label: str | None,
    limits: Any,
    on_stage: Any,
) -> dict:
    from folding.errors import ProbeError
    from folding.keras_graph.recalibrate import load_calibration
    from folding.pipeline import fold_to_directory
    from folding.sources.keras import load_keras_model

    def job() -> Any:
        model = load_keras_model(
            source, label, limits, progress=lambda done: on_stage("loading", done)
        )
        data = None
        if options.recalibrate is not None:
            try:
                data = load_calibration(model, Path(options.recalibrate))
            except ProbeError as error:
                message = str(error).replace(options.recalibrate, "the upload")
                message = message.removeprefix("calibration data: ")
                raise ProbeError(f"form field 'recalibrate': {message}") from None
        report = fold_to_directory(
            model,
            Path(out_dir),
            name=name,
            recalibrate_on=data,
            on_stage=on_stage,
            **_verification(options),
        )
        if data is not None:  # the stored source is what ``:compare`` runs: keep it recalibrated
            model.save(source)
        return report

    return _outcome(job)


def _fold_onnx_source(
    source: str, out_dir: str, name: str, options: FoldOptions, label: str | None, on_stage: Any
) -> dict:
    from folding.onnx_pipeline import fold_onnx_to_directory, load_onnx

    if options.recalibrate is not None:
        return {"ok": False, "kind": "invalid", "error": "'recalibrate' needs a Keras model"}
    return _outcome(
        lambda: fold_onnx_to_directory(
            load_onnx(Path(source), label),
            Path(out_dir),
            name=name,
            on_stage=on_stage,
            **_verification(options),
        )
    )


def _verification(options: FoldOptions) -> dict[str, Any]:
    return {
        "rtol": options.rtol,
        "export_rtol": options.export_rtol,
        "noise_factor": options.noise_factor,
        "samples": options.samples,
        "probe_path": None if options.probe is None else Path(options.probe),
    }


def _outcome(job: Any) -> dict:
    """Run a fold job; its report, or what went wrong as a plain, picklable result."""
    from folding.errors import (
        ExportError,
        FoldingError,
        ModelLoadError,
        ProbeError,
        VerificationError,
    )

    try:
        report = job()
    except VerificationError as error:
        report = error.report.to_dict() if error.report is not None else None
        return {"ok": False, "kind": "verification", "error": str(error), "report": report}
    except (ModelLoadError, ProbeError) as error:
        return {"ok": False, "kind": "invalid", "error": str(error)}
    except ExportError as error:
        return {"ok": False, "kind": "export", "error": str(error)}
    except FoldingError as error:
        return {"ok": False, "kind": "fold", "error": str(error)}
    except Exception as error:  # a model that breaks Keras or tf2onnx in an unforeseen way
        return {"ok": False, "kind": "fold", "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "report": report.to_dict()}


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
    from folding.pipeline import flat_caller
    from folding.sources.keras import load_keras_model

    if path.suffix == ".onnx":
        return _onnx_caller(path)
    if not path.is_dir():
        return flat_caller(load_keras_model(path))
    from folding.sources.saved_model import DEFAULT_SIGNATURE, load_saved_model

    recorded = path.parent / SIGNATURE_FILE
    signature = recorded.read_text().strip() if recorded.is_file() else DEFAULT_SIGNATURE
    return load_saved_model(path, signature, "the stored SavedModel", scan=scan)
