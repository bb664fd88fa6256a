"""The foldserve HTTP server: TF Serving REST and Open Inference (V2) on ONNX Runtime."""

__version__ = "0.1.0"
