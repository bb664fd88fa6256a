"""What the fold pipelines share without importing TensorFlow: a model input's
description and the stage callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class InputSpec:
    id: int
    name: str
    shape: tuple[int | None, ...]
    dtype: str


StageCallback = Callable[[str, "float | None"], None]
"""``on_stage(stage, progress)``: told when a stage ("folding", "exporting",
"verifying") starts, and of the fraction of it done (0..1) where that is known."""


def no_stages(stage: str, progress: float | None) -> None:
    """The default ``on_stage``: nobody is told."""
