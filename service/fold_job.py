"""What runs inside the fold worker process: the only place TensorFlow is imported.

Functions here are called through a process pool; they take and return plain,
picklable values, and never raise for a bad model: failures come back as
``{"ok": False, "kind": ..., "error": ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_loaded: dict[tuple[str, float], Any] = {}


def warm() -> bool:
    """Import TensorFlow, Keras and the folding package ahead of the first job."""
    from folding.quiet import import_keras

    import_keras()
    import folding.pipeline  # noqa: F401

    return True


def fold_source(
    source: str,
    out_dir: str,
    name: str,
    rtol: float,
    samples: int,
    label: str | None = None,
    calibration: str | None = None,
) -> dict:
    """Load ``source`` safely, fold it and write the exports and report into ``out_dir``.

    ``label`` names the file in error messages (the name it was uploaded under);
    ``calibration`` is a .npy/.npz to recalibrate the BNs on before folding."""
    warm()
    from folding.errors import ExportError, FoldingError, ModelLoadError, VerificationError
    from folding.loading import load_keras_model
    from folding.pipeline import fold_to_directory
    from folding.recalibrate import load_calibration

    try:
        model = load_keras_model(source, label)
        data = None
        if calibration is not None:
            try:
                data = load_calibration(model, Path(calibration))
            except FoldingError as error:
                message = str(error).replace(calibration, "the 'calibration' upload")
                return {"ok": False, "kind": "invalid", "error": message}
        report = fold_to_directory(
            model,
            Path(out_dir),
            rtol=rtol,
            samples=samples,
            name=name,
            recalibrate_on=data,
        )
        if data is not None:  # the stored source is what ``:compare`` runs: keep it recalibrated
            model.save(source)
    except VerificationError as error:
        report = error.report.to_dict() if error.report is not None else None
        return {"ok": False, "kind": "verification", "error": str(error), "report": report}
    except ModelLoadError as error:
        return {"ok": False, "kind": "invalid", "error": str(error)}
    except ExportError as error:
        return {"ok": False, "kind": "export", "error": str(error)}
    except FoldingError as error:
        return {"ok": False, "kind": "fold", "error": str(error)}
    except Exception as error:  # a model that breaks Keras or tf2onnx in an unforeseen way
        return {"ok": False, "kind": "fold", "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "report": report.to_dict()}


def keras_predict(source: str, arrays: list[Any]) -> dict:
    """The original Keras model's outputs (flat list) on ``arrays`` (flat list of inputs)."""
    warm()
    import numpy as np

    from folding.loading import load_keras_model
    from folding.pipeline import flat_caller

    key = (source, Path(source).stat().st_mtime)
    try:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = flat_caller(load_keras_model(source))
        outputs = _loaded[key](list(arrays))
    except Exception as error:  # the model's own call failed on these inputs
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "outputs": [np.asarray(output) for output in outputs]}
