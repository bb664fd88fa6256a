"""What a rule returns: the fold, checked and ready, as a function that makes it.

A rule checks everything first and raises ``NotFoldable`` with the reason, so a
fold across several nodes (a BN after a Concat of convolutions) happens whole or
not at all; the plan then edits the graph and returns the nodes that took the BN.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

Plan = Callable[[], list[onnx.NodeProto]]
