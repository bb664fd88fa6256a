"""The client half of the ``foldserve`` command: talk to a running server over HTTP.

``foldserve upload | jobs | list | predict | compare | delete | download``, each with
``--url`` (``FOLDSERVE_URL``), ``--token`` (``FOLDSERVE_TOKEN``) and ``--json``. Tables and
the upload's stage progress are drawn with rich; ``--json`` prints the server's answer
as it came, for scripts. Exit codes (``EXIT_*`` below) say what went wrong without
reading the text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
"""The server refused the request (a 4xx other than those below), or the fold job failed."""
EXIT_USAGE = 2
"""Bad arguments or an unreadable local file (argparse uses 2 as well)."""
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
"""401 or 403: a token is missing or wrong."""
EXIT_UNAVAILABLE = 5
"""The server could not be reached, timed out, answered 5xx, or is not ready."""
EXIT_CANCELLED = 6
"""The fold job was cancelled."""
EXIT_INTERRUPTED = 130

STAGES = ("queued", "loading", "folding", "exporting", "verifying", "quantizing", "committing")
TERMINAL = ("done", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """A failure to report on one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body


def exit_code_for(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (401, 403):
        return EXIT_AUTH
    if status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


class Client:
    """A thin wrapper over httpx that turns every failure into a ClientError."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        import httpx

        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer of a 2xx, else a ClientError carrying the server's error."""
        with self.transport():
            response = self.http.request(method, path, **kwargs)
        return self.decode(response)

    def decode(self, response: Any) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None and response.status_code != 204:
                raise ClientError(
                    f"{self.url} answered {response.status_code} with something that is not "
                    "JSON: is it a foldserve server?",
                    EXIT_UNAVAILABLE,
                )
            return body
        message = body.get("error") if isinstance(body, dict) else None
        message = message or f"{response.status_code} {response.reason_phrase}"
        raise ClientError(message, exit_code_for(response.status_code), body)

    @contextmanager
    def stream(self, path: str) -> Iterator[Any]:
        with self.transport(), self.http.stream("GET", path, timeout=None) as response:
            if not response.is_success:
                response.read()
                self.decode(response)
            yield response

    @contextmanager
    def transport(self) -> Iterator[None]:
        try:
            yield
        except self._httpx.TimeoutException:
            raise ClientError(f"{self.url} did not answer in time", EXIT_UNAVAILABLE) from None
        except self._httpx.TransportError as error:
            raise ClientError(f"cannot reach {self.url}: {error}", EXIT_UNAVAILABLE) from None


# -- output --------------------------------------------------------------------------


def _console(stderr: bool = False) -> Any:
    """A terminal's own width; piped output wide enough that tables keep every column."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=200)
    return console


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _console().print(table)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


# -- reading local data ----------------------------------------------------------------


def load_rows(data: str | None, path: Path | None) -> Any:
    """Rows for ``instances``: JSON text, or a .json / .npy / .npz file (one input)."""
    if (data is None) == (path is None):
        raise ClientError("give the rows either as --data JSON or as --file PATH", EXIT_USAGE)
    if data is not None:
        try:
            return json.loads(data)
        except json.JSONDecodeError as error:
            raise ClientError(f"--data is not JSON: {error}", EXIT_USAGE) from None
    assert path is not None
    try:
        if path.suffix.lower() in (".npy", ".npz"):
            import numpy as np

            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                return {key: loaded[key].tolist() for key in loaded.files}
            return loaded.tolist()
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ClientError(f"cannot read {path}: {error}", EXIT_USAGE) from None


JSON_HEADERS = {"content-type": "application/json"}


def json_content(body: Any) -> bytes:
    """A request body as JSON; non-finite numbers as ``NaN`` / ``Infinity`` / ``-Infinity``,
    which TF Serving and foldserve read (httpx's ``json=`` refuses them)."""
    return json.dumps(body, allow_nan=True, separators=(",", ":")).encode()


def request_body(rows: Any) -> dict[str, Any]:
    """A list is the row format; an object of named columns (an .npz) the columnar one."""
    if isinstance(rows, dict) and "instances" not in rows and "inputs" not in rows:
        return {"inputs": rows}
    if isinstance(rows, dict):
        return rows
    return {"instances": rows}


def _version_path(name: str, version: str | None) -> str:
    return f"/v1/models/{name}" + (f"/versions/{version}" if version else "")


# -- commands --------------------------------------------------------------------------


def pack_saved_model(directory: Path, into: Path) -> Path:
    """``directory`` (a SavedModel) as ``into/<name>.tar.gz``, the directory at its top."""
    import tarfile

    if not (directory / "saved_model.pb").is_file():
        raise ClientError(
            f"{directory} is a directory without saved_model.pb; upload {ACCEPTED}", EXIT_USAGE
        )
    archive = into / f"{directory.resolve().name}.tar.gz"
    try:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(directory, arcname=directory.resolve().name)
    except OSError as error:
        raise ClientError(f"cannot pack {directory}: {error}", EXIT_USAGE) from None
    return archive


def run_upload(client: Client, args: argparse.Namespace) -> int:
    if args.model.is_dir():
        import tempfile

        with tempfile.TemporaryDirectory(prefix="foldserve-upload-") as scratch:
            args.model = pack_saved_model(args.model, Path(scratch))
            return _upload(client, args)
    return _upload(client, args)


def _upload(client: Client, args: argparse.Namespace) -> int:
    files: dict[str, Any] = {}
    try:
        files["file"] = (args.model.name, args.model.open("rb"))
        for field in ("probe", "calibration", "recalibrate"):
            path = getattr(args, field)
            if path is not None:
                files[field] = (path.name, path.open("rb"))
    except OSError as error:
        raise ClientError(f"cannot read {error.filename}: {error.strerror}", EXIT_USAGE) from None
    data = {"name": args.name} if args.name else {}
    if args.precision:
        data["precision"] = args.precision
    if args.equalize:
        data["equalize"] = "true"
    try:
        with client.transport():
            response = client.http.post("/v1/models", files=files, data=data, timeout=None)
    finally:
        for _, handle in files.values():
            handle.close()
    body = client.decode(response)
    if response.status_code == 201:  # a server that folds synchronously
        return _finished_upload(args, {"state": "done", **body})
    job = body
    if args.detach:
        _print_json(job) if args.json else print(job["id"])
        return EXIT_OK
    try:
        job = watch(client, job, show_progress=not args.json)
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; job {job['id']} goes on on the server "
            f"('foldserve jobs {job['id']} --cancel' cancels it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _finished_upload(args, job)


def _finished_upload(args: argparse.Namespace, job: dict[str, Any]) -> int:
    if args.json:
        _print_json(job)
    elif job["state"] == "done":
        report = job.get("report") or {}
        print(f"{job['name']} version {job['version']} is served")
        if report:
            _print_report_summary(report)
    elif job["state"] == "cancelled":
        print(f"job {job.get('id')} was cancelled; nothing was stored", file=sys.stderr)
    else:
        print(f"foldserve: error: {job.get('error')}", file=sys.stderr)
    return {"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(job["state"], EXIT_REFUSED)


def _print_report_summary(report: dict[str, Any]) -> None:
    rows = [
        [entry["bn"], f"folded {entry['direction']}", entry["into"]] for entry in report["folded"]
    ]
    rows += [[e["bn"], "kept", e["reason"]] for e in report["not_folded"]]
    rows += [[e["layer"], "removed", e["class_name"]] for e in report.get("removed", [])]
    if rows:
        _table(None, ["layer", "action", "into / reason"], rows)
    verification = report.get("verification")
    if verification:
        print(
            f"verification {verification['verdict']}: fold error "
            f"{verification['fold_error']:.3g}, export error {verification['export_error']:.3g} "
            f"(relative to each output's scale)"
        )
    diagnostics = report.get("diagnostics_summary") or {}
    if diagnostics.get("flagged"):
        print(
            f"diagnostics: {diagnostics['flagged']} of {diagnostics['checked']} "
            "BatchNormalizations flagged"
        )
        for bn, flags in diagnostics.get("flags", {}).items():
            for flag in flags:
                print(f"  {bn}: {flag}")
    elif diagnostics:
        print(f"diagnostics: none of {diagnostics.get('checked', 0)} BatchNormalizations flagged")
    if report.get("variants"):
        from folding.precision import describe

        for variant in report["variants"]:
            print(describe(variant))


def watch(client: Client, job: dict[str, Any], show_progress: bool) -> dict[str, Any]:
    """Follow a job to its end: its event stream, or polling when the stream breaks off."""
    if job["state"] in TERMINAL:
        return job
    with _Progress(show_progress) as progress:
        progress.update(job)
        try:
            for event in _events(client, job["links"]["events"]):
                job = event
                progress.update(job)
                if job["state"] in TERMINAL:
                    return job
        except ClientError as error:
            if error.code in (EXIT_AUTH, EXIT_NOT_FOUND):
                raise
        while job["state"] not in TERMINAL:  # the stream ended early: poll instead
            time.sleep(0.5)
            job = client.request("GET", job["links"]["self"])
            progress.update(job)
    return job


def _events(client: Client, path: str) -> Iterator[dict[str, Any]]:
    """The ``data:`` of each ``event: job`` in a server-sent event stream."""
    with client.stream(path) as response:
        event, data = "message", []
        for line in response.iter_lines():
            if line == "":
                if data and event == "job":
                    yield json.loads("\n".join(data))
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)


class _Progress:
    """A progress bar through the fold stages on a terminal, one line per stage elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.console = _console(stderr=True)
        self.bar: Any = None
        self.last_state: str | None = None

    def __enter__(self) -> _Progress:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                TextColumn("{task.fields[step]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("queued", total=len(STAGES), step="")
        return self

    def update(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        state = job["state"]
        if self.bar is not None:
            index = STAGES.index(state) if state in STAGES else len(STAGES)
            within = job.get("progress") or 0.0
            completed = len(STAGES) if state == "done" else index + min(max(within, 0.0), 1.0)
            step = f"{min(index + 1, len(STAGES))}/{len(STAGES)}"
            self.bar.update(self.task, completed=completed, description=state, step=step)
        elif state != self.last_state:
            print(f"{job.get('name')} v{job.get('version')}: {state}", file=sys.stderr)
        self.last_state = state

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_jobs(client: Client, args: argparse.Namespace) -> int:
    if args.job_id is None:
        if args.cancel or args.watch:
            raise ClientError("--cancel and --watch need a job id", EXIT_USAGE)
        jobs = client.request("GET", "/v1/jobs", params={"limit": args.limit})["jobs"]
        if args.json:
            _print_json({"jobs": jobs})
            return EXIT_OK
        rows = [
            [
                job["id"][:12],
                job["name"],
                job["version"],
                job["state"],
                _when(job.get("created_at")),
                _number(_duration(job)),
                job.get("error") or "",
            ]
            for job in jobs
        ]
        _table(None, ["job", "model", "version", "state", "created", "seconds", "error"], rows)
        return EXIT_OK
    path = f"/v1/jobs/{args.job_id}"
    if args.cancel:
        job = client.request("DELETE", path)
    else:
        job = client.request("GET", path)
        if args.watch:
            try:
                job = watch(client, job, show_progress=not args.json)
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED
    if args.json:
        _print_json(job)
    else:
        rows = [["state", job["state"]], ["model", f"{job['name']} v{job['version']}"]]
        rows += [["file", job.get("filename")], ["created", _when(job.get("created_at"))]]
        rows += [[f"{stage} s", _number(seconds)] for stage, seconds in job["timings"].items()]
        if job.get("error"):
            rows.append(["error", job["error"]])
        _table(f"job {job['id']}", ["", ""], rows)
    if job["state"] == "failed":
        return EXIT_REFUSED
    return EXIT_CANCELLED if job["state"] == "cancelled" and not args.cancel else EXIT_OK


def _when(timestamp: float | None) -> str:
    return (
        "" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    )


def _duration(job: dict[str, Any]) -> float | None:
    if job.get("started_at") is None:
        return None
    return (job.get("finished_at") or time.time()) - job["started_at"]


def run_list(client: Client, args: argparse.Namespace) -> int:
    models = client.request("GET", "/v1/models")["models"]
    if args.json:
        _print_json({"models": models})
        return EXIT_OK
    rows = [
        [model["name"], entry["version"], entry["state"], entry.get("reason", "")]
        for model in models
        for entry in model["versions"]
    ]
    _table(None, ["model", "version", "state", "reason"], rows)
    return EXIT_OK


def run_predict(client: Client, args: argparse.Namespace) -> int:
    body = request_body(load_rows(args.data, args.file))
    path = _version_path(args.name, args.version) + ":predict"
    answer = client.request("POST", path, content=json_content(body), headers=JSON_HEADERS)
    if args.json:
        _print_json(answer)
    else:
        print(json.dumps(answer.get("predictions", answer.get("outputs"))))
    return EXIT_OK


def run_compare(client: Client, args: argparse.Namespace) -> int:
    body = request_body(load_rows(args.data, args.file))
    body.update({"repeats": args.repeats, "return_outputs": args.json})
    if args.reference:
        body["reference"] = args.reference
    path = _version_path(args.name, args.version) + ":compare"
    answer = client.request("POST", path, content=json_content(body), headers=JSON_HEADERS)
    if args.json:
        _print_json(answer)
    else:
        verdict = answer["verdict"]
        rows = []
        for output, entry in answer["outputs"].items():
            rows.append(
                [
                    output,
                    _number(entry["max_abs_diff"]),
                    _number(entry["max_rel_diff"]),
                    _number(entry.get("argmax_agreement")),
                    _number(entry.get("source_max_rel_diff", entry.get("keras_max_rel_diff"))),
                    "yes" if entry["passed"] else "NO",
                ]
            )
        _table(
            f"{answer['model_name']} v{answer['model_version']}: {verdict['compared']}",
            ["output", "max |diff|", "max rel diff", "argmax agree", "vs source", "passed"],
            rows,
        )
        latency = answer["latency_ms"]
        print(
            "median latency: "
            + ", ".join(f"{variant} {ms:.3f} ms" for variant, ms in latency.items())
            + f" ({answer['latency']['repeats']} interleaved rounds)"
        )
        ratio, spread = (
            answer["latency"].get("unfolded_over_folded"),
            answer["latency"].get("unfolded_over_folded_iqr"),
        )
        if ratio is not None:
            quartiles = f" (interquartile {spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
            print(f"folded is {ratio:.2f}x as fast as unfolded{quartiles}")
        print(f"verdict: {'passed' if verdict['passed'] else 'FAILED'} at rtol {verdict['rtol']:g}")
    return EXIT_OK if answer["verdict"]["passed"] else EXIT_REFUSED


def run_delete(client: Client, args: argparse.Namespace) -> int:
    answer = client.request("DELETE", _version_path(args.name, args.version))
    if args.json:
        _print_json(answer)
    else:
        versions = ", ".join(str(version) for version in answer["deleted_versions"])
        print(f"deleted {answer['name']} version(s) {versions}")
    return EXIT_OK


ACCEPTED = (
    "a .keras, .h5 or .onnx file, a .zip or .tar.gz of a SavedModel, or a SavedModel directory"
)

ARTIFACTS = ("model.onnx", "unfolded.onnx", "report")


def run_download(client: Client, args: argparse.Namespace) -> int:
    path = f"/v1/models/{args.name}/versions/{args.version or 'latest'}/{args.artifact}"
    with client.transport():
        response = client.http.get(path)
    if not response.is_success:
        client.decode(response)
    output = args.output or Path(
        f"{args.name}-{args.version or 'latest'}-"
        + ("report.json" if args.artifact == "report" else args.artifact)
    )
    try:
        output.write_bytes(response.content)
    except OSError as error:
        raise ClientError(f"cannot write {output}: {error.strerror}", EXIT_USAGE) from None
    if args.json:
        _print_json({"path": str(output), "bytes": len(response.content)})
    else:
        print(f"wrote {output} ({len(response.content):,} bytes)")
    return EXIT_OK


# -- the command line ------------------------------------------------------------------


def default_url(environ: Any = os.environ) -> str:
    """FOLDSERVE_URL; else the server that ``foldserve serve`` starts with the same
    FOLDSERVE_HOST / FOLDSERVE_PORT (a wildcard host is reached on 127.0.0.1)."""
    if environ.get("FOLDSERVE_URL"):
        return environ["FOLDSERVE_URL"]
    host = environ.get("FOLDSERVE_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("FOLDSERVE_PORT") or "8080"
    return f"http://{host}:{port}"


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


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    upload = subparsers.add_parser(
        "upload",
        help="upload a model to a server, which folds it; shows the fold's progress",
        description="Exit codes: 0 served, 1 refused or fold failed, 2 usage, 3 not found, "
        "4 token missing or wrong, 5 server unreachable or failing, 6 cancelled.",
    )
    upload.add_argument(
        "model",
        type=Path,
        help=f"the model: {ACCEPTED}; a directory is packed as .tar.gz and sent",
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
    _common(upload)
    upload.set_defaults(handler=client_command(run_upload))

    jobs = subparsers.add_parser("jobs", help="list fold jobs, or show, watch or cancel one")
    jobs.add_argument("job_id", nargs="?", help="a job id (default: list the jobs)")
    jobs.add_argument("--watch", action="store_true", help="follow the job to its end")
    jobs.add_argument("--cancel", action="store_true", help="cancel the job")
    jobs.add_argument("--limit", type=int, default=50, help="jobs to list (default 50)")
    _common(jobs)
    jobs.set_defaults(handler=client_command(run_jobs))

    listing = subparsers.add_parser("list", help="the server's models and versions")
    _common(listing)
    listing.set_defaults(handler=client_command(run_list))

    predict = subparsers.add_parser("predict", help="predict with a served model")
    _rows_arguments(predict)
    _common(predict)
    predict.set_defaults(handler=client_command(run_predict))

    compare = subparsers.add_parser(
        "compare", help="run the folded and unfolded model on the same rows and compare"
    )
    _rows_arguments(compare)
    compare.add_argument(
        "--reference",
        choices=["source", "keras"],
        help="also run the version's source model (its Keras file, SavedModel or ONNX file; "
        "'keras' is the same)",
    )
    compare.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    _common(compare)
    compare.set_defaults(handler=client_command(run_compare))

    delete = subparsers.add_parser("delete", help="delete a model, or one version of it")
    delete.add_argument("name", help="model name")
    delete.add_argument("--version", help="only this version ('latest': the highest)")
    _common(delete)
    delete.set_defaults(handler=client_command(run_delete))

    download = subparsers.add_parser(
        "download", help="download a version's folded model, unfolded model or report"
    )
    download.add_argument("name", help="model name")
    download.add_argument("artifact", choices=ARTIFACTS, help="what to download")
    download.add_argument("--version", help="version (default: the latest)")
    download.add_argument("-o", "--output", type=Path, help="file to write")
    _common(download)
    download.set_defaults(handler=client_command(run_download))


def _fail(args: argparse.Namespace, error: ClientError) -> int:
    """Report ``error`` on stderr (and as JSON on stdout with --json); its exit code."""
    if getattr(args, "json", False):
        _print_json(error.body if isinstance(error.body, dict) else {"error": str(error)})
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
