"""What runs inside the fold worker process: the only place TensorFlow is imported.

Functions here are called through a process pool; they take and return plain,
picklable values, and never raise for a bad model: failures come back as
``{"ok": False, "kind": ..., "error": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FoldOptions:
    """How a fold job verifies (see ``folding.pipeline.fold_to_directory``)."""

    rtol: float
    samples: int
    export_rtol: float | None = None
    noise_factor: float = 10.0
    probe: str | None = None
    calibration: str | None = None
    archive_limits: tuple[int, int] | None = None  # total inflated bytes, entries
    signature: str | None = None  # a SavedModel's signature (default serving_default)
    custom_objects: str = ""  # operator-trusted modules registering Keras layers


SAVED_MODEL_DIR = "saved_model"
SIGNATURE_FILE = "signature.txt"
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


_loaded: dict[tuple[str, float], Any] = {}

MEMORY_EXIT_CODE = 86
WATCH_INTERVAL_S = 0.2


def init_worker(parent_pid: int, memory_limit_bytes: int, over_limit: Any) -> None:
    """Run first in every fold worker: die with the server, and keep under the memory cap.

    On Linux the kernel kills the worker when its parent dies (PR_SET_PDEATHSIG); a
    watchdog thread also exits when the parent is gone (any OS, or a parent that died
    before the call), and, when the worker's resident memory goes over
    ``memory_limit_bytes`` (0: no cap), sets ``over_limit`` and exits, so that the
    server can say why the job ended instead of being taken down with it.
    """
    import ctypes
    import os
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def resident_bytes() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            return 0

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            if memory_limit_bytes and resident_bytes() > memory_limit_bytes:
                over_limit.set()
                os._exit(MEMORY_EXIT_CODE)
            threading.Event().wait(WATCH_INTERVAL_S)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="fold-worker-watchdog", daemon=True).start()


def warm() -> bool:
    """Import TensorFlow, Keras and the folding package ahead of the first job."""
    from folding.quiet import import_keras

    import_keras()
    import folding.pipeline  # noqa: F401

    return True


class StageReporter:
    """``on_stage(stage, progress)`` for the pipelines: writes the stage, its progress and
    when each stage started to ``path`` (a JSON file replaced atomically), where the
    server process that owns the job reads it. With no path, it does nothing."""

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
    progress: str | None = None,
) -> dict:
    """Load ``source`` safely, fold it and write the exports and report into ``out_dir``.

    ``label`` names the file in error messages (the name it was uploaded under);
    ``calibration`` is a .npy/.npz to recalibrate the BNs on before folding;
    ``progress``: the file the stages are reported in (see ``StageReporter``)."""
    on_stage = StageReporter(progress)
    on_stage("loading", None)
    warm()
    from folding.loading import DEFAULT_LIMITS, ArchiveLimits

    limits = DEFAULT_LIMITS
    if options.archive_limits is not None:
        total, entries = options.archive_limits
        limits = ArchiveLimits(max_total_bytes=total, max_entries=entries)
    custom = _import_custom_objects(options.custom_objects)
    if custom is not None:
        return custom
    if source.lower().endswith(ARCHIVE_SUFFIXES) or Path(source).is_dir():
        try:
            return _fold_saved_model_source(source, out_dir, name, options, label, limits, on_stage)
        finally:
            _forget_models()
    if options.signature is not None:
        return {"ok": False, "kind": "invalid", "error": "'signature' applies to a SavedModel"}
    if source.endswith(".onnx"):
        return _fold_onnx_source(source, out_dir, name, options, label, on_stage)
    try:
        return _fold_keras_source(source, out_dir, name, options, label, limits, on_stage)
    finally:
        _forget_models()


def _import_custom_objects(spec: str) -> dict | None:
    """Import the operator's custom-object modules; a failure is the job's answer."""
    from folding.custom_objects import import_modules
    from folding.errors import FoldingError

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

    from folding.archives import extract_saved_model
    from folding.saved_model import (
        DEFAULT_SIGNATURE,
        fold_saved_model_to_directory,
        load_saved_model,
    )

    if options.calibration is not None:
        return {"ok": False, "kind": "invalid", "error": "'calibration' needs a Keras model"}
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
        serving = load_saved_model(directory, signature, label or directory.name)
        report = fold_saved_model_to_directory(
            serving, Path(out_dir), name=name, on_stage=on_stage, **_verification(options)
        )
        (Path(out_dir) / SIGNATURE_FILE).write_text(signature)
        return report

    return _outcome(job)


def _forget_models() -> None:
    """Drop what Keras keeps of the models a job built (layers, traced functions), so
    that a long-lived worker does not grow with every job."""
    import gc

    import keras

    _loaded.clear()
    keras.backend.clear_session()
    gc.collect()


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
    from folding.loading import load_keras_model
    from folding.pipeline import fold_to_directory
    from folding.recalibrate import load_calibration

    def job() -> Any:
        model = load_keras_model(source, label, limits)
        data = None
        if options.calibration is not None:
            try:
                data = load_calibration(model, Path(options.calibration))
            except ProbeError as error:
                message = str(error).replace(options.calibration, "the 'calibration' upload")
                raise ProbeError(message) from None
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

    if options.calibration is not None:
        return {"ok": False, "kind": "invalid", "error": "'calibration' needs a Keras model"}
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


def keras_predict(source: str, arrays: list[Any], custom_objects: str = "") -> dict:
    """The source model's outputs (flat list) on ``arrays`` (flat list of inputs): the
    Keras model, or a SavedModel's signature (the one it was folded with)."""
    warm()
    import numpy as np

    from folding.errors import FoldingError

    failed = _import_custom_objects(custom_objects)
    if failed is not None:
        return {"ok": False, "error": failed["error"]}
    path = Path(source)
    key = (source, path.stat().st_mtime)
    try:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = _source_caller(path)
        outputs = _loaded[key](list(arrays))
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


def _source_caller(path: Path) -> Any:
    from folding.loading import load_keras_model
    from folding.pipeline import flat_caller

    if path.suffix == ".onnx":
        return _onnx_caller(path)
    if not path.is_dir():
        return flat_caller(load_keras_model(path))
    from folding.saved_model import DEFAULT_SIGNATURE, load_saved_model

    recorded = path.parent / SIGNATURE_FILE
    signature = recorded.read_text().strip() if recorded.is_file() else DEFAULT_SIGNATURE
    return load_saved_model(path, signature, "the stored SavedModel")
