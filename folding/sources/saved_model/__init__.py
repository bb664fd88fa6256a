"""A TensorFlow SavedModel in: ``saved_model.pb`` read and refused when its graphs reach
outside (``scan``, over the object graph ``objects`` and the function bodies ``graph``,
judged by the op lists in ``ops``), then its serving signature converted to ONNX
(``source``)."""
