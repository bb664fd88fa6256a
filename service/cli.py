"""The ``foldserve`` command: ``fold`` a model, ``serve`` the model repository, and the
client commands (``upload``, ``jobs``, ``list``, ``predict``, ``compare``, ``delete``,
``download``) that talk to a running server."""

from __future__ import annotations

import argparse
import os
import sys

from folding.cli import add_fold_command, run
from service.client import add_client_commands


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    for option in ("host", "port", "grpc_port", "models_dir", "workers", "device"):
        value = getattr(args, option)
        if value is not None:
            os.environ[f"FOLDSERVE_{option.upper()}"] = str(value)
    import uvicorn
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as error:
        print(f"foldserve: error: invalid setting: {error.errors()[0]['msg']}", file=sys.stderr)
        return 2
    uvicorn.run(
        "service.app:create_app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(argv, [add_fold_command, add_serve_command, add_client_commands], __doc__)


if __name__ == "__main__":
    sys.exit(main())
