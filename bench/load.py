"""The load figures, interleaved: foldserve's tail at 64 clients against a bare FastAPI
echo, and the conv model's batching gain, for TF Serving JSON and V2 binary.

    .venv/bin/python bench/load.py [--duration 3] [--rounds 3] [--baseline DIR] [--out FILE]

One foldserve (this tree) and one bare FastAPI echo (bench/apps/echo_app.py, the HTTP
ceiling) serve on 127.0.0.1; with ``--baseline DIR`` a second foldserve runs the code
of another checkout (e.g. the main branch) on the same models, so before and after
are measured side by side. Every target is loaded by ``wrk -t1 -c64`` for
``--duration`` seconds, all targets in turn, ``--rounds`` times; each figure is the
median over the rounds. The machine may be shared, so the figures that matter are the
ratios within one round (foldserve's p99 over the echo's p99 measured seconds apart),
whose medians are printed. Each run also reads the CPU time its server used (Linux
``/proc``): per request for the whole process and for its main thread, the event loop,
which on a shared machine vary far less than requests per second do; the loop's CPU per
request with batching off over on is the most the batching gain can be when the loop
sets the pace. Bounded: about rounds x targets x duration seconds, plus
building the two models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import (
    BENCH,
    MAX_BATCH,
    PYTHON,
    Process,
    Target,
    build_repository,
    ensure_wrk,
    free_port,
    run_wrk,
    start_foldserve,
    write_bodies,
)

CLIENTS = 64


def start_baseline(tree: Path, port: int, models: Path, log_dir: Path) -> Process:
    return Process(
        "baseline",
        [PYTHON, "-m", "service.cli", "serve", "--port", str(port), "--models-dir", str(models)],
        {
            "FOLDSERVE_LOG_LEVEL": "warning",
            "FOLDSERVE_PREWARM_FOLDER": "false",
            "FOLDSERVE_GRPC_PORT": "0",
            "PYTHONPATH": str(tree),
        },
        f"http://127.0.0.1:{port}/v2/health/ready",
        log_dir,
        cwd=tree,
    )


def start_echo(port: int, log_dir: Path) -> Process:
    command = [PYTHON, "-m", "uvicorn", "apps.echo_app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    return Process("echo", command, {}, f"http://127.0.0.1:{port}/docs", log_dir, cwd=BENCH)


def targets(servers: dict[str, int], bodies: dict[str, dict]) -> list[Target]:
    found = [
        Target("mlp", "bare FastAPI echo", f"http://127.0.0.1:{servers['echo']}/echo", *_tf(bodies))
    ]
    for server, port in servers.items():
        if server == "echo":
            continue
        base = f"http://127.0.0.1:{port}"
        found.append(
            Target("mlp", f"{server} TF JSON", f"{base}/v1/models/mlp:predict", *_tf(bodies))
        )
        for suffix, label in (("", "on"), ("-nobatch", "off")):
            conv = bodies["conv"]
            found += [
                Target(
                    "conv",
                    f"{server} TF JSON, batching {label}",
                    f"{base}/v1/models/conv{suffix}:predict",
                    conv["tf"],
                    1,
                ),
                Target(
                    "conv",
                    f"{server} V2 binary, batching {label}",
                    f"{base}/v2/models/conv{suffix}/infer",
                    conv["bin"],
                    1,
                    conv["header"],
                    "application/octet-stream",
                ),
            ]
    return found


def _tf(bodies: dict[str, dict]) -> tuple[Path, int]:
    return bodies["mlp"]["tf"], 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="times every target is loaded")
    parser.add_argument("--baseline", type=Path, help="another checkout to serve side by side")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()

    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="foldserve-load-"))
    models = work / "models"
    print(f"building models in {work}...", flush=True)
    build_repository(models)
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    bodies = {
        "mlp": write_bodies(work, "mlp", "pixels", load_digits().data[:1].astype(np.float32)),
        "conv": write_bodies(
            work, "conv", "image", rng.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
        ),
    }
    servers = {"echo": free_port(), "foldserve": free_port()}
    if args.baseline:
        servers["baseline"] = free_port()
    processes = []
    rows: dict[str, list] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    try:
        processes.append(start_echo(servers["echo"], work))
        processes.append(
            start_foldserve(servers["foldserve"], models, work, {"FOLDSERVE_GRPC_PORT": "0"})
        )
        if args.baseline:
            processes.append(
                start_baseline(args.baseline.resolve(), servers["baseline"], models, work)
            )
        plan = targets(servers, bodies)
        pids = {process.name: process.process.pid for process in processes}
        for target in plan:  # warm every path once (sessions, first batches)
            run_wrk(wrk, target, 8, 1)
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", flush=True)
            for target in plan:
                pid = pids[server_of(target)]
                before = cpu_seconds(pid)
                result = run_wrk(wrk, target, CLIENTS, args.duration)
                used = [b - a for a, b in zip(before, cpu_seconds(pid), strict=True)]
                requests = max(1.0, result.rps * args.duration)
                per_request = (used[0] / requests * 1e6, used[1] / requests * 1e6)
                rows.setdefault(target.name, []).append(result)
                cpu.setdefault(target.name, []).append(per_request)
                print(
                    f"  {target.name:36s} {result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                    f"  p99 {result.p99_ms:7.2f} ms  errors {result.errors}"
                    f"  CPU {per_request[0]:5.0f} us/req (loop {per_request[1]:5.0f})",
                    flush=True,
                )
        merged = {s: mean_batch(port, "conv") for s, port in servers.items() if s != "echo"}
    finally:
        for process in reversed(processes):
            process.stop()
    ceiling = batch_ceiling(models / "conv" / "1" / "model.onnx")
    report = render(rows, cpu, [s for s in servers if s != "echo"], args) + "\n" + ceiling
    report += "\nMean rows per session run of the conv model with batching on: " + ", ".join(
        f"{server} {rows_per_run:.2f}" for server, rows_per_run in merged.items()
    )
    report += f" (max_batch_size {MAX_BATCH['conv']}).\n"
    print(report)
    if args.out:
        args.out.write_text(report)


def mean_batch(port: int, model: str) -> float:
    """Rows per session run the server's batcher made for ``model`` so far (its stats)."""
    url = f"http://127.0.0.1:{port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=30) as answer:
        stats = json.load(answer)["model_stats"][0]
    return stats["inference_count"] / max(1, stats["execution_count"])


def server_of(target: Target) -> str:
    """The process serving ``target``: "echo", "foldserve" or "baseline"."""
    first = target.name.split()[0]
    return first if first in ("foldserve", "baseline") else "echo"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) process ``pid`` has used so far, in all and in its
    main thread (the event loop), from Linux's ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    return used(Path(f"/proc/{pid}/stat")), used(Path(f"/proc/{pid}/task/{pid}/stat"))


def batch_ceiling(onnx_path: Path) -> str:
    """ONNX Runtime's own time per row of the conv model at batch 1 to 64
    (``bench/batch_cost.py``, the server's session settings): how much merging
    requests can save on compute at most."""
    from batch_cost import per_row, render

    costs = per_row(onnx_path, rounds=3)
    ratios = ", ".join(
        f"batch 1 / batch {batch}: {costs[(2, 1)][0] / costs[(2, batch)][0]:.2f}x wall, "
        f"{costs[(2, 1)][1] / costs[(2, batch)][1]:.2f}x CPU"
        for batch in (8, 64)
    )
    return (
        "conv model in-process, ONNX Runtime alone (bench/batch_cost.py):\n\n"
        + render(costs)
        + f"\nPer row with the server's 2 intra-op threads, {ratios}: the most batching "
        "can save on compute here (the conv model is served with max_batch_size "
        f"{MAX_BATCH['conv']}).\n"
    )


def render(
    rows: dict[str, list],
    cpu: dict[str, list[tuple[float, float]]],
    servers: list[str],
    args: argparse.Namespace,
) -> str:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in rows[name])

    def cpu_median(name: str, which: int) -> float:
        return statistics.median(used[which] for used in cpu[name])

    def cpu_ratio(top: str, bottom: str, which: int) -> float:
        pairs = zip(cpu[top], cpu[bottom], strict=True)
        return statistics.median(a[which] / b[which] for a, b in pairs)

    def ratio(top: str, bottom: str, field: str) -> float:
        """The median over rounds of the within-round ratio."""
        pairs = zip(rows[top], rows[bottom], strict=True)
        return statistics.median(getattr(a, field) / getattr(b, field) for a, b in pairs)

    lines = [
        f"Load at {CLIENTS} clients (`wrk -t1 -c{CLIENTS}`, {args.duration} s per run, "
        f"{args.rounds} interleaved rounds, medians):",
        "",
        "| target | req/s | p50 ms | p99 ms | errors | CPU us/req | loop CPU us/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in rows.items():
        lines.append(
            f"| {name} | {median(name, 'rps'):.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {sum(r.errors for r in results)} | "
            f"{cpu_median(name, 0):.0f} | {cpu_median(name, 1):.0f} |"
        )
    lines += [
        "",
        "| figure | " + " | ".join(servers) + " | target |",
        "|---|" + "---:|" * (len(servers) + 1),
    ]
    figures = [
        ("mlp TF JSON p99 / echo p99", "{s} TF JSON", "bare FastAPI echo", "p99_ms", "<= 3"),
        ("mlp TF JSON req/s / echo req/s", "{s} TF JSON", "bare FastAPI echo", "rps", ">= 0.7"),
        (
            "conv batching gain, TF JSON (req/s on / off)",
            "{s} TF JSON, batching on",
            "{s} TF JSON, batching off",
            "rps",
            ">= 1.5",
        ),
        (
            "conv batching gain, V2 binary (req/s on / off)",
            "{s} V2 binary, batching on",
            "{s} V2 binary, batching off",
            "rps",
            ">= 1.5",
        ),
    ]
    for label, top, bottom, field, goal in figures:
        cells = [f"{ratio(top.format(s=s), bottom.format(s=s), field):.2f}x" for s in servers]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")
    for protocol in ("TF JSON", "V2 binary"):
        for which, part in ((0, "server"), (1, "event loop")):
            cells = []
            for server in servers:
                off, on = (f"{server} {protocol}, batching {mode}" for mode in ("off", "on"))
                cells.append(f"{cpu_ratio(off, on, which):.2f}x")
            label = f"conv {protocol}: {part} CPU per request, batching off / on"
            lines.append(f"| {label} | " + " | ".join(cells) + " | - |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
