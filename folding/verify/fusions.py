"""ONNX Runtime graph optimisations that this project's sessions turn off.

``ALWAYS_DISABLED_OPTIMIZERS``: ONNX Runtime (1.31) moves a zero ``Pad`` into a
following ``MaxPool``'s own padding, which pads with -inf, not 0: Keras's
``ZeroPadding2D -> MaxPooling2D`` (ResNetV2's stem) then answers wrongly for
negative inputs. Every session made here disables that fusion.

``UNFOLDED_DISABLED_OPTIMIZERS``: ``unfolded.onnx`` exists to be compared with
the folded model, so it must be run without the fusions that merge each
BatchNormalization (or the Mul/Add it became) into the Conv or MatMul before it
at session load: otherwise the "unfolded" session is a folded one.

Pass either tuple as ``disabled_optimizers`` to ``onnxruntime.InferenceSession``.
"""

ALWAYS_DISABLED_OPTIMIZERS: tuple[str, ...] = ("Pad_Fusion",)

UNFOLDED_DISABLED_OPTIMIZERS: tuple[str, ...] = (
    *ALWAYS_DISABLED_OPTIMIZERS,
    "ConvBNFusion",
    "ConvMulFusion",
    "ConvAddFusion",
    "MatMulScaleFusion",
    "MatMul_BatchNormalization_Fusion",
)
