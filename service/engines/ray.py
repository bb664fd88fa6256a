"""Ray Serve as the serving engine: the same app in replicas that Ray Serve starts and scales.

Each replica runs ``create_app(settings)`` whole (the TF Serving and V2 REST endpoints, the
dynamic batcher, /metrics of that replica) behind Ray Serve's HTTP proxy, and loads from the
one model repository, which every replica polls for versions added or removed. Replicas
serve, they never fold: an upload is refused with 409 naming where folding runs (a server
with the default engine on the same repository, or ``foldserve fold``).

Two ways to run it:

- ``foldserve serve --engine ray --replicas 2`` (``run``): a local Ray of its own, or the
  cluster named by ``--ray-address``;
- ``serve run service.engines.ray:build models_dir=/models replicas=2`` or a Serve config /
  KubeRay ``RayService`` with ``import_path: service.engines.ray:build`` (``build``): the
  arguments are settings fields, ``FOLDSERVE_*`` in the environment fills in the rest.

Nothing here builds an app at import time; Ray itself is imported only when asked for.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from service.settings import Settings

if TYPE_CHECKING:
    from ray.serve import Application

logger = logging.getLogger("foldserve.ray")

APP_NAME = "foldserve"
DEPLOYMENT_NAME = "FoldServe"
REPLICA_HEADER = "foldserve-replica"
"""Response header naming the replica that answered (Ray's replica id)."""
TIMING_HEADER = "server-timing"
"""Response header with the replica's own timing of the request (milliseconds):
``app;dur=<from the app being called to its response head>, receive;dur=<of that, waiting
for the request body>``. Serve's replica fetches the body from the proxy only when the app
asks for it, so ``receive`` is that round trip; what Serve adds outside the app is the
end-to-end latency minus ``app`` (``bench/ray_serve.py`` prints the split)."""

SERVE_REQUEST_PATH = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
"""Ray Serve settings (read from the environment when Ray starts) that shorten each
request's path, a subset of Ray's ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: the proxy talks to
the replicas over Serve's gRPC data plane instead of Ray actor calls (the request, the
replica's fetch of its body and the streamed response each cost an actor call otherwise),
the replica runs the app on its own event loop rather than handing every request to a
second loop in another thread (the app never runs a model on its loop:
``service.runtime.batching``), the proxy's router likewise, and request-path log lines are
written in batches. Each is only a default: a value already in the environment wins
(docs/performance.md)."""


TIMING = TIMING_HEADER.encode()


class ReplicaHeader:
    """ASGI middleware: every HTTP response says which replica answered it and how long
    the app took over it (``TIMING_HEADER``)."""

    def __init__(self, app: Any, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica_id.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        waited = 0.0

        async def timed_receive() -> dict[str, Any]:
            nonlocal waited
            asked = time.perf_counter()
            message = await receive()
            waited += time.perf_counter() - asked
            return message

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                timing = f"app;dur={took:.3f}, receive;dur={waited * 1000:.3f}".encode()
                message["headers"] = [*message.get("headers", []), self.header, (TIMING, timing)]
            await send(message)

        await self.app(scope, timed_receive, send_with_header)


def replica_settings(settings: Settings) -> Settings:
    """What each replica runs with: the Ray engine (no folding), no gRPC port of its own
    (replicas share nodes; Ray's proxy is the only listener), the repository as an
    absolute path (replicas do not start in the driver's directory)."""
    return settings.model_copy(
        update={
            "engine": "ray",
            "grpc_port": 0,
            "prewarm_folder": False,
            "models_dir": settings.models_dir.expanduser().resolve(),
        }
    )


def deployment_options(settings: Settings) -> dict[str, Any]:
    """``serve.deployment`` options: a fixed replica count, or autoscaling on ongoing
    requests when ``max_replicas`` is set."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.replica_cpus},
        "logging_config": serve_logging(settings),
    }
    if settings.max_replicas is None:
        options["num_replicas"] = settings.replicas
        return options
    if settings.min_replicas > settings.max_replicas:
        raise ValueError(
            f"min_replicas {settings.min_replicas} is above max_replicas {settings.max_replicas}"
        )
    initial = min(max(settings.replicas, settings.min_replicas), settings.max_replicas)
    options["autoscaling_config"] = {
        "min_replicas": settings.min_replicas,
        "initial_replicas": initial,
        "max_replicas": settings.max_replicas,
        "target_ongoing_requests": settings.target_ongoing_requests,
    }
    return options


def serve_logging(settings: Settings) -> dict[str, Any]:
    """Ray Serve's logging for the proxy and the replicas: its per-request access log
    (a line written and flushed by the proxy and again by the replica for every request)
    only at ``log_level`` debug; the app logs as everywhere else."""
    return {
        "log_level": settings.log_level.upper(),
        "enable_access_log": settings.log_level.lower() == "debug",
    }


def application(settings: Settings) -> Application:
    """The Ray Serve application: one deployment whose replicas each run the whole app."""
    from ray import serve

    replica = replica_settings(settings)

    def build_replica_app() -> Any:
        # Runs in each replica, which builds its own app, dataplane and sessions.
        from service.http_api.app import create_app

        logging.basicConfig(level=replica.log_level.upper())
        app = create_app(replica)
        app.add_middleware(ReplicaHeader, serve.get_replica_context().replica_id.unique_id)
        return app

    @serve.ingress(build_replica_app)
    class FoldServe:
        """One replica of foldserve: the FastAPI app of ``service.http_api.app``, lifespan and all
        (models are loaded before Ray routes the replica its first request)."""

    return serve.deployment(FoldServe, **deployment_options(settings)).bind()


def build(args: dict[str, Any]) -> Application:
    """The application builder of ``serve run service.engines.ray:build key=value ...`` and of
    Serve configs: each key is a settings field (``models_dir``, ``replicas``,
    ``max_replicas``, ...), an unknown key is refused by name."""
    unknown = sorted(set(args) - set(Settings.model_fields))
    if unknown:
        raise ValueError(
            f"unknown foldserve setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(Settings.model_fields))}"
        )
    return application(Settings(**args))


def run(settings: Settings) -> int:
    """``foldserve serve --engine ray``: deploy, then wait for SIGINT/SIGTERM and tear down."""
    for name, value in SERVE_REQUEST_PATH.items():  # before Ray starts its processes
        os.environ.setdefault(name, value)
    import ray
    from ray import serve

    if settings.ray_address:
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(
            http_options={"host": settings.host, "port": settings.port},
            logging_config=serve_logging(settings),
        )
        serve.run(application(settings), name=APP_NAME, route_prefix="/", blocking=False)
        scaling = (
            f"{settings.replicas} replica(s)"
            if settings.max_replicas is None
            else f"{settings.min_replicas}..{settings.max_replicas} replicas (autoscaling)"
        )
        print(
            f"foldserve on Ray Serve: http://{settings.host}:{settings.port} with {scaling}, "
            f"models from {replica_settings(settings).models_dir}",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
