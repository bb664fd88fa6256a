"""The fold report as typed data, serialised to JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from folding.diagnostics import BatchNormDiagnostics


def article(kind: str) -> str:
    """``a Relu``, ``an Identity``, ``an Add``: a layer or op type in a sentence."""
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind}"


@dataclass(frozen=True)
class ValueRange:
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> ValueRange:
        values = np.asarray(values)
        return cls(min=float(values.min()), max=float(values.max()))


MAX_PER_CHANNEL = 4096
"""Layers with more channels than this report ranges only, not per-channel values."""


def _channel_values(values: np.ndarray | None) -> list[float] | None:
    if values is None:
        return None
    return [float(f"{value:.7g}") for value in np.asarray(values, np.float64).reshape(-1)]


@dataclass(frozen=True)
class PerChannel:
    """Each channel's numbers (7 significant digits), for plots: ``scale = gamma /
    sqrt(moving_variance + epsilon)`` and the BN's own parameters."""

    scale: list[float]
    moving_mean: list[float]
    moving_variance: list[float]
    gamma: list[float] | None
    beta: list[float] | None

    @classmethod
    def of(
        cls,
        scale: np.ndarray,
        moving_mean: np.ndarray,
        moving_variance: np.ndarray,
        gamma: np.ndarray | None,
        beta: np.ndarray | None,
    ) -> PerChannel | None:
        """None when the layer has more than ``MAX_PER_CHANNEL`` channels."""
        if np.asarray(scale).size > MAX_PER_CHANNEL:
            return None
        return cls(
            scale=_channel_values(scale),
            moving_mean=_channel_values(moving_mean),
            moving_variance=_channel_values(moving_variance),
            gamma=_channel_values(gamma),
            beta=_channel_values(beta),
        )


@dataclass(frozen=True)
class BatchNormStats:
    """What a person reads to interpret one BatchNormalization layer."""

    channels: int
    epsilon: float
    moving_mean: ValueRange
    moving_variance: ValueRange
    gamma: ValueRange | None
    beta: ValueRange | None
    scale: ValueRange
    per_channel: PerChannel | None = None

    @classmethod
    def of(cls, params: Any, scale: np.ndarray, *, per_channel: bool = True) -> BatchNormStats:
        """From ``folding.math.BatchNormParams`` and the scale it folds with
        (``per_channel=False``: the value ranges only)."""
        return cls(
            channels=params.channels,
            epsilon=params.epsilon,
            moving_mean=ValueRange.of(params.moving_mean),
            moving_variance=ValueRange.of(params.moving_variance),
            gamma=None if params.gamma is None else ValueRange.of(params.gamma),
            beta=None if params.beta is None else ValueRange.of(params.beta),
            scale=ValueRange.of(scale),
            per_channel=PerChannel.of(
                scale, params.moving_mean, params.moving_variance, params.gamma, params.beta
            )
            if per_channel
            else None,
        )


@dataclass(frozen=True)
class FoldedEntry:
    bn: str
    into: str
    into_class: str
    direction: str  # "backward" (into the layer before), "forward" (into the layer after) or
    # "parallel" (into a convolution of the BN's own input that it is added to)
    stats: BatchNormStats
    diagnostics: BatchNormDiagnostics | None = None


@dataclass(frozen=True)
class NotFoldedEntry:
    bn: str
    reason: str
    stats: BatchNormStats | None = None
    diagnostics: BatchNormDiagnostics | None = None


@dataclass(frozen=True)
class RecalibratedLayer:
    """One BN's statistics before and after re-estimation on the calibration data."""

    bn: str
    before: BatchNormStats
    after: BatchNormStats
    variance_shift_before: float  # the old moving_variance against the data's variance


@dataclass(frozen=True)
class Recalibration:
    samples: int
    layers: list[RecalibratedLayer]


@dataclass(frozen=True)
class RemovedEntry:
    layer: str
    class_name: str


@dataclass(frozen=True)
class OutputCheck:
    """One output's errors, each ``max |a - b|`` over the output's ``scale``.

    ``fold_error``: folded ONNX vs unfolded ONNX; ``export_error``: unfolded ONNX
    vs the Keras model; ``total_error``: folded ONNX vs the Keras model (also
    ``max_rel_error``, with ``max_abs_error`` its absolute size). ``noise``: how far
    the unfolded graph moves when every weight moves one float32 ulp; the limits
    are the tolerances raised to ``NOISE_FACTOR * noise``. ``*_vs_float64``: each
    float32 graph against the unfolded graph run in float64 (None where ONNX
    Runtime cannot run it in float64). ``spread``: how much the output varies
    across probes.
    """

    name: str
    shape: list[int]
    scale: float
    fold_error: float
    export_error: float
    total_error: float
    noise: float | None
    fold_limit: float
    export_limit: float
    folded_vs_float64: float | None
    unfolded_vs_float64: float | None
    spread: float
    max_abs_error: float
    max_rel_error: float
    fold_abs_error: float
    argmax_agreement: float | None = None


class _LargestOverOutputs:
    """A read-only attribute of a ``Verification``: the largest of its outputs' own
    attribute of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, verification: Verification | None, owner: type | None = None) -> Any:
        if verification is None:
            return self
        return max((getattr(o, self.name) for o in verification.outputs), default=0.0)


@dataclass(frozen=True)
class Verification:
    """``failure`` is None, "fold" (folding changed the answers) or "export" (the
    ONNX export of the *unfolded* model already differs from Keras)."""

    samples: int
    rtol: float
    passed: bool
    outputs: list[OutputCheck]
    export_rtol: float = 0.0
    failure: str | None = None
    inconclusive: bool = False
    inconclusive_reason: str | None = None
    compared_dtype: str = "float32"
    probes: str = "random"

    @property
    def verdict(self) -> str:
        if not self.passed:
            return f"failed ({self.failure})"
        return "inconclusive" if self.inconclusive else "passed"

    # the largest over the outputs (0.0 without outputs)
    fold_error = _LargestOverOutputs()
    export_error = _LargestOverOutputs()
    max_rel_error = _LargestOverOutputs()
    max_abs_error = _LargestOverOutputs()


@dataclass(frozen=True)
class OnnxSummary:
    nodes: int
    bytes: int
    op_counts: dict[str, int]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | None]


@dataclass
class FoldReport:
    model: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    folded: list[FoldedEntry] = field(default_factory=list)
    not_folded: list[NotFoldedEntry] = field(default_factory=list)
    removed: list[RemovedEntry] = field(default_factory=list)
    verification: Verification | None = None
    onnx: dict[str, OnnxSummary] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    exporter: str = "direct"
    loader: str | None = (
        None  # how the Keras file was loaded (folding.sources.keras.loading.loader_of)
    )
    warnings: list[str] = field(default_factory=list)
    recalibration: Recalibration | None = None

    @property
    def diagnostics_summary(self) -> dict[str, Any]:
        """How many BNs were checked and flagged, and each flagged BN's flags."""
        checked = [
            entry for entry in [*self.folded, *self.not_folded] if entry.diagnostics is not None
        ]
        flagged = {e.bn: e.diagnostics.flags for e in checked if e.diagnostics.flags}
        return {"checked": len(checked), "flagged": len(flagged), "flags": flagged}

    def to_dict(self) -> dict[str, Any]:
        data = {"model": self.model, "diagnostics_summary": self.diagnostics_summary}
        data.update(_plain(self))
        if self.verification is not None:
            data["verification"]["max_abs_error"] = self.verification.max_abs_error
            data["verification"]["max_rel_error"] = self.verification.max_rel_error
            data["verification"]["fold_error"] = self.verification.fold_error
            data["verification"]["export_error"] = self.verification.export_error
            data["verification"]["verdict"] = self.verification.verdict
        return data

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), indent=2)``, character for character (see
        ``indented_json``)."""
        return indented_json(self.to_dict())

    def summary(self) -> str:
        """A readable table of what was folded, kept and removed."""
        lines = [f"model {self.model}"]
        if self.loader:
            lines.append(f"loaded by {self.loader}")
        rows = [("batchnorm", "action", "layer / reason", "scale range")]
        for entry in self.folded:
            scale = f"[{entry.stats.scale.min:.4g}, {entry.stats.scale.max:.4g}]"
            rows.append((entry.bn, f"folded {entry.direction}", entry.into, scale))
        for entry in self.not_folded:
            scale = ""
            if entry.stats is not None:
                scale = f"[{entry.stats.scale.min:.4g}, {entry.stats.scale.max:.4g}]"
            rows.append((entry.bn, "kept", entry.reason, scale))
        for entry in self.removed:
            rows.append((entry.layer, "removed", entry.class_name, ""))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
        if self.verification is not None:
            lines.extend(_verification_lines(self.verification))
        summary = self.diagnostics_summary
        if summary["flagged"]:
            lines.append(f"diagnostics: {summary['flagged']} of {summary['checked']} BNs flagged")
            for bn, flags in summary["flags"].items():
                lines.extend(f"  {bn}: {flag}" for flag in flags)
        if self.recalibration is not None:
            lines.append(
                f"recalibrated {len(self.recalibration.layers)} BNs on "
                f"{self.recalibration.samples} samples"
            )
        for variant, info in self.onnx.items():
            lines.append(f"onnx {variant}: {info.nodes} nodes, {info.bytes} bytes")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


def _verification_lines(verification: Verification) -> list[str]:
    verdict = verification.verdict.upper() if not verification.passed else verification.verdict
    lines = [
        f"verification {verdict} on {verification.samples} {verification.probes} probes "
        f"({verification.compared_dtype}; fold rtol {verification.rtol:g}, "
        f"export rtol {verification.export_rtol:g}; errors relative to each output's scale):"
    ]
    rows = [("output", "fold", "export", "total", "noise", "f32 vs f64 (folded/unfolded)")]
    for check in verification.outputs:
        exact = "n/a"
        if check.folded_vs_float64 is not None and check.unfolded_vs_float64 is not None:
            exact = f"{check.folded_vs_float64:.3g} / {check.unfolded_vs_float64:.3g}"
        rows.append(
            (
                check.name,
                f"{check.fold_error:.3g}",
                f"{check.export_error:.3g}",
                f"{check.total_error:.3g}",
                "-" if check.noise is None else f"{check.noise:.3g}",
                exact,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    for check in verification.outputs:
        if check.argmax_agreement is not None:
            lines.append(f"  {check.name}: argmax agreement {check.argmax_agreement:.2%}")
    if verification.inconclusive:
        lines.append(f"  inconclusive: {verification.inconclusive_reason}")
    return lines


def indented_json(value: Any, level: int = 0) -> str:
    """What ``json.dumps(value, indent=2)`` writes, built by joining strings: with an
    indent, ``json`` leaves its C encoder for a Python generator per value, which
    takes a third of a second over a ResNet's ~10^5 per-channel floats (a quarter of
    loading the model). Same separators, ``ensure_ascii`` strings, ``NaN``/``Infinity``
    and key conversions; a value JSON cannot write raises TypeError, as there."""
    if isinstance(value, str):
        return _json_string(value)
    if value is None or isinstance(value, bool | int | float):
        return _json_scalar(value)
    inner = "\n" + "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{_json_key(key)}: {indented_json(item, level + 1)}" for key, item in value.items()
        ]
        return "{" + inner + ("," + inner).join(items) + "\n" + "  " * level + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if all(type(item) is float for item in value):  # per-channel numbers: no recursion
            items = [_json_float(item) for item in value]
        else:
            items = [indented_json(item, level + 1) for item in value]
        return "[" + inner + ("," + inner).join(items) + "\n" + "  " * level + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_json_string = json.encoder.encode_basestring_ascii


def _json_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _json_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    return _json_float(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return _json_string(key)
    if key is None or isinstance(key, bool | int | float):
        return _json_string(_json_scalar(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copy of every leaf (a ResNet's
    per-channel lists are ~10^5 floats: seconds of ``copy.deepcopy``)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
