"""Does the folded model answer like the original? Probe inputs (``probes``), the ONNX Runtime
settings both sides run with (``fusions``), and the verdict with its attribution of any
difference to folding or to exporting (``verdict``)."""
