"""Prometheus metrics of one server process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "HTTP requests by model, endpoint and status code.",
            ["model", "endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "foldserve_request_duration_seconds",
            "HTTP request latency by model and endpoint.",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
