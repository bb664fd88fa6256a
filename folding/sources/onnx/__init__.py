"""An ONNX file in: the model and its bytes (``model``), IR versions newer than ONNX Runtime
reads lowered (``ir``), external data found and refused or read from beside the file
(``external``), and the source the pipeline folds on its graph (``source``)."""
