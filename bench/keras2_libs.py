"""Keras 2 files written by the Keras 2 model libraries, folded the way a user folds them.

The files (``.h5``, tf_keras ``.keras``, a tf_keras SavedModel folder) and tf_keras's
own answers are written in a tf_keras process (``tests/keras2_libraries.py``, which
says how to install the libraries); here each is opened with ``open_source`` and
folded with ``fold_to_directory`` as ``foldserve fold FILE`` does, and the folded
ONNX is run on the same rows, its largest difference from tf_keras's answers given.
``bench/third_party.py --only keras2-libs`` (or ``--only "segmentation_models Unet"``)
prints the rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.keras2_libraries import MODELS, folder_name, write

FORMATS = {  # the files written for each model beyond .h5
    "segmentation_models Unet resnet18": ["h5", "keras", "savedmodel"],
    "efficientnet B0": ["h5", "keras", "savedmodel"],
    "keras_unet_collection transunet_2d": ["h5", "savedmodel"],
    "keras_unet_collection swin_unet_2d": ["h5", "savedmodel"],
    "classification_models_3D resnet18": ["h5", "keras"],
}
SUFFIX = {"h5": "model.h5", "keras": "model.keras", "savedmodel": "savedmodel"}


def library_models(workdir: Path, only: str | None = None, files: Path | None = None):
    """(label, folder, file or None, error) for each model and format, the files written
    first, into ``files`` when given (those already there are kept and reused)."""
    labels = [label for label in MODELS if not only or only in f"keras2-libs {label}"]
    out = files or workdir / "keras2-libs"
    missing = [label for label in labels if not _written(out / folder_name(label))]
    specs = [f"{label}:{'+'.join(FORMATS.get(label, ['h5']))}" for label in missing]
    stderr = ""
    if specs:
        started = time.perf_counter()
        stderr = write(out, specs, timeout=7200).stderr
        print(f"# files written by tf_keras in {time.perf_counter() - started:.0f} s", flush=True)
    for label in labels:
        directory = out / folder_name(label)
        for form in FORMATS.get(label, ["h5"]):
            name = f"keras2-libs {label} ({'SavedModel' if form == 'savedmodel' else '.' + form})"
            if not (directory / "meta.json").is_file():
                error = (directory / "error.txt").read_text() if directory.is_dir() else ""
                yield name, directory, None, error or stderr[-300:]
                continue
            yield name, directory, directory / SUFFIX[form], None


def _written(directory: Path) -> bool:
    return (directory / "meta.json").is_file() or (directory / "error.txt").is_file()


def run_file(name: str, directory: Path, path: Path | None, error: str | None, workdir: Path):
    """One row: the file opened, folded, exported, verified and compared with tf_keras."""
    import numpy as np
    import onnxruntime as ort

    from folding.errors import FoldingError
    from folding.pipeline import fold_to_directory
    from folding.sources import open_source

    row: dict = {"model": name}
    if path is None:
        row["error"] = f"build: {error.splitlines()[0][:160] if error else 'failed'}"
        return row
    row["bns"] = json.loads((directory / "meta.json").read_text())["batch_norms"]
    out = workdir / "folded" / name.replace(" ", "_").replace("(", "").replace(")", "")
    out.mkdir(parents=True)
    started = time.perf_counter()
    try:
        source = open_source(path)
        row["load_s"] = time.perf_counter() - started
        loaded = time.perf_counter()
        report = fold_to_directory(source, out)
        row["fold_s"] = time.perf_counter() - loaded
    except FoldingError as failure:
        row["error"] = f"{type(failure).__name__}: {str(failure).splitlines()[0][:200]}"
        return row
    except Exception as crash:  # not a FoldingError: a crash, which is a row too
        row["error"] = f"crash: {type(crash).__name__}: {str(crash).splitlines()[0][:160]}"
        return row
    from bench.third_party import report_columns

    row.update(report_columns(report))
    inputs = np.load(directory / "inputs.npy")
    expected = np.load(directory / "expected.npy")
    session = ort.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    answer = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    row["diff"] = float(np.max(np.abs(answer.astype("float64") - expected)))
    row["notes"] = f"max abs diff vs tf_keras {row['diff']:.2g}; {row['notes']}".rstrip("; ")
    if row["folded"] + row["kept"] != row["bns"]:
        row["error"] = f"report accounts for {row['folded'] + row['kept']} BNs of {row['bns']}"
    return row
