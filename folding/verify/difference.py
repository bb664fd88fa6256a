"""How far one answer is from another: the one comparison behind every verdict and every
``:compare`` (pure numpy; imported by the serving process too).

A NaN, or an infinity of the same sign, that both sides give at the same place (a NaN
input row, a saturated exponential) is agreement; one side's alone is an infinite
difference. The scale is the largest finite reference magnitude (1 when there is none,
or it is 0).
"""

from __future__ import annotations

import numpy as np


def max_difference(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max |reference - candidate|, scale); an empty pair differs by 0 on scale 1."""
    want = np.asarray(reference, np.float64)
    got = np.asarray(candidate, np.float64)
    if not want.size or not got.size:
        return 0.0, 1.0
    finite = np.abs(want[np.isfinite(want)])
    scale = (float(finite.max()) if finite.size else 0.0) or 1.0
    same = (want == got) | (np.isnan(want) & np.isnan(got))
    with np.errstate(invalid="ignore"):
        gap = np.where(same, 0.0, np.abs(want - got))
    return (float("inf") if np.isnan(gap).any() else float(gap.max())), scale
