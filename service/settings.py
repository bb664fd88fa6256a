"""All configuration, read from ``FOLDSERVE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from folding.options import VerifyOptions


class Settings(BaseSettings):
    """The server's settings; every field is ``FOLDSERVE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FOLDSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 in a container)."""

    port: int = Field(8080, ge=0, le=65535)
    """TCP port."""

    grpc_port: int = Field(8081, ge=0, le=65535)
    """TCP port of the Open Inference (V2) gRPC service, served by the same process
    (0: no gRPC)."""

    models_dir: Path = Path("models")
    """The model repository: ``<models_dir>/<name>/<version>/``."""

    workers: int = Field(1, ge=1, le=64)
    """Server processes; they share the model repository on disk."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    """``auto`` uses CUDA when ONNX Runtime can, else the CPU; ``cuda`` refuses to start
    without CUDA; ``cpu`` never tries it."""

    intra_op_threads: int = Field(2, ge=0)
    """ONNX Runtime threads inside one operator (0: ONNX Runtime's default). Measured on
    2 cores (docs/benchmarks.md): 2 beats 1 for both the MLP and the conv model."""

    inter_op_threads: int = Field(1, ge=0)
    """ONNX Runtime threads across operators (0: ONNX Runtime's default)."""

    batching: bool = True
    """Dynamic batching by default; a model's ``config.json`` may override it."""

    max_batch_size: int = Field(64, ge=1)
    """Most rows merged into one session run by the dynamic batcher."""

    max_queue_delay_us: int = Field(0, ge=0)
    """Microseconds a request may wait for others to join its batch (Triton's
    ``max_queue_delay_microseconds``); 0 batches only what is already queued."""

    instances: int = Field(1, ge=1)
    """Session runs of one model version that may execute at once."""

    run_timeout_s: float = Field(30.0, gt=0)
    """Seconds one session run may take; a run still going then is stopped (ONNX
    Runtime's terminate flag) and its requests answered 504 (gRPC DEADLINE_EXCEEDED)
    naming the model."""

    model_memory_limit_mb: int = Field(4096, ge=0)
    """Memory one model version's session may hold (MB; 0: no limit): constants,
    including those ONNX Runtime computes ahead from the graph, estimated before the
    session is built and measured (resident memory growth) while it is. An upload over
    it is refused with 422 naming the figure; a stored version over it is not served
    (UNAVAILABLE, with the figure as the reason)."""

    thread_spinning: bool = False
    """Let ONNX Runtime's idle pool threads spin. Off by default: spinning threads burn
    the core the HTTP side needs (MLP: -20% req/s); on, a conv model answers single
    requests faster (0.38 vs 0.65 ms median at concurrency 1, docs/benchmarks.md)."""

    admin_token: str | None = None
    """When set, upload and delete need ``Authorization: Bearer <admin_token>``."""

    api_token: str | None = None
    """When set, every model endpoint needs ``Authorization: Bearer <api_token>``
    (the admin token is accepted too)."""

    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body accepted on prediction endpoints (413 beyond)."""

    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    """Largest model upload accepted (413 beyond)."""

    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request line and headers together (431 beyond, and the connection is
    closed)."""

    max_headers: int = Field(100, ge=1)
    """Most header fields in one request (431 beyond)."""

    header_timeout: float = Field(10.0, gt=0)
    """Seconds a client has to send a request's line and headers, from the moment its
    connection opens (first request) or the request's first byte (408 beyond)."""

    body_timeout: float = Field(20.0, gt=0)
    """Seconds a client has to send a request body, extended by one second for every
    ``body_min_rate`` bytes it sends (408 beyond): a body that trickles in is cut off."""

    body_min_rate: int = Field(1024, ge=1)
    """Bytes per second of request body that extend ``body_timeout`` by one second."""

    max_queued_jobs: int = Field(16, ge=1)
    """Most upload jobs not yet finished (queued or folding, in every server process of
    the repository, counting uploads still being received); another upload is answered
    429 with ``Retry-After``."""

    max_staging_bytes: int = Field(8 * 1024**3, ge=1024)
    """Most bytes that uploads being folded may hold in ``<models_dir>/.staging`` (their
    model files and what the fold writes), counting uploads still being received by
    their declared size; an upload beyond it is answered 507 with ``Retry-After``."""

    metrics_public: bool = False
    """With ``api_token`` set, ``/metrics`` needs it too, unless this is true (for a
    Prometheus scraper that cannot send a token)."""

    large_body_bytes: int = Field(1024 * 1024, ge=0)
    """Prediction bodies (and responses) larger than this are decoded (encoded) in a
    separate process, so that parsing them never holds the event loop that answers
    every other request; smaller ones are parsed in place or in a thread (0: never
    in a separate process)."""

    fold_rtol: float = Field(VerifyOptions.rtol, gt=0)
    """Allowed error of a folded upload, relative to each output's scale."""

    max_archive_bytes: int = Field(4 * 1024**3, ge=1024)
    """Largest total an uploaded ``.keras`` archive, or ``.zip`` / ``.tar.gz`` of a
    SavedModel, may inflate to (checked before anything is extracted, and again while
    it is; 400 beyond)."""

    max_archive_entries: int = Field(10_000, ge=1)
    """Most entries an uploaded ``.keras``, ``.zip`` or ``.tar.gz`` archive may hold
    (400 beyond)."""

    custom_objects: str = ""
    """Comma-separated Python modules the fold worker imports before loading a Keras
    model: operator-trusted code that registers custom layers
    (``keras.saving.register_keras_serializable``). An upload can never name one."""

    fold_export_rtol: float | None = Field(None, gt=0)
    """Allowed difference between an upload's unfolded ONNX export and the Keras model,
    relative to each output's scale (default: 1e-3, or 3e-2 for float16 compute)."""

    fold_noise_factor: float = Field(VerifyOptions.noise_factor, ge=0)
    """Tolerances are raised to this many times the model's own float32 noise; 0 makes
    them strict (see docs/folding.md)."""

    fold_samples: int = Field(VerifyOptions.samples, ge=1)
    """Probe rows used to verify a folded upload, at most (large networks use fewer)."""

    fold_memory_limit_mb: int = Field(8192, ge=0)
    """Resident memory the fold worker may use (MB; 0: no cap). A job that goes over it
    ends with a 422 naming the limit; the server and its models are unaffected."""

    fold_file_limit_mb: int = Field(4096, ge=0)
    """Largest file the fold worker may write (MB; 0: no cap). A job whose model.onnx
    or another file would go over it ends with a 507 naming the limit."""

    require_confinement: bool = False
    """Refuse to start unless the kernel can confine the fold worker for files and TCP
    (Landlock ABI 4 or later; see docs/security.md). Off, the server starts anyway and
    says in its log and in ``GET /v2`` (``confinement``) what it could not confine."""

    unsafe_skip_scan: bool = False
    """For tests only: uploaded SavedModels are loaded without their op scan, so that a
    test can show what the confinement alone stops. Never set it on a server."""

    fold_timeout: float = Field(600.0, gt=0)
    """Seconds a fold job may take before it is abandoned."""

    job_retention: float = Field(7 * 24 * 3600.0, ge=0)
    """Seconds a finished upload job stays listed in ``/v1/jobs`` before it is pruned."""

    job_history: int = Field(200, ge=1)
    """Most finished upload jobs kept (the oldest beyond this are pruned)."""

    job_stale_after: float = Field(30.0, gt=0)
    """Seconds without a heartbeat after which an unfinished upload job is taken as
    interrupted (its server stopped or crashed) and marked failed."""

    prewarm_folder: bool = True
    """Start the fold worker process (and import TensorFlow in it) at start-up, so the
    first upload does not wait for it."""

    poll_interval: float = Field(0.5, gt=0)
    """Seconds between scans of the repository for versions added or removed by others."""

    shutdown_timeout: float = Field(30.0, ge=0)
    """Seconds in-flight requests get to finish after SIGTERM (new connections are
    refused and readiness is 503 meanwhile)."""

    log_level: str = "info"
    """Log level of the server."""

    # -- Ray Serve (``foldserve serve --engine ray``; see service/engines/ray.py) ------------

    engine: Literal["uvicorn", "ray"] = "uvicorn"
    """``uvicorn``: this machine's server processes (``workers``); ``ray``: replicas of a
    Ray Serve deployment behind Ray's HTTP proxy. Ray replicas serve but do not fold:
    uploads are refused with 409 naming where folding runs."""

    replicas: int = Field(1, ge=1)
    """Ray Serve replicas (the initial count when autoscaling)."""

    min_replicas: int = Field(1, ge=0)
    """Fewest Ray Serve replicas when autoscaling."""

    max_replicas: int | None = Field(None, ge=1)
    """Set: Ray Serve autoscales between ``min_replicas`` and this on ongoing requests."""

    target_ongoing_requests: float = Field(2.0, gt=0)
    """Ongoing requests per replica the Ray Serve autoscaler aims for."""

    max_ongoing_requests: int = Field(64, ge=1)
    """Requests one Ray Serve replica takes at once; more wait in Ray's proxy. Above
    1, the dynamic batcher can merge concurrent requests inside a replica."""

    replica_cpus: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each replica (fractions allowed)."""

    ray_address: str | None = None
    """Ray cluster to deploy to (``auto``: the one ``ray start`` runs here; ``ray://...``);
    unset, ``--engine ray`` starts a local Ray of its own and stops it on exit."""
