"""The plain server against Ray Serve with 1 and 2 replicas, side by side.

    make ray-venv
    .venv/bin/python bench/ray_serve.py [--duration 5]

The demo MLP (folded here first) is served by: foldserve on uvicorn with one worker and
with two, and ``foldserve serve --engine ray`` (from .venv-ray) with one replica and with
two, behind Ray Serve's HTTP proxy. wrk drives TF Serving predict and V2 infer (one row
of JSON per request) at concurrency 1 and 16, each run bounded by --duration, against
127.0.0.1 only. Prints requests/s, p50 and p99 in one table, the cost per request over
the plain server in the same round, and where a Ray request's time goes: end to end
against the replica's own timing (its ``server-timing`` header: the app's work and its
wait for the body, which the replica fetches from Serve's proxy). ``--rounds N`` repeats
the set with the Ray servers in a rotated order and reports medians (a shared machine
favours whichever server runs in a quiet moment).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from serving import REPO, Process, Target, ensure_wrk, free_port, run_wrk

RAY_PYTHON = Path(os.environ.get("FOLDSERVE_RAY_PYTHON", REPO / ".venv-ray" / "bin" / "python"))
CONCURRENCY = (1, 16)


def fold_demo(models: Path) -> None:
    version = models / "digits" / "1"
    version.mkdir(parents=True)
    source = REPO / "models" / "digits" / "1" / "model.keras"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "fold", str(source), "-o", str(version)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
        capture_output=True,
    )


def write_bodies(directory: Path) -> dict[str, Path]:
    from sklearn.datasets import load_digits

    row = load_digits().data[:1].astype("float32")
    bodies = {
        "predict": {"instances": row.tolist()},
        "infer": {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": row.ravel().tolist(),
                }
            ]
        },
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_text(json.dumps(body))
    return paths


def start(
    name: str, port: int, models: Path, log_dir: Path, *flags: str, extra: dict | None = None
) -> Process:
    python = RAY_PYTHON if "ray" in flags else Path(sys.executable)
    command = [str(python), "-m", "service.cli", "serve", "--port", str(port)]
    command += ["--models-dir", str(models), *flags]
    env = {
        "PYTHONPATH": str(REPO),
        "FOLDSERVE_LOG_LEVEL": "warning",
        "FOLDSERVE_PREWARM_FOLDER": "false",
        "FOLDSERVE_GRPC_PORT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        **(extra or {}),
    }
    return Process(name, command, env, f"http://127.0.0.1:{port}/v2/health/ready", log_dir)


SERVE_DEFAULTS = {
    "FOLDSERVE_LOG_LEVEL": "debug",  # Serve's access log on, as by default
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
}
"""What ``service.engines.ray`` changes (``SERVE_REQUEST_PATH``, ``serve_logging``), set back
to Ray Serve's values."""
RAY_1 = ("--engine", "ray", "--replicas", "1")
SERVERS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "uvicorn, 1 worker": ((), {}),
    "uvicorn, 2 workers": (("--workers", "2"), {}),
    "Ray Serve, 1 replica": (RAY_1, {}),
    "Ray Serve, 1 replica, Serve's defaults": (RAY_1, SERVE_DEFAULTS),
    "Ray Serve, 1 replica, actor calls": (RAY_1, {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"}),
    "Ray Serve, 1 replica, direct ingress": (RAY_1, {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}),
    "Ray Serve, 2 replicas": (("--engine", "ray", "--replicas", "2"), {}),
}
"""Each server: its ``foldserve serve`` flags and the environment it starts with. With
direct ingress (not what foldserve sets) the replica also listens on a port of its own
next to the proxy's; the split is then timed both through the proxy and straight to it."""
STRAIGHT = " (straight to the replica's own port)"
SPLIT_REQUESTS = 300


def split(url: str, body: Path) -> tuple[float, dict[str, float]]:
    """Median end-to-end ms of sequential requests on one kept-alive connection, and the
    medians of the replica's own timings of them (its ``server-timing`` header: ``app``,
    ``receive``; empty where the server sends none)."""
    import http.client
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    payload = body.read_bytes()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    total: list[float] = []
    timings: dict[str, list[float]] = {}
    try:
        for _ in range(SPLIT_REQUESTS):
            started = time.perf_counter()
            connection.request("POST", parts.path, payload, {"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            total.append((time.perf_counter() - started) * 1000)
            for metric in (response.getheader("server-timing") or "").split(","):
                name, _, duration = metric.strip().partition(";dur=")
                if duration:
                    timings.setdefault(name, []).append(float(duration))
    finally:
        connection.close()
    medians = {name: median(values) for name, values in timings.items()}
    return median(total), medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument(
        "--only", help="serve only the servers whose name contains this (e.g. '1 ')"
    )
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out servers whose name contains this"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole set, the Ray servers in a rotated order each round; "
        "figures are medians over rounds",
    )
    args = parser.parse_args()
    if not RAY_PYTHON.exists():
        print(f"no Ray venv at {RAY_PYTHON}: run 'make ray-venv' first", file=sys.stderr)
        return 2
    names = [
        name
        for name in SERVERS
        if (not args.only or args.only in name) and not any(skip in name for skip in args.skip)
    ]
    plain = [name for name in names if not name.startswith("Ray")]
    on_ray = [name for name in names if name.startswith("Ray")]
    wrk = ensure_wrk()
    rows, splits = [], []
    with tempfile.TemporaryDirectory(prefix="foldserve-ray-bench-") as scratch:
        root = Path(scratch)
        fold_demo(root / "models")
        bodies = write_bodies(root)
        for round_ in range(args.rounds):
            shift = round_ % max(len(on_ray), 1)
            for server in plain + on_ray[shift:] + on_ray[:shift]:
                flags, extra = SERVERS[server]
                port = free_port()
                replica_port = None
                if "RAY_SERVE_ENABLE_DIRECT_INGRESS" in extra:
                    replica_port = free_port()
                    extra = {
                        **extra,
                        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(replica_port),
                        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(replica_port + 1),
                    }
                print(f"round {round_ + 1}: {server}...", flush=True)
                slug = "-".join(server.replace(",", "").replace("'", "").split()).lower()
                process = start(slug, port, root / "models", root, *flags, extra=extra)
                try:
                    urls = {
                        "predict": f"http://127.0.0.1:{port}/v1/models/digits:predict",
                        "infer": f"http://127.0.0.1:{port}/v2/models/digits/infer",
                    }
                    for endpoint, url in urls.items():
                        target = Target("mlp", f"{server} {endpoint}", url, bodies[endpoint], 1)
                        run_wrk(wrk, target, 1, 1)  # warm-up
                        for concurrency in CONCURRENCY:
                            result = run_wrk(wrk, target, concurrency, args.duration)
                            rows.append((round_, server, endpoint, result))
                        total, timings = split(url, bodies[endpoint])
                        splits.append((round_, server, endpoint, total, timings))
                        if replica_port is not None:
                            straight = url.replace(f":{port}/", f":{replica_port}/")
                            total, timings = split(straight, bodies[endpoint])
                            splits.append((round_, server + STRAIGHT, endpoint, total, timings))
                finally:
                    process.stop()
    print(render(rows, names, args.duration, args.rounds))
    print(render_split(splits, names))
    return 0


def render(rows: list, names: list[str], duration: float, rounds: int) -> str:
    over = f", medians over {rounds} rounds" if rounds > 1 else ""
    lines = [
        f"Demo MLP, one row per request, JSON; {duration:g} s per run with wrk on 127.0.0.1, "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}){over}.",
        "",
        "| server | endpoint | c | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list] = {}
    for _, server, endpoint, result in rows:
        groups.setdefault((server, endpoint, result.concurrency), []).append(result)
    for server in names:
        for (name, endpoint, concurrency), results in groups.items():
            if name != server:
                continue
            lines.append(
                f"| {server} | {endpoint} | {concurrency} | "
                f"{median(r.rps for r in results):,.0f} | "
                f"{median(r.p50_ms for r in results):.2f} | "
                f"{median(r.p99_ms for r in results):.2f} | "
                f"{sum(r.errors for r in results)} |"
            )
    plain = {
        (round_, endpoint): result.p50_ms
        for round_, server, endpoint, result in rows
        if server == "uvicorn, 1 worker" and result.concurrency == 1
    }
    extra: dict[tuple, list[float]] = {}
    for round_, server, endpoint, result in rows:
        if server.startswith("Ray") and result.concurrency == 1 and (round_, endpoint) in plain:
            extra.setdefault((server, endpoint), []).append(result.p50_ms - plain[round_, endpoint])
    if extra:
        lines += [
            "",
            "Per-request cost over the plain server (p50 at c=1 minus the plain server's in "
            "the same round; median, then each round):",
            "",
        ]
        for (server, endpoint), values in extra.items():
            each = ", ".join(f"{value:+.2f}" for value in values)
            lines.append(f"- {server}, {endpoint}: {median(values):+.2f} ms ({each})")
    return "\n".join(lines)


def render_split(splits: list, names: list[str]) -> str:
    lines = [
        "",
        f"Where the time goes ({SPLIT_REQUESTS} sequential requests on one connection, "
        "medians in ms, over rounds too; the replica's own timing from its server-timing "
        "header):",
        "",
        "| server | endpoint | end to end | outside the app | body fetch | app's own work |",
        "|---|---|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list] = {}
    for _, server, endpoint, total, timings in splits:
        groups.setdefault((server, endpoint), []).append((total, timings))
    for server in [name for named in names for name in (named, named + STRAIGHT)]:
        for (name, endpoint), runs in groups.items():
            if name != server:
                continue
            total = median(run[0] for run in runs)
            timed = [run for run in runs if "app" in run[1]]
            if timed:
                outside = median(t - timings["app"] for t, timings in timed)
                receive = median(timings.get("receive", 0.0) for _, timings in timed)
                own = median(timings["app"] - timings.get("receive", 0.0) for _, timings in timed)
                cells = f"{outside:.2f} | {receive:.2f} | {own:.2f}"
            else:
                cells = "- | - | -"
            lines.append(f"| {server} | {endpoint} | {total:.2f} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
