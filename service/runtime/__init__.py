"""ONNX Runtime and what sits in front of it: sessions and providers (``sessions``), the
dynamic-batching executor (``batching``), a session's memory cost (``cost``) and per-version
statistics (``stats``)."""
