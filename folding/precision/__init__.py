"""Reduced-precision variants of a folded ``model.onnx``: float16 and int8, each verified
against the float32 model, with cross-layer equalization first when asked (``equalize``).

``variants`` makes them (``float16``, ``int8``), ``judge`` judges and times one
(``latency``), ``summary`` words them for people; ``names`` holds the precisions
offered and their file names.
"""

from folding.precision.names import PRECISIONS, parse_precisions, variant_file
from folding.precision.summary import describe, variants_summary
from folding.precision.variants import add_variants, make_variants

__all__ = [
    "PRECISIONS",
    "add_variants",
    "describe",
    "make_variants",
    "parse_precisions",
    "variant_file",
    "variants_summary",
]
