"""Run the original Keras model and an ONNX export on the same probe inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from folding.errors import FoldingError
from folding.graph import InputSpec
from folding.report import OutputCheck, Verification

DEFAULT_RTOL = 1e-4
DEFAULT_SAMPLES = 64
DYNAMIC_DIM_PROBE = 16


def probe_inputs(
    inputs: Sequence[InputSpec],
    samples: int = DEFAULT_SAMPLES,
    user_path: Path | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Random probe inputs (standard normal; small integers for integer inputs).

    With ``user_path``, the user's ``.npy`` (single-input models) or ``.npz``
    (one array per input name) is used instead.
    """
    if user_path is not None:
        return _load_user_probes(inputs, Path(user_path))
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        shape = [samples] + [DYNAMIC_DIM_PROBE if d is None else d for d in spec.shape[1:]]
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _load_user_probes(inputs: Sequence[InputSpec], path: Path) -> list[np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise FoldingError(f"probe file '{path}' is not a readable .npy/.npz: {error}") from None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(spec.name for spec in inputs)
            raise FoldingError(f"model has {len(inputs)} inputs ({names}); give an .npz by name")
        arrays = [loaded]
    else:
        missing = [spec.name for spec in inputs if spec.name not in loaded.files]
        if missing:
            raise FoldingError(f"probe file '{path}' lacks inputs: {', '.join(missing)}")
        arrays = [loaded[spec.name] for spec in inputs]
    result = []
    for spec, array in zip(inputs, arrays, strict=True):
        expected = list(spec.shape[1:])
        if array.ndim != len(spec.shape) or any(
            want is not None and got != want
            for got, want in zip(array.shape[1:], expected, strict=True)
        ):
            raise FoldingError(
                f"probe input '{spec.name}' has shape {list(array.shape)}; "
                f"model expects {[-1 if d is None else d for d in spec.shape]}"
            )
        result.append(array.astype(np.dtype(spec.dtype)))
    return result


def run_onnx(path: Path, names: Sequence[str], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, arrays, strict=True)))


def compare(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    rtol: float = DEFAULT_RTOL,
) -> Verification:
    """Max absolute and relative error per output, relative to the output's scale.

    The scale of an output is the largest absolute value of the reference
    (1 when that is 0); the check passes when every output's
    ``max_abs_error / scale`` is at most ``rtol``.
    """
    checks = []
    for name, want, got in zip(names, reference, candidate, strict=True):
        want64, got64 = np.asarray(want, np.float64), np.asarray(got, np.float64)
        if want64.shape != got64.shape:
            raise FoldingError(
                f"output '{name}' has shape {list(got64.shape)}; reference has {list(want64.shape)}"
            )
        scale = float(np.max(np.abs(want64))) if want64.size else 0.0
        scale = scale or 1.0
        max_abs = float(np.max(np.abs(want64 - got64))) if want64.size else 0.0
        agreement = None
        if want64.ndim == 2 and want64.shape[1] > 1:
            agreement = float(np.mean(want64.argmax(axis=1) == got64.argmax(axis=1)))
        checks.append(
            OutputCheck(
                name=name,
                shape=list(want64.shape),
                max_abs_error=max_abs,
                max_rel_error=max_abs / scale,
                scale=scale,
                argmax_agreement=agreement,
            )
        )
    passed = all(check.max_rel_error <= rtol for check in checks)
    return Verification(
        samples=len(reference[0]) if reference else 0, rtol=rtol, passed=passed, outputs=checks
    )
