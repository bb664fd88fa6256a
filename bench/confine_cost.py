"""What a fresh, confined fold worker per job costs; one table.

    .venv/bin/python bench/confine_cost.py [--repeats 3]

Folds the demo model (models/digits/1/model.keras) into a temporary staging folder:
in this process (TensorFlow already imported: the job's own work), in a fresh worker
whose TensorFlow import the job waits for (no spare: the cost when jobs come back to
back), and in a spare worker that was warm when the job came (the usual case). Also
times ``folding.confine.confine`` itself, in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.confine import capability  # noqa: E402
from folding.options import FoldOptions  # noqa: E402
from service.jobs import in_worker as fold_job  # noqa: E402
from service.jobs.worker_pool import FoldWorkerPool  # noqa: E402
from service.jobs.workers import WorkerProcess  # noqa: E402

DEMO = ROOT / "models" / "digits" / "1" / "model.keras"
CONFINE_SNIPPET = (
    "import time; from folding.confine import confine; t = time.perf_counter(); confine(); "
    "print((time.perf_counter() - t) * 1e3)"
)


def staging() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="confine-bench-"))
    shutil.copy(DEMO, folder / "model.keras")
    return folder


def in_process() -> float:
    folder = staging()
    started = time.perf_counter()
    result = fold_job.fold_source(str(folder / "model.keras"), str(folder), "digits", FoldOptions())
    assert result["ok"], result
    shutil.rmtree(folder)
    return time.perf_counter() - started


async def in_worker(warm: bool) -> tuple[float, float]:
    """Seconds of the job, and of the worker's start-up (spawn + TensorFlow import)."""
    folder_ = FoldWorkerPool(1e-4, 64, 600)
    spawned = time.perf_counter()
    folder_._spare = WorkerProcess(0) if warm else None
    import_s = 0.0
    if warm:
        await asyncio.to_thread(folder_._spare.wait_ready)
        import_s = time.perf_counter() - spawned
    folder = staging()
    started = time.perf_counter()
    await folder_.fold(folder / "model.keras", folder, "digits")
    elapsed = time.perf_counter() - started
    folder_.close()
    shutil.rmtree(folder)
    return elapsed, import_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fold_job.warm()
    in_process()  # the first fold in a process pays one-time tracing costs: not counted
    rows = {"in this process (no worker)": [in_process() for _ in range(args.repeats)]}
    cold, warm, imports = [], [], []
    for _ in range(args.repeats):
        cold.append(asyncio.run(in_worker(warm=False))[0])
        job, started = asyncio.run(in_worker(warm=True))
        warm.append(job)
        imports.append(started)
    rows["fresh worker, job waits for its start"] = cold
    rows["spare worker, warm when the job comes"] = warm
    rows["worker start-up alone (spawn + imports)"] = imports
    confine_ms = [
        float(
            subprocess.run(
                [sys.executable, "-c", CONFINE_SNIPPET], cwd=ROOT, capture_output=True, text=True
            ).stdout
        )
        for _ in range(args.repeats)
    ]
    print(f"confinement: {capability().mechanism}; {args.repeats} runs each, median\n")
    print(f"| {'fold of the demo model':<42} | seconds |")
    print(f"| {'-' * 42} | ------- |")
    for label, values in rows.items():
        print(f"| {label:<42} | {statistics.median(values):7.2f} |")
    print(f"| {'confine() itself (ms)':<42} | {statistics.median(confine_ms):7.2f} |")


if __name__ == "__main__":
    main()
