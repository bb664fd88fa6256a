"""gRPC in and out: Open Inference V2 (``v2``), TF Serving's PredictionService and ModelService
(``tfserving``), and what both servicers share (``calls``)."""
