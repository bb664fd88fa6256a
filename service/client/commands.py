"""The client commands, each ``run_<command>(client, args) -> exit code``: upload (and
follow the job), jobs, list, predict, compare, delete, download."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.client.http import (
    EXIT_AUTH,
    EXIT_CANCELLED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    TERMINAL,
    Client,
    ClientError,
)
from service.client.output import Progress, number, print_json, print_report_summary, table, when
from service.client.rows import JSON_HEADERS, json_content, load_rows, request_body

ACCEPTED = (
    "a .keras, .h5 or .onnx file, a .zip or .tar.gz of a SavedModel, or a SavedModel directory"
)

ARTIFACTS = ("model.onnx", "unfolded.onnx", "report")


def _version_path(name: str, version: str | None) -> str:
    return f"/v1/models/{name}" + (f"/versions/{version}" if version else "")


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
        print_json(job) if args.json else print(job["id"])
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
        print_json(job)
    elif job["state"] == "done":
        report = job.get("report") or {}
        print(f"{job['name']} version {job['version']} is served")
        if report:
            print_report_summary(report)
    elif job["state"] == "cancelled":
        print(f"job {job.get('id')} was cancelled; nothing was stored", file=sys.stderr)
    else:
        print(f"foldserve: error: {job.get('error')}", file=sys.stderr)
    return {"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(job["state"], EXIT_REFUSED)


def watch(client: Client, job: dict[str, Any], show_progress: bool) -> dict[str, Any]:
    """Follow a job to its end: its event stream, or polling when the stream breaks off."""
    if job["state"] in TERMINAL:
        return job
    with Progress(show_progress) as progress:
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


def run_jobs(client: Client, args: argparse.Namespace) -> int:
    if args.job_id is None:
        if args.cancel or args.watch:
            raise ClientError("--cancel and --watch need a job id", EXIT_USAGE)
        jobs = client.request("GET", "/v1/jobs", params={"limit": args.limit})["jobs"]
        if args.json:
            print_json({"jobs": jobs})
            return EXIT_OK
        rows = [
            [
                job["id"][:12],
                job["name"],
                job["version"],
                job["state"],
                when(job.get("created_at")),
                number(_duration(job)),
                job.get("error") or "",
            ]
            for job in jobs
        ]
        table(None, ["job", "model", "version", "state", "created", "seconds", "error"], rows)
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
        print_json(job)
    else:
        rows = [["state", job["state"]], ["model", f"{job['name']} v{job['version']}"]]
        rows += [["file", job.get("filename")], ["created", when(job.get("created_at"))]]
        rows += [[f"{stage} s", number(seconds)] for stage, seconds in job["timings"].items()]
        if job.get("error"):
            rows.append(["error", job["error"]])
        table(f"job {job['id']}", ["", ""], rows)
    if job["state"] == "failed":
        return EXIT_REFUSED
    return EXIT_CANCELLED if job["state"] == "cancelled" and not args.cancel else EXIT_OK


def _duration(job: dict[str, Any]) -> float | None:
    if job.get("started_at") is None:
        return None
    return (job.get("finished_at") or time.time()) - job["started_at"]


def run_list(client: Client, args: argparse.Namespace) -> int:
    models = client.request("GET", "/v1/models")["models"]
    if args.json:
        print_json({"models": models})
        return EXIT_OK
    rows = [
        [model["name"], entry["version"], entry["state"], entry.get("reason", "")]
        for model in models
        for entry in model["versions"]
    ]
    table(None, ["model", "version", "state", "reason"], rows)
    return EXIT_OK


def run_predict(client: Client, args: argparse.Namespace) -> int:
    body = request_body(load_rows(args.data, args.file))
    path = _version_path(args.name, args.version) + ":predict"
    answer = client.request("POST", path, content=json_content(body), headers=JSON_HEADERS)
    if args.json:
        print_json(answer)
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
        print_json(answer)
    else:
        verdict = answer["verdict"]
        rows = []
        for output, entry in answer["outputs"].items():
            rows.append(
                [
                    output,
                    number(entry["max_abs_diff"]),
                    number(entry["max_rel_diff"]),
                    number(entry.get("argmax_agreement")),
                    number(entry.get("source_max_rel_diff", entry.get("keras_max_rel_diff"))),
                    "yes" if entry["passed"] else "NO",
                ]
            )
        table(
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
        print_json(answer)
    else:
        versions = ", ".join(str(version) for version in answer["deleted_versions"])
        print(f"deleted {answer['name']} version(s) {versions}")
    return EXIT_OK


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
        print_json({"path": str(output), "bytes": len(response.content)})
    else:
        print(f"wrote {output} ({len(response.content):,} bytes)")
    return EXIT_OK
