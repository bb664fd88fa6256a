"""What a BatchNormalization's numbers say about the weights folding makes from them.

A folded kernel carries ``scale = gamma / sqrt(moving_variance + epsilon)`` on
each output channel, so the BN's statistics become the folded weights' ranges:

* a **dead channel** (|gamma|, or the resulting |scale|, below 1e-3 of the
  layer's median) outputs a constant, ``beta`` (or ``shift``), whatever the
  input;
* a **tiny variance** (``moving_variance < 10 * epsilon``) makes the fold
  multiply by nearly ``1 / sqrt(epsilon)`` (about 1000 for Keras's default
  1e-3): one noisy channel dominates the kernel;
* a large **scale spread** (max |scale| / median |scale|) means a per-tensor
  int8 grid, sized by the largest channel, leaves the small channels with a
  handful of steps (see ``SCALE_SPREAD_LIMIT``);
* **fp16 overflow**: a folded weight or bias beyond float16's largest finite
  value, 65504, becomes ``inf`` when the model is converted to half precision;
* a **variance shift**: on calibration data, the variance the BN's input
  really has at inference differs from ``moving_variance`` (Dropout placed
  before a BN is the classic cause: Li et al., "Understanding the Disharmony
  between Dropout and Batch Normalization by Variance Shift", CVPR 2019).

Every function takes numpy arrays and returns plain values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from folding.math import BatchNormParams

DEAD_FRACTION = 1e-3
TINY_VARIANCE_EPSILONS = 10.0
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
# A symmetric per-tensor int8 grid has 127 steps each side of zero, sized by the
# largest |weight| of the whole tensor. When one channel's scale is 100x the
# median one's, the median channel's weights span about 127 / 100 ~ 1 step: they
# round to zero or one step. Nagel et al., "Data-Free Quantization Through Weight
# Equalization and Bias Correction" (ICCV 2019), section 3.1, trace the failure
# of per-tensor int8 on BN-folded MobileNetV2 to exactly such per-channel range
# differences; per-channel quantisation (or their equalisation) is the remedy.
SCALE_SPREAD_LIMIT = 100.0
# A factor of 2 in variance (1.41 in standard deviation) between training and
# inference; Dropout(p) before a BN gives at least 1 / (1 - p) on zero-mean inputs.
VARIANCE_SHIFT_LIMIT = 2.0


@dataclass(frozen=True)
class BatchNormDiagnostics:
    """The report's ``diagnostics`` object of one BatchNormalization."""

    dead_channels: list[int]
    tiny_variance_channels: list[int]
    scale_spread: float | None  # null when the median |scale| is 0
    fp16_overflow: bool
    variance_shift: float | None  # null without calibration data
    flags: list[str] = field(default_factory=list)


def dead_channels(bn: BatchNormParams, scale: np.ndarray | None = None) -> list[int]:
    """Channels whose |gamma| or |scale| is below ``DEAD_FRACTION`` of the layer's median
    (``scale``: the BN's ``scale()`` when the caller has it already)."""
    dead = _below_median_fraction(np.abs(bn.scale() if scale is None else scale))
    if bn.gamma is not None:
        dead |= _below_median_fraction(np.abs(bn.gamma.astype(np.float64)))
    return np.flatnonzero(dead).tolist()


def _below_median_fraction(magnitude: np.ndarray) -> np.ndarray:
    magnitude = magnitude.reshape(-1)
    return (magnitude < DEAD_FRACTION * _median(magnitude)) | (magnitude == 0)


def _median(values: np.ndarray) -> float:
    """``np.median`` of a flat array, without its overhead on the small arrays a BN has."""
    count = values.size
    if count == 0 or np.isnan(values).any():
        return float("nan")
    middle = count // 2
    ordered = np.partition(values, (middle - 1, middle) if count % 2 == 0 else middle)
    if count % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def tiny_variance_channels(bn: BatchNormParams) -> list[int]:
    """Channels with ``moving_variance < 10 * epsilon``."""
    variance = bn.moving_variance.astype(np.float64).reshape(-1)
    return np.flatnonzero(variance < TINY_VARIANCE_EPSILONS * bn.epsilon).tolist()


def scale_spread(bn: BatchNormParams, scale: np.ndarray | None = None) -> float | None:
    """``max |scale| / median |scale|`` over channels; None when the median is 0."""
    magnitude = np.abs(bn.scale() if scale is None else scale).reshape(-1)
    median = _median(magnitude)
    if median == 0 or not np.isfinite(median):
        return None
    return float(magnitude.max() / median)


def fp16_overflow(arrays: Sequence[np.ndarray]) -> bool:
    """True when any value of ``arrays`` is beyond float16's range (or not finite)."""
    for array in arrays:
        values = np.abs(np.asarray(array, dtype=np.float64))
        if values.size and not values.max() <= FLOAT16_MAX:  # NaN compares False
            return True
    return False


def variance_shift(bn: BatchNormParams, observed_variance: np.ndarray) -> float:
    """The largest per-channel ratio, either way round, between ``observed_variance``
    (the input's variance at inference) and ``moving_variance``; epsilon is added to
    both, as the BN does, so a channel that is constant in both reads 1."""
    moving = bn.moving_variance.astype(np.float64).reshape(-1) + bn.epsilon
    observed = np.asarray(observed_variance, dtype=np.float64).reshape(-1) + bn.epsilon
    ratio = observed / moving
    return float(np.max(np.maximum(ratio, 1.0 / ratio)))


def diagnose(
    bn: BatchNormParams,
    folded: Sequence[np.ndarray],
    observed_variance: np.ndarray | None = None,
) -> BatchNormDiagnostics:
    """All checks on one BN. ``folded`` holds the arrays the BN ends up in (the
    absorbing layer's new kernel and bias, or a kept BN's own scale and shift)."""
    scale = bn.scale()
    measured = BatchNormDiagnostics(
        dead_channels=dead_channels(bn, scale),
        tiny_variance_channels=tiny_variance_channels(bn),
        scale_spread=scale_spread(bn, scale),
        fp16_overflow=fp16_overflow(folded),
        variance_shift=None if observed_variance is None else variance_shift(bn, observed_variance),
    )
    return dataclasses.replace(measured, flags=flags(measured))


def flags(diagnostics: BatchNormDiagnostics) -> list[str]:
    """What ``diagnostics`` warn of, in words for the report."""
    dead = diagnostics.dead_channels
    tiny = diagnostics.tiny_variance_channels
    spread = diagnostics.scale_spread
    shift = diagnostics.variance_shift
    found = []
    if dead:
        found.append(
            f"{len(dead)} dead channel(s) {_head(dead)}: |gamma| or |scale| below "
            f"{DEAD_FRACTION:g} x the median, the channel outputs a constant"
        )
    if tiny:
        found.append(
            f"{len(tiny)} channel(s) {_head(tiny)} with moving_variance < "
            f"{TINY_VARIANCE_EPSILONS:g} x epsilon: the fold multiplies by ~1/sqrt(epsilon)"
        )
    if spread is not None and spread > SCALE_SPREAD_LIMIT:
        found.append(
            f"scale spread {spread:.3g} > {SCALE_SPREAD_LIMIT:g}: per-tensor int8 quantisation "
            "of the folded weights loses the small channels; quantise per channel"
        )
    if diagnostics.fp16_overflow:
        found.append(f"folded weights exceed the float16 range ({FLOAT16_MAX:g})")
    if shift is not None and shift > VARIANCE_SHIFT_LIMIT:
        found.append(
            f"variance shift {shift:.3g} > {VARIANCE_SHIFT_LIMIT:g}: the input's variance at "
            "inference differs from moving_variance; recalibrate on representative data"
        )
    return found


def _head(indices: list[int], shown: int = 8) -> str:
    listed = ", ".join(str(i) for i in indices[:shown])
    return f"[{listed}{', ...' if len(indices) > shown else ''}]"
