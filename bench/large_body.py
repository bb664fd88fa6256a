"""How long small predicts wait while one large JSON predict is in flight.

    .venv/bin/python bench/large_body.py [--mb 40] [--rounds 3]

Starts foldserve on 127.0.0.1 twice, serving a hand-built 64 -> 32 -> 10 MLP: with
large bodies decoded in the decoder process (the default) and with
``FOLDSERVE_LARGE_BODY_BYTES=0`` (decoded in a worker thread, as before). For each,
``--rounds`` times: small predicts back to back for as long as one ``--mb`` MB TF
Serving predict takes (sent from another process), and the same number of seconds
with no large request (the machine's own noise). Prints the small predicts' latency:
max, 99th percentile and median.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.service.conftest import serving  # noqa: E402
from tests.service.test_limits import mlp_onnx  # noqa: E402

SEND = """
import sys, httpx
reply = httpx.post(sys.argv[1], content=open(sys.argv[2], "rb").read(), timeout=600)
print(reply.status_code)
"""
SMALL = json.dumps({"instances": [[0.5] * 64]}).encode()


def small_predicts(client: httpx.Client, done: Callable[[], bool]) -> list[float]:
    latencies = []
    while not done():
        started = time.perf_counter()
        reply = client.post("/v1/models/mlp:predict", content=SMALL)
        latencies.append(time.perf_counter() - started)
        reply.raise_for_status()
    return latencies


def after(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end


def finished(process: subprocess.Popen) -> Callable[[], bool]:
    return lambda: process.poll() is not None


def measure(url: str, body: Path, rounds: int) -> dict[str, list[float]]:
    during: list[float] = []
    idle: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        small_predicts(client, after(1.0))
        for _ in range(rounds):
            started = time.monotonic()
            sender = subprocess.Popen(
                [sys.executable, "-c", SEND, f"{url}/v1/models/mlp:predict", str(body)],
                stdout=subprocess.PIPE,
                text=True,
            )
            during += small_predicts(client, finished(sender))
            output, _ = sender.communicate()
            if output.strip() != "200":
                raise RuntimeError(f"the large predict failed: {output}")
            idle += small_predicts(client, after(time.monotonic() - started))
    return {"during": during, "idle": idle}


def row(label: str, latencies: list[float]) -> str:
    ms = np.asarray(latencies) * 1e3
    return (
        f"| {label} | {len(ms)} | {ms.max():.0f} | {np.percentile(ms, 99):.0f} | "
        f"{np.median(ms):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        mlp_onnx(root / "models" / "mlp" / "1" / "model.onnx")
        rows = int(args.mb * 1e6 / (64 * 10))
        body = root / "large.json"
        values = np.random.default_rng(0).random((rows, 64)).round(6)
        body.write_bytes(json.dumps({"instances": values.tolist()}).encode())
        print(f"large predict: {body.stat().st_size / 1e6:.1f} MB, {rows} rows\n")
        print("| small predicts | n | max ms | p99 ms | median ms |")
        print("|---|---|---|---|---|")
        configurations = {
            "decoder process": {},
            "worker thread": {"FOLDSERVE_LARGE_BODY_BYTES": "0"},
        }
        for label, env in configurations.items():
            with serving(root / "models", {"FOLDSERVE_PREWARM_FOLDER": "false", **env}) as server:
                figures = measure(server.url, body, args.rounds)
            print(row(f"{label}: during the large one", figures["during"]))
            print(row(f"{label}: no large one", figures["idle"]))


if __name__ == "__main__":
    main()
