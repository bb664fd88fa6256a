"""foldserve's TF Serving protos against the official ones of tensorflow-serving-api."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from tensorflow_serving.apis import (  # noqa: F401  (fill the default pool)
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2,
    prediction_service_pb2,
    regression_pb2,
)

from service.protocols import tfserving_protos
from service.protocols.tfserving_protos import compile as protos_compile

OURS = [
    file.name
    for file in tfserving_protos.FileDescriptorSet.FromString(
        tfserving_protos.FILE_DESCRIPTOR_SET
    ).file
    if not file.name.startswith("google/")
]


def test_checked_in_descriptors_are_the_compiled_protos():
    assert protos_compile.render(protos_compile.compile_descriptor_set()) == (
        protos_compile.TARGET.read_text()
    )


def _messages(descriptor):
    yield descriptor
    for nested in descriptor.nested_types:
        yield from _messages(nested)


def test_every_field_and_method_has_the_official_number_and_type():
    official = descriptor_pool.Default()
    checked = 0
    for file_name in OURS:
        ours = tfserving_protos.POOL.FindFileByName(file_name)
        for top in ours.message_types_by_name.values():
            for message in _messages(top):
                theirs = official.FindMessageTypeByName(message.full_name)
                for field in message.fields:
                    twin = theirs.fields_by_name[field.name]
                    assert (field.number, field.type, field.label) == (
                        twin.number,
                        twin.type,
                        twin.label,
                    ), field.full_name
                    if field.message_type is not None:
                        assert field.message_type.full_name == twin.message_type.full_name
                    checked += 1
        for enum in ours.enum_types_by_name.values():
            theirs = official.FindEnumTypeByName(enum.full_name)
            for value in enum.values:
                assert theirs.values_by_name[value.name].number == value.number
        for service in ours.services_by_name.values():
            theirs = official.FindServiceByName(service.full_name)
            assert sorted(theirs.methods_by_name) == sorted(service.methods_by_name)
            for method in service.methods:
                twin = theirs.methods_by_name[method.name]
                assert method.input_type.full_name == twin.input_type.full_name
                assert method.output_type.full_name == twin.output_type.full_name
    assert checked > 40
