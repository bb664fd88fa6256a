"""ONNX Runtime graph fusions that fold BatchNormalization arithmetic on their own.

``unfolded.onnx`` exists to be compared with the folded model, so it must be run
with these fusions disabled: otherwise ONNX Runtime merges each BatchNormalization
(or the Mul/Add it became) into the Conv before it at session load, and the
"unfolded" session is a folded one. Pass the tuple as ``disabled_optimizers`` to
``onnxruntime.InferenceSession``.
"""

UNFOLDED_DISABLED_OPTIMIZERS: tuple[str, ...] = (
    "ConvBNFusion",
    "ConvMulFusion",
    "ConvAddFusion",
    "MatMulScaleFusion",
)
