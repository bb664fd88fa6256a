"""Folding on the ONNX graph: an ``onnx.ModelProto`` in; a folded copy and one report
entry per BatchNormalization out. No TensorFlow, no ONNX Runtime.

What flows through it (``fold.fold_onnx``)::

    ModelProto --copy--> OnnxGraph (graph.py: producers and use lists;
                                    constants.py: constant sub-expressions;
                                    local functions holding a BN inlined first)
        -> channels_first.py     undo channels-last Transpose shuffles (tf2onnx)
        -> no_ops.py             drop ``x + 0``, ``x * 1`` (MobileOne's sum of branches)
        -> decomposed.py         find the Mul + Add pairs exporters turn BNs into
        -> per BN-like node (affine.py: BatchNormalization or a per-channel
           Mul/Add/Sub as ``x * scale + shift``), the first rule that fits:
             backward  into_conv.py       Conv / ConvTranspose before it
                       into_gemm.py       Gemm before it
                       into_matmul.py     MatMul [+ Add bias] before it
                       through_layout.py  MatMul/Gemm -> Reshape/Flatten/Transpose
                       through_concat.py  Concat of single-consumer convolutions
                       through_add.py     a sum of convolutions (and their input)
             forward   into_following.py  Conv / Gemm / MatMul after it
             parallel  into_sibling.py    Conv of its own input it is added to
                                          (RepVGG's identity branch; BNs only)
        -> OnnxGraph.commit      nodes back in topological order; nodes, initializers
                                 and value_info nothing needs are dropped
    -> OnnxFoldResult(model, folded entries, not_folded entries with reasons)

Every rule checks first (raising ``NotFoldable`` with the reason the report shows)
and returns a plan that edits the graph; every formula is in ``folding.math``.
"""

from folding.onnx_graph.fold import OnnxFoldResult, fold_onnx

__all__ = ["OnnxFoldResult", "fold_onnx"]
