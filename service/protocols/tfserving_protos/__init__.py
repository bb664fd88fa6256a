"""TensorFlow Serving's gRPC messages and services, without TensorFlow.

The ``.proto`` files here are the subset of ``tensorflow_serving/apis`` and TensorFlow's
framework protos that foldserve serves, with the same packages, names and field numbers, so
that the official ``tensorflow-serving-api`` stubs talk to it unchanged. They are compiled
(``compile.py``) into a FileDescriptorSet that is loaded here into a descriptor pool of its
own: a process that also imports TensorFlow's generated modules (which fill the default pool
with the full definitions of the same names) works all the same.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FileDescriptorSet

from service.protocols.tfserving_protos.descriptors import FILE_DESCRIPTOR_SET

__all__ = ["FILE_DESCRIPTOR_SET", "POOL", "FileDescriptorSet"]

POOL = descriptor_pool.DescriptorPool()
for _file in FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
    POOL.Add(_file)


def _message(full_name: str) -> type:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def _messages(package: str, *names: str) -> list[type]:
    return [_message(f"{package}.{name}") for name in names]


TensorProto, TensorShapeProto, TensorInfo, SignatureDef = _messages(
    "tensorflow", "TensorProto", "TensorShapeProto", "TensorInfo", "SignatureDef"
)
(
    ModelSpec,
    PredictRequest,
    PredictResponse,
    SignatureDefMap,
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelVersionStatus,
) = _messages(
    "tensorflow.serving",
    "ModelSpec",
    "PredictRequest",
    "PredictResponse",
    "SignatureDefMap",
    "GetModelMetadataRequest",
    "GetModelMetadataResponse",
    "GetModelStatusRequest",
    "GetModelStatusResponse",
    "ModelVersionStatus",
)

DATA_TYPES = POOL.FindEnumTypeByName("tensorflow.DataType")
ERROR_CODES = POOL.FindEnumTypeByName("tensorflow.error.Code")
PREDICTION_SERVICE = POOL.FindServiceByName("tensorflow.serving.PredictionService")
MODEL_SERVICE = POOL.FindServiceByName("tensorflow.serving.ModelService")


def message_class(descriptor) -> type:
    return message_factory.GetMessageClass(descriptor)
