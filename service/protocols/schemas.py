"""What the typed protocol schemas share: their base class, the error body, and the way
a schema becomes part of the OpenAPI document.

The schemas (``schemas_tfserving``, ``schemas_v2``, ``schemas_models``) describe the
bodies the server sends and accepts; the routes attach them (``response_model=``,
``openapi_extra``) and ``service.http_api.openapi`` builds the document from them. They
are documentation and test oracles: no request on the prediction path is validated
through them, and no response is serialised through them (routes return their JSON
themselves), so the wire format is what the protocol modules write.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"
"""Where a schema's nested models live in the OpenAPI document."""


def _finish(schema: dict[str, Any], model: type[Schema]) -> None:
    """A field left out of a body is documented as optional, not as ``default: null``
    (which Swagger UI would prefill and send as the text "null"); a schema with an
    ``example`` shows it (what Swagger UI prefills)."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]
    if model.example is not None:
        schema["example"] = model.example


class Schema(BaseModel):
    """Base of every protocol schema. Keys a schema does not name are allowed (JSON
    Schema's default): the protocols allow them, and no body is validated here."""

    model_config = ConfigDict(json_schema_extra=_finish)
    example: ClassVar[Any] = None


class Error(Schema):
    """Every error: ``{"error": $string}``, plus what the error carries (a failed
    upload's ``report``, a job's ``status_code``)."""

    error: str = Field(description="what was wrong, by name")


def request_body(model: type[BaseModel], media_type: str = "application/json") -> dict[str, Any]:
    """An ``openapi_extra`` request body holding ``model``'s schema inline (what Swagger
    UI prefills is its ``example``); its nested models are components, added to the
    document by ``components``."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def components(models: list[type[BaseModel]]) -> dict[str, Any]:
    """The component schemas ``models`` refer to (and the models themselves)."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template=REF_TEMPLATE
    )
    return definitions.get("$defs", {})
