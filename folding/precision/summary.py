"""The variants of a report.json in a few lines for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from folding.precision.latency import LATENCY_BATCHES


def variants_summary(directory: Path, report_file: str = "report.json") -> str:
    """A few lines for people: each variant, its verdict, agreement, error and speed."""
    variants = json.loads((Path(directory) / report_file).read_text()).get("variants", [])
    return "\n".join(describe(variant) for variant in variants)


def describe(variant: dict[str, Any]) -> str:
    """``int8: passed, agreement 99.4%, max error 0.031, batch 8 3.1x faster -> model.int8.onnx``"""
    parts = [f"{variant['precision']}: {'passed' if variant['passed'] else 'FAILED'}"]
    if variant.get("agreement") is not None:
        parts.append(f"agreement {variant['agreement']:.1%}")
    if variant.get("errors"):
        parts.append(f"max error {max(variant['errors'].values()):.3g}")
    timing = variant.get("latency_ms", {}).get(f"batch {LATENCY_BATCHES[-1]}")
    if timing and timing.get("speedup"):
        parts.append(f"batch {LATENCY_BATCHES[-1]} {timing['speedup']:.2f}x float32's speed")
    line = ", ".join(parts)
    if variant.get("file"):
        line += f" -> {variant['file']}"
    if variant.get("reason"):
        line += f" ({variant['reason']})"
    for note in variant.get("notes", []):
        line += f"\n  note: {note}"
    return line
