"""foldserve's own /v1 bodies as schemas: the model store (list, delete, upload form),
upload jobs and ``:compare``. The enumerations come from the code that accepts them
(job states from the job store, references from the dataplane, precisions from the
repository), so the document names every value the server takes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from service.core.compare import DEFAULT_COMPARE_REPEATS, MAX_COMPARE_REPEATS, REFERENCES
from service.core.repository import NAME_PATTERN, PRECISIONS
from service.jobs.store import STAGES, TERMINAL
from service.protocols.schemas import Schema
from service.protocols.schemas_tfserving import DEMO_ROW, PredictRequest

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
"""What a true/false form field accepts (any case; empty is false)."""
_PRECISION = f"({'|'.join(PRECISIONS)})"


class VersionEntry(Schema):
    version: int
    state: Literal["AVAILABLE", "LOADING", "UNAVAILABLE"]
    source: str | SkipJsonSchema[None] = Field(
        None, description="the stored source model's file (``:compare`` can run it)"
    )
    reason: str | SkipJsonSchema[None] = Field(
        None, description="why it is not served, or the stage its upload is in"
    )


class ModelEntry(Schema):
    name: str
    versions: list[VersionEntry]
    variant_of: str | SkipJsonSchema[None] = Field(
        None, description="a precision variant: the model it was made from"
    )
    precision: Literal[PRECISIONS] | SkipJsonSchema[None] = None  # type: ignore[valid-type]


class ModelList(Schema):
    """``{"models": [{"name", "versions": [{"version", "state", ...}]}]}``."""

    models: list[ModelEntry]


class Deleted(Schema):
    """``{"name": $string, "deleted_versions": [$number, ...]}``."""

    name: str
    deleted_versions: list[int]


class UploadForm(Schema):
    """The multipart/form-data fields of an upload (``POST /v1/models``)."""

    file: bytes = Field(
        description="the model: a .keras, .h5 or .onnx file, or a SavedModel as .zip or .tar.gz"
    )
    name: Annotated[str, Field(pattern=f"^{NAME_PATTERN.pattern}$")] | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra={"example": "my-model"},
        description="the model's name; by default, from the file name",
    )
    signature: str | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra={"example": "serving_default"},
        description="a SavedModel's signature to fold (default serving_default)",
    )
    probe: bytes | SkipJsonSchema[None] = Field(
        None, description=".npy or .npz of inputs to verify the fold on"
    )
    recalibrate: bytes | SkipJsonSchema[None] = Field(
        None,
        description=".npy or .npz every BatchNormalization is recalibrated on before folding",
    )
    precision: (
        Annotated[str, Field(pattern=f"^{_PRECISION}(,{_PRECISION})*$")] | SkipJsonSchema[None]
    ) = Field(
        None,
        json_schema_extra={"example": ",".join(PRECISIONS)},
        description="reduced-precision variants made beside the folded model, each served "
        f"as <name>-<precision>: comma-separated, of {', '.join(PRECISIONS)}",
    )
    calibration: bytes | SkipJsonSchema[None] = Field(
        None,
        description=".npy or .npz rows of the model's inputs that calibrate int8 and judge "
        "the precision variants (needs 'precision')",
    )
    equalize: Literal[(*TRUE_WORDS, *FALSE_WORDS)] | SkipJsonSchema[None] = Field(  # type: ignore[valid-type]
        None,
        description="true: cross-layer equalization of flagged Conv pairs before int8 "
        "(needs precision=int8)",
    )


class JobLinks(Schema):
    self: str
    events: str
    model: str


class Job(Schema):
    """An upload job, as ``/v1/jobs`` gives it."""

    id: str = Field(pattern="^[0-9a-f]{32}$")
    state: Literal[(*STAGES, *TERMINAL)]  # type: ignore[valid-type]
    name: str
    version: int
    filename: str
    progress: float | None = Field(description="0..1 within the stage")
    created_at: float = Field(description="unix seconds")
    started_at: float | None
    finished_at: float | None
    timings: dict[str, float] = Field(description="seconds spent in each finished stage")
    report: dict[str, Any] | None = Field(description="the fold report (report.json)")
    error: str | None
    status_code: int | None = Field(
        description="the HTTP status the synchronous upload would have failed with"
    )
    links: JobLinks


class JobList(Schema):
    """``{"jobs": [$job, ...]}``, newest first."""

    jobs: list[Job]


class Uploaded(Schema):
    """What an upload answers once its job is done (``?wait=true`` or ``Prefer: wait=N``)."""

    name: str
    version: int
    report: dict[str, Any]


class CompareRequest(PredictRequest):
    """A ``:predict`` body, plus how to compare."""

    example: ClassVar[Any] = {"instances": [DEMO_ROW], "repeats": DEFAULT_COMPARE_REPEATS}

    variants: bool = Field(
        False, description="also run each precision variant (fp16, int8) of the version"
    )
    reference: Literal[REFERENCES] | SkipJsonSchema[None] = Field(  # type: ignore[valid-type]
        None,
        description="also run the version's source model (Keras, SavedModel or ONNX) in the "
        "fold worker; 'keras' is the older name of 'source'",
    )
    repeats: int = Field(DEFAULT_COMPARE_REPEATS, ge=1, le=MAX_COMPARE_REPEATS)
    return_outputs: bool = True


class Verdict(Schema):
    passed: bool
    rtol: float
    compared: str


class CompareResponse(Schema):
    """``{"model_name", "model_version", "outputs": {<output>: {"folded", "unfolded",
    "max_abs_diff", ...}}, "verdict", "latency_ms", "latency"}``."""

    model_name: str
    model_version: str
    outputs: dict[str, dict[str, Any]]
    verdict: Verdict
    latency_ms: dict[str, float]
    latency: dict[str, Any]
