"""Everything the folding package raises. Each message names the culprit."""

from __future__ import annotations


class FoldingError(Exception):
    """Base class: a model could not be loaded, folded, exported or verified."""


class ModelLoadError(FoldingError):
    """The input is missing, is not a Keras model, or is a corrupt file."""


class UnsafeModelError(ModelLoadError):
    """The file carries code (a Lambda layer or similar) and is refused."""


class ProbeError(FoldingError):
    """The user's probe data cannot be used (unreadable, wrong names or shapes).

    ``option``: the option the rows came with ("recalibrate"), where not the probes."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class InvalidOption(FoldingError):
    """An option given with a model it does not apply to: ``option`` (its name, e.g.
    "signature") ``reason`` ("needs a Keras model; ...")."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"'{option}' {reason}")
        self.option = option
        self.reason = reason


class ExportError(FoldingError):
    """The model could not be converted to ONNX."""


class VerificationError(FoldingError):
    """The folded model does not answer like the original within tolerance.

    ``report`` holds the full fold report so a caller can show what differed.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
