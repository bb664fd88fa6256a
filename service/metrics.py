"""Prometheus metrics of one server process, in a registry of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.runtime.batching import Observer

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
FOLD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "foldserve_requests",
            "Requests by model, endpoint, method and status: HTTP ones, and gRPC calls "
            "(method GRPC, status the gRPC code's name).",
            ["model", "endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "foldserve_request_duration_seconds",
            "Request latency (HTTP and gRPC) by model and endpoint.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fold_jobs = Counter(
            "foldserve_fold_jobs",
            "Fold jobs by outcome (ok, refused, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.fold_duration = Histogram(
            "foldserve_fold_duration_seconds",
            "Duration of fold jobs (load, fold, export, verify).",
            buckets=FOLD_BUCKETS,
            registry=self.registry,
        )
        self.loaded_models = Gauge(
            "foldserve_loaded_models",
            "Model versions loaded and ready to serve.",
            registry=self.registry,
        )

        self.batch_size = self._per_model(
            "foldserve_batch_size",
            "Rows per ONNX Runtime session run.",
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self.queue_duration = self._per_model(
            "foldserve_queue_duration_seconds",
            "Time a request waited in the dynamic batcher's queue.",
        )
        self.compute_duration = self._per_model(
            "foldserve_compute_duration_seconds", "Time of one ONNX Runtime session run."
        )

    def _per_model(
        self, name: str, documentation: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        """A histogram labelled by model."""
        return Histogram(name, documentation, ["model"], buckets=buckets, registry=self.registry)

    def observer(self, model: str) -> ModelObserver:
        return ModelObserver(
            self.batch_size.labels(model),
            self.queue_duration.labels(model),
            self.compute_duration.labels(model),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelObserver(Observer):
    """An executor's observations, into one model's labelled histograms."""

    def __init__(self, batch_size: Any, queue_duration: Any, compute_duration: Any) -> None:
        self._batch_size = batch_size
        self._queue_duration = queue_duration
        self._compute_duration = compute_duration

    def batch(self, rows: int) -> None:
        self._batch_size.observe(rows)

    def queued(self, seconds: float) -> None:
        self._queue_duration.observe(seconds)

    def computed(self, seconds: float) -> None:
        self._compute_duration.observe(seconds)
