"""The OpenAPI document as the service really behaves, and /docs with no internet.

FastAPI's generated document misses what this service does by hand: request
bodies read from the raw request (predict, infer, compare, upload), the two
prediction endpoints served by ``service.http_api.fastpath``, and the error responses
(every error is ``{"error": "..."}`` with a status of ``ERROR_STATUSES``; FastAPI's
``422 HTTPValidationError`` is never sent). ``describe`` patches all of that in.
``install_docs`` serves Swagger UI (5.x, which reads OpenAPI 3.1) from the files the
``fastapi-offline`` package ships, not a CDN.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong, by name"}},
    "additionalProperties": True,
}
ERROR_STATUSES = {
    "400": "invalid request: the message names the field and value",
    "401": "a token is set on the server and this request lacks it",
    "404": "no such model, version, job or path",
    "409": "the job has already finished, or this server cannot fold (no TensorFlow)",
    "408": "the request line, headers or body did not arrive in time (connection closed)",
    "413": "request body over the size limit",
    "422": "the upload could not be folded, exported or verified (the report is included)",
    "429": "an upload while too many jobs are unfinished (see Retry-After)",
    "431": "request headers too large or too many (connection closed)",
    "503": "the server is starting or shutting down, or the version is not loaded",
    "507": "an upload that staging or the disk has no room for (names what)",
}

# The V2 inference request, as the KServe Open Inference Protocol gives it:
#   {"id": $string #optional, "parameters": $parameters #optional,
#    "inputs": [{"name": $string, "shape": [$number, ...], "datatype": $string,
#                "parameters": $parameters #optional, "data": $tensor_data}, ...],
#    "outputs": [{"name": $string, "parameters": $parameters #optional}, ...] #optional}
V2_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {
                        "type": "string",
                        "enum": [
                            "BOOL",
                            "UINT8",
                            "UINT16",
                            "UINT32",
                            "UINT64",
                            "INT8",
                            "INT16",
                            "INT32",
                            "INT64",
                            "FP16",
                            "FP32",
                            "FP64",
                        ],
                    },
                    "parameters": {"type": "object"},
                    "data": {"description": "flat or nested list of numbers"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
# TensorFlow Serving's predict request (REST API): row ("instances") or columnar
# ("inputs") format, each a list of rows or an object of named inputs.
TF_PREDICT_REQUEST = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string", "default": "serving_default"},
        "instances": {"type": "array", "description": "one entry per row"},
        "inputs": {"description": "a tensor, or an object of named tensors"},
    },
    # what Swagger UI prefills: one row of the demo model (digits: 64 pixels)
    "example": {"instances": [[0.0] * 64]},
}
COMPARE_REQUEST = {
    "type": "object",
    "properties": {
        **TF_PREDICT_REQUEST["properties"],
        "variants": {
            "type": "boolean",
            "default": False,
            "description": "also run each precision variant (fp16, int8) of the version",
        },
        "reference": {
            "type": "string",
            "enum": ["source", "keras"],
            "description": "also run the version's source model (Keras, SavedModel or ONNX)",
        },
        "repeats": {"type": "integer", "minimum": 1, "maximum": 200, "default": 10},
        "return_outputs": {"type": "boolean", "default": True},
    },
    "example": {"instances": [[0.0] * 64], "repeats": 10},
}
UPLOAD_REQUEST = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": ".keras or .h5 model"},
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$",
            "example": "my-model",
            "description": "the model's name; by default, from the file name",
        },
        "probe": {
            "type": "string",
            "format": "binary",
            "description": ".npy or .npz of inputs to verify the fold on",
        },
    },
}
UPLOAD_REQUEST["properties"]["signature"] = {
    "type": "string",
    "example": "serving_default",
    "description": "a SavedModel's signature to fold (default serving_default)",
}
UPLOAD_REQUEST["properties"]["recalibrate"] = {
    "type": "string",
    "format": "binary",
    "description": ".npy or .npz every BatchNormalization is recalibrated on before folding",
}
UPLOAD_REQUEST["properties"]["precision"] = {
    "type": "string",
    "pattern": "^(fp16|int8)(,(fp16|int8))?$",
    "example": "fp16,int8",
    "description": "reduced-precision variants made beside the folded model and served as "
    "<name>-<precision>",
}
UPLOAD_REQUEST["properties"]["calibration"] = {
    "type": "string",
    "format": "binary",
    "description": ".npy or .npz rows of the model's inputs that calibrate int8 and judge "
    "the precision variants (needs 'precision')",
}
UPLOAD_REQUEST["properties"]["equalize"] = {
    "type": "boolean",
    "description": "cross-layer equalization of flagged Conv pairs before int8",
}
UPLOAD_REQUEST["properties"]["file"]["description"] = (
    "the model: a .keras, .h5 or .onnx file, or a SavedModel as .zip or .tar.gz"
)
JOB = {
    "type": "object",
    "required": ["id", "state", "name", "version", "links"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "state": {
            "type": "string",
            "enum": [
                "queued",
                "loading",
                "folding",
                "exporting",
                "verifying",
                "quantizing",
                "committing",
                "done",
                "failed",
                "cancelled",
            ],
        },
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "filename": {"type": "string"},
        "progress": {"type": ["number", "null"], "description": "0..1 within the stage"},
        "created_at": {"type": "number", "description": "unix seconds"},
        "started_at": {"type": ["number", "null"]},
        "finished_at": {"type": ["number", "null"]},
        "timings": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "seconds spent in each finished stage",
        },
        "report": {"type": ["object", "null"], "description": "the fold report (report.json)"},
        "error": {"type": ["string", "null"]},
        "status_code": {
            "type": ["integer", "null"],
            "description": "the HTTP status the synchronous upload would have failed with",
        },
        "links": {
            "type": "object",
            "properties": {
                "self": {"type": "string"},
                "events": {"type": "string"},
                "model": {"type": "string"},
            },
        },
    },
}
UPLOADED = {
    "type": "object",
    "required": ["name", "version", "report"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "report": {"type": "object"},
    },
}
JOB_REF = {"$ref": "#/components/schemas/Job"}
RESPONSES = {
    ("post", "/v1/models"): {
        "202": {
            "description": "the upload job, queued (or still running after Prefer: wait=N)",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "the job"}},
            "content": {"application/json": {"schema": JOB_REF}},
        },
        "201": {
            "description": "with ?wait=true or Prefer: wait=N: the job finished in time",
            "content": {"application/json": {"schema": UPLOADED}},
        },
    },
    ("get", "/v1/jobs"): {
        "200": {
            "description": "the jobs, newest first",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"jobs": {"type": "array", "items": JOB_REF}},
                    }
                }
            },
        }
    },
    ("get", "/v1/jobs/{job_id}"): {
        "200": {"description": "the job", "content": {"application/json": {"schema": JOB_REF}}}
    },
    ("delete", "/v1/jobs/{job_id}"): {
        "200": {
            "description": "the job, now cancelled",
            "content": {"application/json": {"schema": JOB_REF}},
        }
    },
    ("get", "/v1/jobs/{job_id}/events"): {
        "200": {
            "description": "server-sent events: 'event: job' with the job JSON at once and on "
            "every change, ': keep-alive' every 15 s; ends after done, failed or cancelled",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    ("get", "/v1/models/{name}/versions/{version}/report"): {
        "200": {
            "description": "report.json",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    **{
        ("get", f"/v1/models/{{name}}/versions/{{version}}/{file_name}"): {
            "200": {
                "description": f"{file_name}, as an attachment <name>-<version>-{file_name}",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        }
        for file_name in ("model.onnx", "unfolded.onnx")
    },
}
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    "description": "wait=N (RFC 7240): wait up to N seconds for the job before answering",
}
BODIES = {
    ("post", "/v1/models"): ("multipart/form-data", UPLOAD_REQUEST),
    ("post", "/v1/models/{name}:compare"): ("application/json", COMPARE_REQUEST),
    ("post", "/v1/models/{name}/versions/{version}:compare"): (
        "application/json",
        COMPARE_REQUEST,
    ),
}
FAST_PATHS = {
    "/v1/models/{name}:predict": ("TensorFlow Serving REST", "Predict", TF_PREDICT_REQUEST),
    "/v1/models/{name}/versions/{version}:predict": (
        "TensorFlow Serving REST",
        "Predict with one version",
        TF_PREDICT_REQUEST,
    ),
    "/v2/models/{name}/infer": ("Open Inference Protocol (V2)", "Infer", V2_REQUEST),
    "/v2/models/{name}/versions/{version}/infer": (
        "Open Inference Protocol (V2)",
        "Infer with one version",
        V2_REQUEST,
    ),
}


def describe(app: FastAPI) -> dict[str, Any]:
    """The document, built once and cached on the app (FastAPI's convention)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR
    components["Job"] = JOB
    paths = schema.setdefault("paths", {})
    for path, (tag, summary, body) in FAST_PATHS.items():
        parameters = [_path_parameter("name")]
        if "{version}" in path:
            parameters.append(_path_parameter("version"))
        paths[path] = {
            "post": {
                "tags": [tag],
                "summary": summary,
                "operationId": summary.lower().replace(" ", "_"),
                "parameters": parameters,
                "requestBody": _body("application/json", body),
                "responses": {"200": {"description": "the outputs"}},
            }
        }
    for path, operations in paths.items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] in PATH_EXAMPLES:
                    parameter.setdefault("example", PATH_EXAMPLES[parameter["name"]])
            if (method, path) in BODIES:
                operation["requestBody"] = _body(*BODIES[(method, path)])
            responses = operation.setdefault("responses", {})
            if (method, path) in RESPONSES:
                if (method, path) == ("post", "/v1/models"):
                    responses.pop("200", None)
                    operation.setdefault("parameters", []).append(PREFER)
                responses.update(RESPONSES[(method, path)])
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                )
    app.openapi_schema = schema
    return schema


PATH_EXAMPLES = {"name": "digits", "version": "1"}
"""What Swagger UI prefills in the path: the demo model."""


def _path_parameter(name: str) -> dict[str, Any]:
    parameter = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if name in PATH_EXAMPLES:
        parameter["example"] = PATH_EXAMPLES[name]
    return parameter


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media_type: {"schema": schema}}}


def install_docs(app: FastAPI) -> None:
    """/docs from files shipped in a package (no CDN); the OpenAPI document from
    ``describe``. Call with ``FastAPI(docs_url=None, redoc_url=None)``."""
    from importlib.resources import files

    app.openapi = lambda: describe(app)  # type: ignore[method-assign]
    assets = str(files("fastapi_offline") / "static")
    app.mount("/docs/assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )
