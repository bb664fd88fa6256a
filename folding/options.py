"""How a model is folded and verified: one ``FoldOptions`` holding one ``VerifyOptions``.

Every default the command line, the fold worker and the server's settings use is
written here once; imports neither TensorFlow nor ONNX Runtime (the serving process
builds these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from folding.sources.keras.loading import ArchiveLimits

DEFAULT_EXPORT_RTOL = 1e-3
HALF_PRECISION_EXPORT_RTOL = 3e-2
"""The export tolerance of a model computing in float16/bfloat16 (mixed precision)."""
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class VerifyOptions:
    """How the folded model is judged (see ``folding.verify.verdict``).

    ``rtol``: the fold tolerance, relative to each output's scale; ``export_rtol``: the
    unfolded export's, against the reference (None: ``DEFAULT_EXPORT_RTOL``, or
    ``HALF_PRECISION_EXPORT_RTOL`` when the model computes in half precision);
    ``noise_factor``: tolerances rise to this many times the model's float32 noise (0:
    strict); ``samples``: probe rows, at most; ``probes``: a ``.npy``/``.npz`` of the
    user's rows, used instead of generated ones."""

    rtol: float = 1e-4
    export_rtol: float | None = None
    noise_factor: float = 10.0
    samples: int = 64
    probes: Path | None = None

    def export_limit(self, compute_dtype: str) -> float:
        """The export tolerance for a model computing in ``compute_dtype``."""
        if self.export_rtol is not None:
            return self.export_rtol
        return DEFAULT_EXPORT_RTOL if compute_dtype == "float32" else HALF_PRECISION_EXPORT_RTOL


@dataclass(frozen=True)
class FoldOptions:
    """How a model is opened, folded and exported, and how the result is verified.

    ``opset``: the ONNX opset written; ``exporter``: a Keras model's ("auto": the direct
    exporter, tf2onnx for a layer it cannot write; "tf2onnx": the general one throughout);
    ``recalibrate``: a ``.npy``/``.npz`` every BatchNormalization's statistics are
    re-estimated on before folding (Keras models only); ``signature``: a SavedModel's
    (None: ``DEFAULT_SIGNATURE``); ``custom_objects``: operator-trusted modules
    (comma-separated) registering Keras layers, imported before loading;
    ``archive_limits``: what an uploaded archive may hold (None: the defaults);
    ``scan``: False loads a SavedModel without its op scan (tests of the confinement
    behind it only)."""

    verify: VerifyOptions = field(default_factory=VerifyOptions)
    opset: int = 17
    exporter: str = "auto"
    recalibrate: Path | None = None
    signature: str | None = None
    custom_objects: str = ""
    archive_limits: ArchiveLimits | None = None
    scan: bool = True
