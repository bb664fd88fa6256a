"""The wire formats, without transport: TF Serving REST (``tfserving``), Open Inference V2
(``v2``), JSON and datatype codecs (``codecs``) and the tensor messages of both gRPC APIs
(``tfserving_tensors``, ``grpc_tensors``, ``tfserving_protos``); the typed REST bodies the
OpenAPI document is generated from (``schemas``, ``schemas_tfserving``, ``schemas_v2``,
``schemas_models``)."""
