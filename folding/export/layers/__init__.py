"""The ONNX form of each Keras layer the direct exporter knows.

One function per layer kind, ``handler(emitter, call)``: it reads the call's
input tensors from the emitter (in the layout it wants), writes nodes, and
records the call's outputs. Keras semantics are followed exactly, including
the less obvious ones (TensorFlow's "same" padding puts the odd pixel at the
end; average pooling with "same" padding does not count the padding).
Importing the package registers every handler.
"""

from folding.export.layers import (  # noqa: F401 - each module registers its handlers
    activations,
    casting,
    indexing,
    joining,
    linear,
    merging,
    normalization,
    operations,
    patches,
    pooling,
    products,
    rearranging,
    reductions,
    shape,
    spatial,
)
from folding.export.layers.base import emit

__all__ = ["emit"]
