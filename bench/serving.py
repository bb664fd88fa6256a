"""Side-by-side serving benchmark: foldserve against the alternatives, in one run.

    .venv/bin/python bench/serving.py [--duration 5] [--out docs/benchmarks.md]

Load comes from wrk (Debian's package, installed here when missing) against
127.0.0.1 only, each run bounded by --duration. Targets, on the same models
and inputs: foldserve (folded model, batching on and off; TF Serving JSON, V2
JSON, V2 binary), foldserve serving the unfolded ONNX, a FastAPI app calling
the Keras model per request (model.predict and model(x)), a bare FastAPI echo
endpoint (the HTTP ceiling), and MLServer with a minimal ONNX Runtime runtime
and its adaptive batching (installed in bench/.venv-mlserver). Models: the
demo MLP and a small ResNet-style convolutional network on 32x32x3.
Prints a table and the ratios, and writes them to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
MLSERVER_VENV = BENCH / ".venv-mlserver"
CONCURRENCY = (1, 8, 64)
LARGE_ROWS = 4096
sys.path.insert(0, str(REPO))

from common import answers_200, free_port, wait_until  # noqa: E402


@dataclass
class Target:
    model: str  # "mlp" or "conv"
    name: str  # what is measured
    url: str
    body: Path
    rows: int
    header_length: int | None = None
    content_type: str = "application/json"


@dataclass
class Result:
    target: Target
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.target.rows


# -- set-up ----------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (Debian package)...", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def ensure_mlserver() -> Path:
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        print("installing MLServer into bench/.venv-mlserver...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [
                str(MLSERVER_VENV / "bin" / "pip"),
                "install",
                "-q",
                "mlserver>=1.6,<1.8",
                "onnxruntime>=1.20,<1.33",
                "numpy<3",
            ],
            check=True,
        )
    return binary


def conv_model():
    import keras
    from keras import layers

    def block(x, channels, stride=1):
        shortcut = x
        y = layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or shortcut.shape[-1] != channels:
            shortcut = layers.Conv2D(channels, 1, strides=stride, use_bias=False)(shortcut)
            shortcut = layers.BatchNormalization()(shortcut)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(inputs)))
    x = block(x, 16)
    x = block(x, 32, stride=2)
    x = block(x, 64, stride=2)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="small_resnet")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
    return model


MAX_BATCH = {"mlp": 64, "conv": 8}
"""Each model's ``max_batch_size``. The conv model's cost per row is flat from batch 8 on
and its merged runs slow down beyond it on a shared machine (``bench/batch_cost.py``;
docs/performance.md, "Conv batching and JSON"); the MLP's falls with the batch."""


def build_repository(root: Path) -> dict[str, Path]:
    """models/<name>[-nobatch|-unfolded]/1/ for the MLP and the conv model."""
    from folding.quiet import import_keras

    import_keras()
    from folding.options import FoldOptions, VerifyOptions
    from folding.pipeline import fold_to_directory
    from folding.sources.keras.loading import load_keras_model

    sources = {
        "mlp": load_keras_model(REPO / "models" / "digits" / "1" / "model.keras"),
        "conv": conv_model(),
    }
    keras_files = {}
    for name, model in sources.items():
        version = root / name / "1"
        version.mkdir(parents=True)
        fold_to_directory(model, version, FoldOptions(VerifyOptions(samples=8)))
        model.save(version / "model.keras")
        keras_files[name] = version / "model.keras"
        (root / name / "config.json").write_text(
            json.dumps({"dynamic_batching": {"max_batch_size": MAX_BATCH[name]}})
        )
        shutil.copytree(root / name, root / f"{name}-nobatch")
        (root / f"{name}-nobatch" / "config.json").write_text(
            json.dumps({"dynamic_batching": {"enabled": False}})
        )
        unfolded = root / f"{name}-unfolded" / "1"
        unfolded.mkdir(parents=True)
        shutil.copy(version / "unfolded.onnx", unfolded / "model.onnx")
        shutil.copy(version / "unfolded.onnx", unfolded / "unfolded.onnx")
    return keras_files


def mlserver_repository(root: Path, models: Path) -> None:
    shutil.copy(BENCH / "apps" / "mlserver_onnx.py", root / "mlserver_onnx.py")
    (root / "settings.json").write_text(
        json.dumps({"debug": False, "parallel_workers": 0, "metrics_endpoint": None})
    )
    for name in ("mlp", "conv"):
        (root / name).mkdir()
        (root / name / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_onnx.OnnxModel",
                    "parameters": {"uri": str(models / name / "1" / "model.onnx")},
                    "max_batch_size": 64,
                    "max_batch_time": 0.0005,
                }
            )
        )


# -- processes -------------------------------------------------------------------------


class Process:
    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        ready: str,
        log_dir: Path,
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: self.ready(ready), 180, interval=0.3)
        except TimeoutError:
            raise RuntimeError(f"{name} not ready; see {self.log.name}") from None

    def ready(self, url: str) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited; see {self.log.name}")
        return answers_200(url)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def start_foldserve(
    port: int, models: Path, log_dir: Path, env: dict[str, str] | None = None
) -> Process:
    """foldserve on 127.0.0.1:``port`` over ``models``, quiet, without the fold worker."""
    return Process(
        "foldserve",
        [PYTHON, "-m", "service.cli", "serve", "--port", str(port), "--models-dir", str(models)],
        {"FOLDSERVE_LOG_LEVEL": "warning", "FOLDSERVE_PREWARM_FOLDER": "false", **(env or {})},
        f"http://127.0.0.1:{port}/v2/health/ready",
        log_dir,
    )


# -- load ------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _duration_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(wrk: str, target: Target, concurrency: int, duration: float) -> Result:
    env = {
        **os.environ,
        "BODY_FILE": str(target.body),
        "CONTENT_TYPE": target.content_type,
        "HEADER_LENGTH": str(target.header_length or ""),
    }
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{int(duration)}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(BENCH / "wrk_post.lua"),
        target.url,
    ]
    output = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 60
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    if not rps or "50" not in percentiles:
        raise RuntimeError(f"wrk output not understood for {target.name}:\n{output}")
    return Result(
        target,
        concurrency,
        float(rps.group(1)),
        _duration_ms(percentiles["50"]),
        _duration_ms(percentiles.get("99", percentiles["50"])),
        errors,
    )


# -- bodies ----------------------------------------------------------------------------


def write_bodies(directory: Path, model: str, input_name: str, rows: np.ndarray) -> dict:
    """TF Serving JSON, V2 JSON and V2 binary bodies for ``rows``; returns their paths."""
    tag = f"{model}-{len(rows)}"
    tf_json = directory / f"{tag}.tf.json"
    tf_json.write_text(json.dumps({"instances": rows.tolist()}))
    v2_json = directory / f"{tag}.v2.json"
    v2_json.write_text(
        json.dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "shape": list(rows.shape),
                        "datatype": "FP32",
                        "data": rows.reshape(-1).tolist(),
                    }
                ]
            }
        )
    )
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    v2_binary = directory / f"{tag}.v2.bin"
    v2_binary.write_bytes(header + rows.astype(np.float32).tobytes())
    return {"tf": tf_json, "v2": v2_json, "bin": v2_binary, "header": len(header)}


def in_process_rows_per_s(onnx_path: Path, input_name: str, rows: np.ndarray) -> float:
    import onnxruntime

    options = onnxruntime.SessionOptions()  # the server's defaults: 2 threads, no spinning
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    feed = {input_name: rows}
    for _ in range(5):
        session.run(None, feed)
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - start)
    return len(rows) / float(np.median(samples))


# -- the run ---------------------------------------------------------------------------


def targets_for(model: str, input_name: str, bodies: dict, ports: dict) -> list[Target]:
    fold = f"http://127.0.0.1:{ports['foldserve']}"
    rows = 1
    targets = []
    for suffix, label in (("", "batching on"), ("-nobatch", "batching off")):
        name = f"{model}{suffix}"
        targets += [
            Target(
                model,
                f"foldserve TF JSON, {label}",
                f"{fold}/v1/models/{name}:predict",
                bodies["tf"],
                rows,
            ),
            Target(
                model,
                f"foldserve V2 JSON, {label}",
                f"{fold}/v2/models/{name}/infer",
                bodies["v2"],
                rows,
            ),
            Target(
                model,
                f"foldserve V2 binary, {label}",
                f"{fold}/v2/models/{name}/infer",
                bodies["bin"],
                rows,
                bodies["header"],
                "application/octet-stream",
            ),
        ]
    keras = f"http://127.0.0.1:{ports['keras']}"
    targets += [
        Target(
            model,
            "foldserve TF JSON, unfolded ONNX",
            f"{fold}/v1/models/{model}-unfolded:predict",
            bodies["tf"],
            rows,
        ),
        Target(model, "Keras in FastAPI, model(x)", f"{keras}/call/{model}", bodies["tf"], rows),
        Target(
            model, "Keras in FastAPI, model.predict", f"{keras}/predict/{model}", bodies["tf"], rows
        ),
        Target(
            model, "bare FastAPI echo", f"http://127.0.0.1:{ports['echo']}/echo", bodies["tf"], rows
        ),
        Target(
            model,
            "MLServer V2 JSON, adaptive batching",
            f"http://127.0.0.1:{ports['mlserver']}/v2/models/{model}/infer",
            bodies["v2"],
            rows,
        ),
    ]
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    wrk = ensure_wrk()
    mlserver = ensure_mlserver()
    work = Path(tempfile.mkdtemp(prefix="foldserve-bench-"))
    models = work / "models"
    print(f"building models in {work}...", flush=True)
    keras_files = build_repository(models)
    (work / "mlserver").mkdir()
    mlserver_repository(work / "mlserver", models)
    ports = {name: free_port() for name in ("foldserve", "keras", "echo", "mlserver")}
    processes: list[Process] = []
    results: list[Result] = []
    try:
        processes.append(start_foldserve(ports["foldserve"], models, work))
        processes.append(
            Process(
                "keras",
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "apps.keras_app:app",
                    "--port",
                    str(ports["keras"]),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                {
                    "BENCH_KERAS_MODELS": ",".join(f"{k}={v}" for k, v in keras_files.items()),
                    "TF_CPP_MIN_LOG_LEVEL": "3",
                },
                f"http://127.0.0.1:{ports['keras']}/docs",
                work,
                cwd=BENCH,
            )
        )
        processes.append(
            Process(
                "echo",
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "apps.echo_app:app",
                    "--port",
                    str(ports["echo"]),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                {},
                f"http://127.0.0.1:{ports['echo']}/docs",
                work,
                cwd=BENCH,
            )
        )
        processes.append(
            Process(
                "mlserver",
                [str(mlserver), "start", str(work / "mlserver")],
                {
                    "MLSERVER_HTTP_PORT": str(ports["mlserver"]),
                    "MLSERVER_GRPC_PORT": str(free_port()),
                    "MLSERVER_METRICS_PORT": str(free_port()),
                },
                f"http://127.0.0.1:{ports['mlserver']}/v2/models/conv/ready",
                work,
                cwd=work,
            )
        )

        rng = np.random.default_rng(0)
        from sklearn.datasets import load_digits

        digit = load_digits().data[:1].astype(np.float32)
        inputs = {
            "mlp": ("pixels", digit),
            "conv": ("image", rng.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)),
        }
        for model, (input_name, rows) in inputs.items():
            bodies = write_bodies(work, model, input_name, rows)
            for target in targets_for(model, input_name, bodies, ports):
                for concurrency in CONCURRENCY:
                    result = run_wrk(wrk, target, concurrency, args.duration)
                    results.append(result)
                    print(row_text(result), flush=True)

        large = digit.repeat(LARGE_ROWS, axis=0) + rng.uniform(0, 1, (LARGE_ROWS, 64)).astype(
            np.float32
        )
        bodies = write_bodies(work, "mlp", "pixels", large)
        fold = f"http://127.0.0.1:{ports['foldserve']}"
        large_targets = [
            Target(
                "mlp-4096",
                "foldserve V2 binary",
                f"{fold}/v2/models/mlp/infer",
                bodies["bin"],
                LARGE_ROWS,
                bodies["header"],
                "application/octet-stream",
            ),
            Target(
                "mlp-4096",
                "foldserve V2 JSON",
                f"{fold}/v2/models/mlp/infer",
                bodies["v2"],
                LARGE_ROWS,
            ),
            Target(
                "mlp-4096",
                "foldserve TF JSON",
                f"{fold}/v1/models/mlp:predict",
                bodies["tf"],
                LARGE_ROWS,
            ),
        ]
        for target in large_targets:
            for concurrency in (1, 8):
                result = run_wrk(wrk, target, concurrency, args.duration)
                results.append(result)
                print(row_text(result), flush=True)
        in_process = in_process_rows_per_s(models / "mlp" / "1" / "model.onnx", "pixels", large)
    finally:
        for process in reversed(processes):
            process.stop()
    report = render(results, in_process, args.duration)
    print(report)
    args.out.write_text(report)
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


# -- the report ------------------------------------------------------------------------


def row_text(result: Result) -> str:
    return (
        f"{result.target.model:9s} {result.target.name:42s} c={result.concurrency:<3d} "
        f"{result.rps:9.1f} req/s {result.rows_per_s:11.1f} rows/s  p50 {result.p50_ms:8.3f} ms"
        f"  p99 {result.p99_ms:8.3f} ms  errors {result.errors}"
    )


def find(results: list[Result], model: str, name: str, concurrency: int) -> Result:
    for result in results:
        if (result.target.model, result.target.name, result.concurrency) == (
            model,
            name,
            concurrency,
        ):
            return result
    raise KeyError((model, name, concurrency))


def render(results: list[Result], in_process_rows: float, duration: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`.venv/bin/python bench/serving.py "
        f"--duration {duration:g}`); load from `wrk -t1` against 127.0.0.1, one run of "
        f"{duration:g} s per row. Machine: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        "ONNX Runtime CPU provider. foldserve runs one worker with its defaults "
        "(2 intra-op threads without spinning, 1 instance, max batch 64, queue delay 0); "
        "in-process ONNX Runtime uses the same session settings.",
        "",
        "| model | target | conc | req/s | rows/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.target.model} | {r.target.name} | {r.concurrency} | {r.rps:.1f} | "
            f"{r.rows_per_s:.1f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.errors} |"
        )
    lines += ["", "## Figures against the targets", ""]

    def check(label: str, value: float, goal: float, unit: str, higher: bool = True) -> None:
        met = value >= goal if higher else value <= goal
        lines.append(
            f"- {label}: **{value:.2f}{unit}** (target {'>=' if higher else '<='} "
            f"{goal:g}{unit}) — {'met' if met else 'MISSED'}"
        )

    on = find(results, "mlp", "foldserve TF JSON, batching on", 1)
    off = find(results, "mlp", "foldserve TF JSON, batching off", 1)
    check(
        "batch-1 TF JSON predict, c=1, median latency (batching on)",
        on.p50_ms,
        1.0,
        " ms",
        higher=False,
    )
    check(
        "batch-1 TF JSON predict, c=1, median latency (batching off)",
        off.p50_ms,
        1.0,
        " ms",
        higher=False,
    )
    best = max(
        (find(results, "mlp", f"foldserve TF JSON, batching {s}", 64) for s in ("on", "off")),
        key=lambda r: r.rps,
    )
    echo = find(results, "mlp", "bare FastAPI echo", 64)
    check(f"c=64 TF JSON req/s vs bare echo ({best.target.name})", best.rps / echo.rps, 0.7, "x")
    keras_best = max(
        (find(results, "mlp", f"Keras in FastAPI, {k}", 64) for k in ("model(x)", "model.predict")),
        key=lambda r: r.rps,
    )
    check(
        f"c=64 req/s vs the best Keras-in-FastAPI ({keras_best.target.name})",
        best.rps / keras_best.rps,
        20,
        "x",
    )
    for model in ("mlp", "conv"):
        ours = max(
            (find(results, model, f"foldserve V2 JSON, batching {s}", 64) for s in ("on", "off")),
            key=lambda r: r.rps,
        )
        peer = find(results, model, "MLServer V2 JSON, adaptive batching", 64)
        check(f"{model}: c=64 V2 JSON req/s vs MLServer", ours.rps / peer.rps, 1.0, "x")
    conv_on = find(results, "conv", "foldserve V2 binary, batching on", 64)
    conv_off = find(results, "conv", "foldserve V2 binary, batching off", 64)
    check("conv: c=64 batching on vs off (V2 binary)", conv_on.rps / conv_off.rps, 1.5, "x")
    conv_on_json = find(results, "conv", "foldserve TF JSON, batching on", 64)
    conv_off_json = find(results, "conv", "foldserve TF JSON, batching off", 64)
    check("conv: c=64 batching on vs off (TF JSON)", conv_on_json.rps / conv_off_json.rps, 1.5, "x")
    large = max(
        (find(results, "mlp-4096", "foldserve V2 binary", c) for c in (1, 8)),
        key=lambda r: r.rows_per_s,
    )
    check(
        f"4096-row V2 binary rows/s vs in-process ONNX Runtime ({in_process_rows:,.0f} rows/s)",
        large.rows_per_s / in_process_rows,
        0.5,
        "x",
    )
    lines.append("")
    lines.append(
        "Folded vs unfolded ONNX, same server, TF JSON, batching on (req/s ratio folded/unfolded):"
    )
    lines.append("")
    for model in ("mlp", "conv"):
        for concurrency in CONCURRENCY:
            folded = find(results, model, "foldserve TF JSON, batching on", concurrency)
            unfolded = find(results, model, "foldserve TF JSON, unfolded ONNX", concurrency)
            lines.append(
                f"- {model}, c={concurrency}: {folded.rps / unfolded.rps:.2f}x "
                f"({folded.rps:.0f} vs {unfolded.rps:.0f} req/s)"
            )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
