"""The one check of a request's input tensors against a model's: names, rank, fixed
dimensions, dtype (cast when it can be, without overflow) and a common batch."""

from __future__ import annotations

import numpy as np

from service.errors import InvalidInput
from service.runtime.sessions import TensorMeta


def validate_inputs(
    expected: list[TensorMeta], inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Check names, rank, fixed dimensions, dtype and a common non-empty batch."""
    names = [meta.name for meta in expected]
    for name in inputs:
        if name not in names:
            raise InvalidInput(f"unknown input '{name}'; model inputs are: {', '.join(names)}")
    feed = {}
    batch = None
    for meta in expected:
        if meta.name not in inputs:
            raise InvalidInput(f"missing input '{meta.name}'; model inputs are: {', '.join(names)}")
        array = inputs[meta.name]
        if array.dtype != meta.dtype:
            if not np.can_cast(array.dtype, meta.dtype, casting="same_kind"):
                raise InvalidInput(
                    f"input '{meta.name}' has dtype {array.dtype}; model expects {meta.dtype}"
                )
            with np.errstate(over="ignore"):
                converted = array.astype(meta.dtype)
            if np.issubdtype(meta.dtype, np.floating) and np.issubdtype(array.dtype, np.floating):
                overflow = np.isinf(converted) & np.isfinite(array)
                if overflow.any():
                    raise InvalidInput(
                        f"input '{meta.name}' has values outside the range of {meta.dtype} "
                        f"(e.g. {array[overflow].flat[0]:g})"
                    )
            array = converted
        fits = array.ndim == len(meta.shape) and all(
            want < 0 or got == want for got, want in zip(array.shape, meta.shape, strict=True)
        )
        if not fits:
            raise InvalidInput(
                f"input '{meta.name}' has shape {list(array.shape)}; "
                f"model expects {list(meta.shape)}"
            )
        if array.shape[0] == 0:
            raise InvalidInput(f"input '{meta.name}' has an empty batch")
        if batch is not None and array.shape[0] != batch:
            raise InvalidInput(
                f"input '{meta.name}' has batch size {array.shape[0]}; other inputs have {batch}"
            )
        batch = array.shape[0]
        feed[meta.name] = np.ascontiguousarray(array)
    return feed
