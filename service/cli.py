"""The ``foldserve`` command: ``fold`` a model, ``serve`` the model repository, and the
client commands (``upload``, ``jobs``, ``list``, ``predict``, ``compare``, ``delete``,
``download``) that talk to a running server."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from typing import TYPE_CHECKING

from folding.cli import add_fold_command, run
from service._compat import Subparsers
from service.client import add_client_commands

if TYPE_CHECKING:
    from service.settings import Settings


def add_serve_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the model repository over HTTP",
        description="Every option can also be set as FOLDSERVE_<OPTION> in the environment.",
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080)")
    parser.add_argument(
        "--grpc-port", type=int, help="Open Inference gRPC port (default 8081; 0: no gRPC)"
    )
    parser.add_argument("--models-dir", help="model repository (default ./models)")
    parser.add_argument("--workers", type=int, help="server processes (default 1)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], help="default auto")
    ray = parser.add_argument_group("Ray Serve (--engine ray; see docs/deploy.md)")
    ray.add_argument(
        "--engine",
        choices=["uvicorn", "ray"],
        help="uvicorn: server processes on this machine (default); ray: Ray Serve replicas",
    )
    ray.add_argument("--replicas", type=int, help="replicas (default 1)")
    ray.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (default 1)")
    ray.add_argument("--max-replicas", type=int, help="set to autoscale up to this many")
    ray.add_argument(
        "--target-ongoing-requests", type=float, help="autoscaling target per replica (default 2)"
    )
    ray.add_argument("--replica-cpus", type=float, help="CPUs per replica (default 1)")
    ray.add_argument("--ray-address", help="Ray cluster to deploy to (default: start a local Ray)")
    parser.set_defaults(handler=run_serve)


SERVE_OPTIONS = (
    "host",
    "port",
    "grpc_port",
    "models_dir",
    "workers",
    "device",
    "engine",
    "replicas",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "replica_cpus",
    "ray_address",
)


def run_serve(args: argparse.Namespace) -> int:
    for option in SERVE_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            os.environ[f"FOLDSERVE_{option.upper()}"] = str(value)
    import uvicorn
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        return usage_error(f"invalid setting: {error.errors()[0]['msg']}")
    if settings.engine == "ray":
        return run_on_ray(settings)
    taken = taken_port(settings)
    if taken is not None:
        return usage_error(taken)
    from service.http_api.connections import ConnectionLimits, GuardedHttpProtocol

    limits = ConnectionLimits(  # the settings of the same names
        **{
            field.name: getattr(settings, field.name)
            for field in dataclasses.fields(ConnectionLimits)
        }
    )
    uvicorn.run(
        "service.http_api.app:create_app_from_environment",
        factory=True,
        http=functools.partial(GuardedHttpProtocol, limits=limits),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return 0


def taken_port(settings: Settings) -> str | None:
    """Why the HTTP or gRPC port cannot be listened on, naming the option that moves it
    (None when both are free). Several workers share their ports, so they are not checked."""
    import socket

    if settings.workers > 1:
        return None
    ports = [("HTTP", settings.port, "--port / FOLDSERVE_PORT")]
    if settings.grpc_port:
        ports.append(("gRPC", settings.grpc_port, "--grpc-port / FOLDSERVE_GRPC_PORT (0: no gRPC)"))
    for kind, port, option in ports:
        if not port:
            continue
        try:
            infos = socket.getaddrinfo(settings.host, port, type=socket.SOCK_STREAM)
            family, kind_, proto, _, address = infos[0]
            with socket.socket(family, kind_, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as error:
            return (
                f"cannot listen for {kind} on {settings.host}:{port} ({error.strerror}); "
                f"choose another port with {option}"
            )
    return None


def run_on_ray(settings: Settings) -> int:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return usage_error(
            "--engine ray needs Ray Serve: pip install 'foldserve[ray]' "
            "(or 'make ray-venv', then .venv-ray/bin/foldserve)"
        )
    from service.engines import ray as ray_app

    try:
        return ray_app.run(settings)
    except ValueError as error:
        return usage_error(str(error))


def usage_error(message: str) -> int:
    """``message`` as ``foldserve: error: ...`` on stderr; exit status 2, as argparse's."""
    print(f"foldserve: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr and exit status 1 (130 on Ctrl-C), never a
    traceback: the commands' own errors are worded by them, anything else by its kind."""
    try:
        return run(argv, [add_fold_command, add_serve_command, add_client_commands], __doc__)
    except KeyboardInterrupt:
        print("foldserve: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # ``foldserve list | head``: the reader has gone; say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:
        print(f"foldserve: error: {one_line(error)}", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """An unexpected error as one line: an OSError as the system says it (``[Errno 17]
    File exists: 'out'``), anything else as its type and first line."""
    text = str(error).strip().splitlines()
    if isinstance(error, OSError):
        return text[0] if text else type(error).__name__
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
