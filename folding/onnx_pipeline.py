"""Moved: the ONNX source is ``folding.sources.onnx_source``, the fold ``folding.pipeline``.

These names stay importable here for ``folding.precision.variants`` until it imports
them from ``folding.sources.onnx_source``; then this module goes."""

from folding.sources.onnx_source import input_specs, load_onnx, random_probes

__all__ = ["input_specs", "load_onnx", "random_probes"]
