"""The client commands' arguments (``--url``, ``--token``, ``--json``, ``--timeout`` on
each) and the wrapper that turns a ``run_*`` function into an ``args -> exit code`` handler
with one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from service._compat import Subparsers
from service.client import commands
from service.client.http import (
    DEFAULT_URL,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    Client,
    ClientError,
    default_url,
)
from service.client.output import print_json


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=default_url(),
        help="the server (FOLDSERVE_URL; else http://FOLDSERVE_HOST:FOLDSERVE_PORT; "
        f"default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FOLDSERVE_TOKEN"),
        help="bearer token (FOLDSERVE_TOKEN); uploads and deletes need the admin token",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )


def _rows_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="model name")
    parser.add_argument("--version", help="version (default: the latest)")
    parser.add_argument("--data", help='rows as JSON, e.g. "[[0.1, 0.2, ...]]"')
    parser.add_argument("--file", type=Path, help="rows from a .json, .npy or .npz file")


def _upload_arguments(upload: argparse.ArgumentParser) -> None:
    upload.add_argument(
        "model",
        type=Path,
        help=f"the model: {commands.ACCEPTED}; a directory is packed as .tar.gz and sent",
    )
    upload.add_argument("--name", help="model name (default: from the file name)")
    upload.add_argument("--probe", type=Path, help=".npy/.npz verification inputs")
    upload.add_argument(
        "--recalibrate", type=Path, help=".npy/.npz to re-estimate the BN statistics on first"
    )
    upload.add_argument(
        "--precision", help="also make and serve variants: fp16, int8 or fp16,int8 (<name>-int8)"
    )
    upload.add_argument(
        "--calibration", type=Path, help=".npy/.npz rows that calibrate and judge the variants"
    )
    upload.add_argument(
        "--equalize", action="store_true", help="cross-layer equalization before int8"
    )
    upload.add_argument("--detach", action="store_true", help="print the job id and return at once")


def _jobs_arguments(jobs: argparse.ArgumentParser) -> None:
    jobs.add_argument("job_id", nargs="?", help="a job id (default: list the jobs)")
    jobs.add_argument("--watch", action="store_true", help="follow the job to its end")
    jobs.add_argument("--cancel", action="store_true", help="cancel the job")
    jobs.add_argument("--limit", type=int, default=50, help="jobs to list (default 50)")


def _compare_arguments(compare: argparse.ArgumentParser) -> None:
    _rows_arguments(compare)
    compare.add_argument(
        "--reference",
        choices=["source", "keras"],
        help="also run the version's source model (its Keras file, SavedModel or ONNX file; "
        "'keras' is the same)",
    )
    compare.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")


def _delete_arguments(delete: argparse.ArgumentParser) -> None:
    delete.add_argument("name", help="model name")
    delete.add_argument("--version", help="only this version ('latest': the highest)")


def _download_arguments(download: argparse.ArgumentParser) -> None:
    download.add_argument("name", help="model name")
    download.add_argument("artifact", choices=commands.ARTIFACTS, help="what to download")
    download.add_argument("--version", help="version (default: the latest)")
    download.add_argument("-o", "--output", type=Path, help="file to write")


UPLOAD_EXIT_CODES = (
    "Exit codes: 0 served, 1 refused or fold failed, 2 usage, 3 not found, "
    "4 token missing or wrong, 5 server unreachable or failing, 6 cancelled."
)

COMMANDS: tuple[tuple[str, str, Any, Any], ...] = (
    (
        "upload",
        "upload a model to a server, which folds it; shows the fold's progress",
        commands.run_upload,
        _upload_arguments,
    ),
    ("jobs", "list fold jobs, or show, watch or cancel one", commands.run_jobs, _jobs_arguments),
    ("list", "the server's models and versions", commands.run_list, None),
    ("predict", "predict with a served model", commands.run_predict, _rows_arguments),
    (
        "compare",
        "run the folded and unfolded model on the same rows and compare",
        commands.run_compare,
        _compare_arguments,
    ),
    ("delete", "delete a model, or one version of it", commands.run_delete, _delete_arguments),
    (
        "download",
        "download a version's folded model, unfolded model or report",
        commands.run_download,
        _download_arguments,
    ),
)
"""Each client command: its name, help, ``run_*`` function and its own arguments (the
common ones, ``--url`` and the rest, come after them)."""


def add_client_commands(subparsers: Subparsers) -> None:
    for name, summary, handler, arguments in COMMANDS:
        description = UPLOAD_EXIT_CODES if name == "upload" else None
        parser = subparsers.add_parser(name, help=summary, description=description)
        if arguments is not None:
            arguments(parser)
        _common(parser)
        parser.set_defaults(handler=client_command(handler))


def _fail(args: argparse.Namespace, error: ClientError) -> int:
    """Report ``error`` on stderr (and as JSON on stdout with --json); its exit code."""
    if getattr(args, "json", False):
        print_json(error.body if isinstance(error.body, dict) else {"error": str(error)})
    print(f"foldserve: error: {error}", file=sys.stderr)
    return error.code


def client_command(handler: Any) -> Any:
    """Wrap a ``run_*`` function into an ``args -> exit code`` handler with one-line errors."""

    def run(args: argparse.Namespace) -> int:
        try:
            client = Client(args.url, args.token, args.timeout)
            return handler(client, args)
        except ClientError as error:
            return _fail(args, error)
        except (LookupError, TypeError, ValueError, AttributeError):
            # a 2xx whose JSON is not what a foldserve server sends
            message = f"{args.url} gave an answer foldserve does not understand"
            return _fail(args, ClientError(message, EXIT_UNAVAILABLE))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED

    return run
