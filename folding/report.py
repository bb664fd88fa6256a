"""The fold report as typed data, serialised to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from folding.diagnostics import BatchNormDiagnostics


@dataclass(frozen=True)
class ValueRange:
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> ValueRange:
        return cls(min=float(np.min(values)), max=float(np.max(values)))


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


@dataclass(frozen=True)
class FoldedEntry:
    bn: str
    into: str
    into_class: str
    direction: str  # "backward" (into the layer before) or "forward" (into the layer after)
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
    name: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    scale: float
    argmax_agreement: float | None = None


@dataclass(frozen=True)
class Verification:
    samples: int
    rtol: float
    passed: bool
    outputs: list[OutputCheck]

    @property
    def max_rel_error(self) -> float:
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)


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
        data.update(asdict(self))
        if self.verification is not None:
            data["verification"]["max_abs_error"] = self.verification.max_abs_error
            data["verification"]["max_rel_error"] = self.verification.max_rel_error
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def summary(self) -> str:
        """A readable table of what was folded, kept and removed."""
        lines = [f"model {self.model}"]
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
            verdict = "passed" if self.verification.passed else "FAILED"
            lines.append(
                f"verification {verdict} on {self.verification.samples} samples "
                f"(rtol {self.verification.rtol:g}):"
            )
            for check in self.verification.outputs:
                agreement = ""
                if check.argmax_agreement is not None:
                    agreement = f"  argmax agreement {check.argmax_agreement:.2%}"
                lines.append(
                    f"  {check.name}: max abs {check.max_abs_error:.3g}, "
                    f"max rel {check.max_rel_error:.3g}{agreement}"
                )
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
        return "\n".join(lines)
