"""A Keras model file in: checked without Keras and loaded safely (``loading``, in reported
steps for ``.keras`` archives: ``steps``), Keras 2 / tf_keras configs translated (``legacy``),
the operator's custom-object modules (``custom_objects``), and the source the pipeline folds
(``source``)."""
