"""Where a model comes from: a Keras file (``.keras``, legacy ``.h5``), an ONNX file or a
TensorFlow SavedModel (a folder, or an uploaded ``.zip``/``.tar.gz``), each read and checked
before anything in it runs. A source yields the model in memory plus what it is judged against."""
