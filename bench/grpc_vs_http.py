"""Open Inference over gRPC against HTTP (binary and JSON), side by side in one run.

    .venv/bin/python bench/grpc_vs_http.py [--duration 5] [--models-dir models]

Starts one foldserve server on 127.0.0.1 (HTTP and gRPC in the same process), then
for each concurrency drives it from one asyncio client process with the same
pre-built requests: gRPC ``ModelInfer`` with ``raw_input_contents`` (grpc.aio stub
of tritonclient's generated modules), V2 HTTP with the binary tensor extension, V2
HTTP JSON (httpx). Rows: 1-row requests at c=1 and c=64, and 4096-row requests at
c=1. Each run is bounded by --duration seconds. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from common import ROOT as REPO
from common import answers_200, serving_grpc, wait_until
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

HEADER_LENGTH = "Inference-Header-Content-Length"
CASES = ((1, 1), (1, 64), (4096, 1))  # (rows per request, concurrency)


def requests_for(rows: np.ndarray) -> dict[str, object]:
    shape = list(rows.shape)
    grpc_request = pb.ModelInferRequest(model_name="digits")
    grpc_request.inputs.add(name="pixels", datatype="FP32", shape=shape)
    grpc_request.raw_input_contents.append(rows.tobytes())
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    tensor = {"name": "pixels", "shape": shape, "datatype": "FP32", "data": rows.ravel().tolist()}
    as_json = json.dumps({"inputs": [tensor]}).encode()
    return {"grpc": grpc_request, "binary": (header + rows.tobytes(), len(header)), "json": as_json}


async def drive(call, concurrency: int, duration: float) -> tuple[float, float, float]:
    """Requests per second, median and p99 latency (ms) of ``call`` at ``concurrency``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await call()  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = np.sort(np.asarray(latencies)) * 1e3
    p99 = float(ordered[int(len(ordered) * 0.99)])
    return len(latencies) / elapsed, float(np.median(ordered)), p99


async def measure(http_url: str, grpc_url: str, duration: float) -> list[tuple]:
    rows_all = np.resize(np.random.default_rng(0).random((1797, 64), np.float32) * 16, (4096, 64))
    results = []
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with (
        httpx.AsyncClient(base_url=http_url, limits=limits, timeout=60) as http,
        grpc.aio.insecure_channel(
            grpc_url, options=[("grpc.max_receive_message_length", -1)]
        ) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for rows, concurrency in CASES:
            prepared = requests_for(np.ascontiguousarray(rows_all[:rows]))
            binary_body, binary_length = prepared["binary"]

            async def over_grpc(prepared=prepared) -> None:
                await stub.ModelInfer(prepared["grpc"])

            async def over_binary(body=binary_body, length=binary_length) -> None:
                response = await http.post(
                    "/v2/models/digits/infer",
                    content=body,
                    headers={
                        HEADER_LENGTH: str(length),
                        "Content-Type": "application/octet-stream",
                    },
                )
                response.raise_for_status()

            async def over_json(body=prepared["json"]) -> None:
                response = await http.post(
                    "/v2/models/digits/infer",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                response.raise_for_status()

            for protocol, call in (
                ("gRPC raw", over_grpc),
                ("HTTP binary", over_binary),
                ("HTTP JSON", over_json),
            ):
                rps, median, p99 = await drive(call, concurrency, duration)
                results.append((rows, concurrency, protocol, rps, median, p99))
                print(f"  {rows:>5} rows  c={concurrency:<3} {protocol:<12} {rps:8.0f} req/s")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="foldserve-grpc-bench-"))
    models = workdir / "models"
    shutil.copytree(args.models_dir / "digits", models / "digits")
    try:
        with serving_grpc(models, {"FOLDSERVE_PREWARM_FOLDER": "false"}) as server:
            ready = f"{server.url}/v2/models/digits/ready"
            wait_until(lambda: answers_200(ready), 300, interval=0.5, message=ready)
            results = asyncio.run(measure(server.url, server.grpc_url, args.duration))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| rows | concurrency | protocol | req/s | median ms | p99 ms |")
    print("|---:|---:|---|---:|---:|---:|")
    for rows, concurrency, protocol, rps, median, p99 in results:
        print(f"| {rows} | {concurrency} | {protocol} | {rps:.0f} | {median:.2f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
