"""A folded Keras graph out as ONNX: the direct exporter (``direct`` and one writer per layer
in ``layers``), the general one (``tf2onnx_convert``), a layer the direct one cannot write
spliced in from the general one (``splice``), and the choice between them (``exporters``)."""
