"""The precisions a folded model can be given and the file each passing variant is
written to (the serving process reads these to find a model's variants)."""

from __future__ import annotations

from collections.abc import Sequence

from folding.errors import FoldingError

PRECISIONS = ("fp16", "int8")


def variant_file(precision: str) -> str:
    """``model.int8.onnx``: where a passing variant is written beside ``model.onnx``."""
    return f"model.{precision}.onnx"


def parse_precisions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"fp16,int8"`` -> ``("fp16", "int8")``; an unknown name is an error naming it."""
    if not text:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = []
    for name in (item.strip().lower() for item in names):
        if not name or name == "fp32":
            continue
        if name not in PRECISIONS:
            raise FoldingError(
                f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}"
            )
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)
