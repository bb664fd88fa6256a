"""TensorFlow Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Served on the gRPC port beside the Open Inference service, over the same DataPlane (so the
same registry, dynamic batcher, statistics, token and message size limit). From
tensorflow_serving/apis/prediction_service.proto and model_service.proto (the services as
``service/protocols/tfserving_protos/tensorflow_serving.proto`` declares them):
``PredictionService`` has Classify, Regress, Predict, MultiInference and GetModelMetadata,
``ModelService`` GetModelStatus and HandleReloadConfigRequest.

Predict, GetModelMetadata and GetModelStatus are served. Every model has one signature,
``serving_default``, a predict signature (``tensorflow/serving/predict``) of dense tensors:
Classify, Regress and MultiInference, which need classification or regression signatures
over ``tf.Example`` inputs, answer UNIMPLEMENTED saying so, as does
HandleReloadConfigRequest (the models directory is the configuration).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.core.dataplane import DataPlane
from service.errors import InvalidInput, NotReady, Unimplemented
from service.grpc_api.calls import Servicer
from service.protocols import tfserving_protos as protos
from service.protocols.tfserving import SIGNATURE, version_status
from service.protocols.tfserving_tensors import data_type, parse_inputs, shape_proto, to_proto
from service.runtime.sessions import TensorMeta
from service.settings import Settings

PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF = "signature_def"
ANY_PREFIX = "type.googleapis.com/"

NO_EXAMPLES = (
    "foldserve serves each model under one predict signature ('serving_default', method "
    "tensorflow/serving/predict) of dense tensors, not a {kind} signature over tf.Example "
    "inputs; call PredictionService.Predict (or POST /v1/models/<name>:predict)"
)


class TFServingService(Servicer):
    """The methods of both services; each parses its message, calls the DataPlane and
    builds the reply."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        super().__init__(settings)
        self.dataplane = dataplane

    # -- PredictionService --------------------------------------------------------

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle():
            if not self.dataplane.ready:
                raise NotReady("server is starting")
            model = self._model(request.model_spec)
            inputs = parse_inputs(request.inputs, model.inputs, self.settings.max_request_bytes)
            wanted = list(request.output_filter) or None
            outputs = await self.dataplane.infer(model, inputs, wanted)
            response = protos.PredictResponse()
            self._spec(response.model_spec, model)
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(to_proto(array))
            return response

        return await self.answer(context, handle)

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle():
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidInput(f"metadata_field is empty; the one served is '{SIGNATURE_DEF}'")
            unknown = [field for field in fields if field != SIGNATURE_DEF]
            if unknown:
                raise InvalidInput(
                    f"metadata field '{unknown[0]}' is not served; the one served is "
                    f"'{SIGNATURE_DEF}'"
                )
            model = self._model(request.model_spec)
            signatures = protos.SignatureDefMap()
            signature = signatures.signature_def[SIGNATURE]
            signature.method_name = PREDICT_METHOD
            _tensor_infos(signature.inputs, model.inputs)
            _tensor_infos(signature.outputs, model.outputs)
            response = protos.GetModelMetadataResponse()
            self._spec(response.model_spec, model)
            packed = response.metadata[SIGNATURE_DEF]
            packed.type_url = ANY_PREFIX + signatures.DESCRIPTOR.full_name
            packed.value = signatures.SerializeToString()
            return response

        return await self.answer(context, handle)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unimplemented(context, NO_EXAMPLES.format(kind="classification"))

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unimplemented(context, NO_EXAMPLES.format(kind="regression"))

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._unimplemented(
            context, NO_EXAMPLES.format(kind="classification or regression")
        )

    # -- ModelService -------------------------------------------------------------

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle():
            spec = request.model_spec
            self._check_spec(spec)
            version = str(spec.version.value) if spec.HasField("version") else None
            entries = await self.dataplane.catalog.version_status(spec.name, version)
            response = protos.GetModelStatusResponse()
            states = protos.ModelVersionStatus.DESCRIPTOR.enum_types_by_name["State"]
            for status in map(version_status, entries):
                entry = response.model_version_status.add(version=int(status["version"]))
                entry.state = states.values_by_name[status["state"]].number
                code = protos.ERROR_CODES.values_by_name.get(status["status"]["error_code"])
                entry.status.error_code = code.number if code is not None else 2  # UNKNOWN
                entry.status.error_message = status["status"]["error_message"]
            return response

        return await self.answer(context, handle)

    async def HandleReloadConfigRequest(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self._unimplemented(
            context,
            "foldserve has no model config to reload: it serves the versions in its models "
            "directory, which it watches; add one there or upload it (foldserve upload)",
        )

    # -- shared -------------------------------------------------------------------

    async def _unimplemented(self, context: grpc.aio.ServicerContext, reason: str) -> Any:
        async def handle():
            raise Unimplemented(reason)

        return await self.answer(context, handle)

    def _check_spec(self, spec: Any) -> None:
        if not spec.name:
            raise InvalidInput("model_spec.name is empty; name the model")
        if spec.WhichOneof("version_choice") == "version_label":
            raise InvalidInput(
                f"model_spec.version_label '{spec.version_label}': foldserve has no version "
                "labels; give model_spec.version, or neither for the latest version"
            )
        if spec.signature_name not in ("", SIGNATURE):
            raise InvalidInput(
                f"unknown signature_name '{spec.signature_name}'; the only one is '{SIGNATURE}'"
            )

    def _model(self, spec: Any) -> Any:
        self._check_spec(spec)
        version = spec.version.value if spec.HasField("version") else None
        return self.dataplane.get(spec.name, version)

    @staticmethod
    def _spec(message: Any, model: Any) -> None:
        message.name = model.name
        message.version.value = model.version
        message.signature_name = SIGNATURE


def _tensor_infos(infos: Any, metas: list[TensorMeta]) -> None:
    for meta in metas:
        info = infos[meta.name]
        info.name = meta.name
        info.dtype = data_type(meta.dtype)
        shape_proto(meta.shape, info.tensor_shape)


Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def generic_handlers(service: TFServingService) -> list[grpc.GenericRpcHandler]:
    """The two services' handlers, their messages read and written by ``tfserving_protos``."""
    handlers = []
    for descriptor in (protos.PREDICTION_SERVICE, protos.MODEL_SERVICE):
        methods = {}
        for method in descriptor.methods:
            request = protos.message_class(method.input_type)
            reply = protos.message_class(method.output_type)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                getattr(service, method.name),
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )
        handlers.append(grpc.method_handlers_generic_handler(descriptor.full_name, methods))
    return handlers
