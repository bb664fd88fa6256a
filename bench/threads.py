"""How ONNX Runtime's thread settings change foldserve's throughput and latency.

    .venv/bin/python bench/threads.py [--duration 4]

Starts foldserve once per setting (FOLDSERVE_INTRA_OP_THREADS, FOLDSERVE_THREAD_SPINNING)
on the demo MLP and the small conv model of bench/serving.py, drives each with wrk at
concurrency 1 and 64 (batching on), and prints one table: the measurement behind the
defaults in service/settings.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import serving

SETTINGS = {
    "1 thread": {"FOLDSERVE_INTRA_OP_THREADS": "1"},
    "2 threads, no spinning": {"FOLDSERVE_INTRA_OP_THREADS": "2"},
    "2 threads, spinning": {"FOLDSERVE_INTRA_OP_THREADS": "2", "FOLDSERVE_THREAD_SPINNING": "true"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    wrk = serving.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="foldserve-threads-"))
    serving.build_repository(work / "models")
    from sklearn.datasets import load_digits

    mlp = serving.write_bodies(work, "mlp", "pixels", load_digits().data[:1].astype(np.float32))
    image = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    conv = serving.write_bodies(work, "conv", "image", image)
    print(
        f"{'setting':24s} {'target':22s} {'conc':>4s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
    )
    for label, env in SETTINGS.items():
        port = serving.free_port()
        url = f"http://127.0.0.1:{port}"
        server = serving.start_foldserve(port, work / "models", work, env)
        try:
            targets = [
                serving.Target("mlp", "mlp TF JSON", f"{url}/v1/models/mlp:predict", mlp["tf"], 1),
                serving.Target(
                    "conv",
                    "conv V2 binary",
                    f"{url}/v2/models/conv/infer",
                    conv["bin"],
                    1,
                    conv["header"],
                    "application/octet-stream",
                ),
            ]
            for target in targets:
                for concurrency in (1, 64):
                    r = serving.run_wrk(wrk, target, concurrency, args.duration)
                    print(
                        f"{label:24s} {target.name:22s} {concurrency:4d} {r.rps:9.1f} "
                        f"{r.p50_ms:8.3f} {r.p99_ms:8.3f}",
                        flush=True,
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
