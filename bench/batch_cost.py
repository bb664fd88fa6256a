"""What one row costs ONNX Runtime at batch 1, 8, 32 and 64: the most that merging
requests (dynamic batching) can save on compute for a model.

    .venv/bin/python bench/batch_cost.py [--model FILE.onnx] [--rounds 5]

Without ``--model`` the small conv model of bench/serving.py is built and timed (the one
``bench/load.py`` measures the batching gain on). Each setting is the server's session
options (``service.runtime.sessions``: no spinning, no memory arena) with 1 and 2
intra-op threads; settings and batch sizes are interleaved over ``--rounds`` rounds and
the medians printed: wall-clock time per row, and CPU time per row (this process's user
plus system time, all its threads), which is what a saturated machine pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCHES = (1, 8, 32, 64)
THREADS = (1, 2)
ROWS_PER_SAMPLE = 128
"""Rows run per sample (at least 4 runs), so a sample at every batch size takes about as long."""


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_row(
    path: Path, batches: tuple[int, ...] = BATCHES, threads: tuple[int, ...] = THREADS, rounds=5
) -> dict[tuple[int, int], tuple[float, float]]:
    """``{(threads, batch): (wall us per row, CPU us per row)}``, medians over rounds."""
    sessions = {count: session(path, count) for count in threads}
    meta = sessions[threads[0]].get_inputs()[0]
    shape = [dim if isinstance(dim, int) else 1 for dim in meta.shape[1:]]
    rng = np.random.default_rng(0)
    feeds = {b: rng.uniform(0, 1, (b, *shape)).astype(np.float32) for b in batches}
    for s in sessions.values():  # first runs allocate and plan
        for feed in feeds.values():
            s.run(None, {meta.name: feed})
    samples: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for count, s in sessions.items():
            for batch, feed in feeds.items():
                runs = max(4, ROWS_PER_SAMPLE // batch)
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(runs):
                    s.run(None, {meta.name: feed})
                rows = runs * batch
                samples.setdefault((count, batch), []).append(
                    (
                        (time.perf_counter() - wall) / rows * 1e6,
                        (time.process_time() - cpu) / rows * 1e6,
                    )
                )
    return {
        key: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for key, values in samples.items()
    }


def render(costs: dict[tuple[int, int], tuple[float, float]]) -> str:
    batches = sorted({batch for _, batch in costs})
    lines = [
        "| intra-op threads | per row | "
        + " | ".join(f"batch {b}" for b in batches)
        + f" | batch 1 / batch {batches[-1]} |",
        "|---|---|" + "---:|" * (len(batches) + 1),
    ]
    for count in sorted({count for count, _ in costs}):
        for index, what in ((0, "wall us"), (1, "CPU us")):
            cells = [costs[(count, b)][index] for b in batches]
            lines.append(
                f"| {count} | {what} | "
                + " | ".join(f"{c:.0f}" for c in cells)
                + f" | {cells[0] / cells[-1]:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an ONNX file (default: bench's conv model)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = args.model
    if path is None:
        from serving import build_repository

        models = Path(tempfile.mkdtemp(prefix="foldserve-batch-cost-")) / "models"
        build_repository(models)
        path = models / "conv" / "1" / "model.onnx"
    print(render(per_row(path, rounds=args.rounds)))


if __name__ == "__main__":
    main()
