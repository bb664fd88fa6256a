"""Fold the demo model, then time ONNX Runtime on the folded and unfolded exports.

    .venv/bin/python bench/fold_latency.py [--runs 20000]

Prints the fold/export/verify time (after TensorFlow is imported), the ONNX
node counts, and the median per-call latency of both exports at batch 1 and
batch 1024, side by side, in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from folding.quiet import import_keras

DEMO = Path(__file__).resolve().parent.parent / "models/digits/1/model.keras"


def median_ms(sessions: dict, feed: dict, runs: int, rounds: int = 20) -> dict[str, float]:
    """Median per-call latency of each session, measured in interleaved rounds so that
    drift of the machine falls on both alike."""
    for session in sessions.values():
        for _ in range(20):
            session.run(None, feed)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    per_round = max(runs // rounds, 1)
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(per_round):
                start = time.perf_counter()
                session.run(None, feed)
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()

    started = time.perf_counter()
    import_keras()
    imported = time.perf_counter()
    from folding.loading import load_keras_model
    from folding.pipeline import fold_to_directory

    model = load_keras_model(DEMO)
    loaded = time.perf_counter()
    out = Path(tempfile.mkdtemp())
    report = fold_to_directory(model, out)
    done = time.perf_counter()
    print(f"import tensorflow+keras   {imported - started:6.2f} s")
    print(f"load demo model           {loaded - imported:6.2f} s")
    print(f"fold + export + verify    {done - loaded:6.2f} s  {report.timings}")
    for variant, info in report.onnx.items():
        print(f"onnx {variant:9s} {info.nodes:3d} nodes  {info.op_counts}")

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        name: onnxruntime.InferenceSession(
            str(out / file), options, providers=["CPUExecutionProvider"]
        )
        for name, file in (("folded", "model.onnx"), ("unfolded", "unfolded.onnx"))
    }
    print()
    print(f"{'batch':>6} {'folded ms':>10} {'unfolded ms':>12} {'unfolded/folded':>16}")
    rng = np.random.default_rng(0)
    for batch in (1, 1024):
        feed = {"pixels": rng.uniform(0, 16, (batch, 64)).astype(np.float32)}
        runs = args.runs if batch == 1 else max(args.runs // 10, 100)
        medians = median_ms(sessions, feed, runs)
        folded, unfolded = medians["folded"], medians["unfolded"]
        print(f"{batch:>6} {folded:>10.4f} {unfolded:>12.4f} {unfolded / folded:>16.2f}")


if __name__ == "__main__":
    main()
