"""Folding on a Keras model: the model traced to a flat list of layer calls (``graph``),
each BatchNormalization folded into the layer before or after it (``fold``, by the rules in
``rules``, into a ``result.FoldResult``; a BN's numbers as ``batch_norm`` reads them), and the
moving statistics re-measured when asked (``recalibrate``)."""
