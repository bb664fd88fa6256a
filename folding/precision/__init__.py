"""Reduced-precision variants of a folded ``model.onnx``: float16 and int8, each verified
against the float32 model (``variants``), with cross-layer equalization first when asked
(``equalize``)."""
