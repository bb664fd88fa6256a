"""Fold trained BatchNormalization layers into neighbouring Dense/Conv weights."""

from folding.errors import FoldingError, ModelLoadError, UnsafeModelError, VerificationError

__all__ = ["FoldingError", "ModelLoadError", "UnsafeModelError", "VerificationError"]
