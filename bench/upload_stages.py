"""Where an upload job's time goes, stage by stage, and how long its progress stood still.

    .venv/bin/python bench/upload_stages.py [--model ResNet50] [--size 224] [--baseline DIR]

Saves a keras.applications model with random weights (weights=None, nothing is
downloaded) as .keras, starts foldserve on 127.0.0.1 with its fold worker, uploads the
file (after a small upload that warms the fold worker) and polls ``GET /v1/jobs/{id}``
every 0.1 s until the job ends. Prints each stage's duration (as the job record
reports it) and, per stage and over the job, the longest stretch in which neither the
stage nor the progress changed: what a user watching the progress bar sees frozen.
With ``--baseline DIR`` the same upload is made to a foldserve running another
checkout's code first, so the two are side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import PYTHON, REPO, Process, free_port


def save_model(name: str, size: int, path: Path) -> None:
    from folding.quiet import import_keras

    import_keras()
    import keras

    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    model.save(path)


def serve(tree: Path, port: int, models: Path, log_dir: Path, label: str) -> Process:
    return Process(
        label,
        [PYTHON, "-m", "service.cli", "serve", "--port", str(port), "--models-dir", str(models)],
        {"FOLDSERVE_LOG_LEVEL": "warning", "PYTHONPATH": str(tree)},
        f"http://127.0.0.1:{port}/v2/health/ready",
        log_dir,
        cwd=tree,
    )


def upload(port: int, source: Path, name: str) -> dict:
    base = f"http://127.0.0.1:{port}"
    with source.open("rb") as handle:
        answer = httpx.post(
            f"{base}/v1/models",
            files={"file": (source.name, handle)},
            data={"name": name},
            timeout=300,
        )
    answer.raise_for_status()
    job_id = answer.json()["id"]
    started = time.monotonic()
    last_seen, last_change, frozen, frozen_in = None, started, 0.0, ""
    frozen_by_stage: dict[str, float] = {}
    while True:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()
        now = time.monotonic()
        seen = (job["state"], job.get("progress"))
        if seen != last_seen:
            if last_seen is not None:
                stretch = now - last_change
                stage = last_seen[0]
                frozen_by_stage[stage] = max(frozen_by_stage.get(stage, 0.0), stretch)
                if stretch > frozen:
                    frozen, frozen_in = stretch, stage
            last_seen, last_change = seen, now
        if job["state"] in ("done", "failed", "cancelled"):
            job["wall_s"] = now - started
            job["frozen_s"], job["frozen_in"] = frozen, frozen_in
            job["frozen_by_stage"] = frozen_by_stage
            return job
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--baseline", type=Path, help="another checkout to upload to first")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="foldserve-upload-"))
    source = work / f"{args.model.lower()}.keras"
    print(f"saving {args.model} (random weights) to {source}...", flush=True)
    save_model(args.model, args.size, source)
    print(f"  {source.stat().st_size / 1e6:.1f} MB", flush=True)
    trees = [("this tree", REPO)]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    jobs = []
    for index, (label, tree) in enumerate(trees):
        models = work / f"models-{index}"
        models.mkdir()
        port = free_port()
        process = serve(tree, port, models, work, f"server-{index}")
        try:
            # a small upload first: the fold worker has started and imported TensorFlow,
            # as on a server that has been up for a while
            upload(port, REPO / "models" / "digits" / "1" / "model.keras", "warmup")
            job = upload(port, source, args.model.lower())
        finally:
            process.stop()
        jobs.append((label, job))
        print(f"{label}: {job['state']} in {job['wall_s']:.1f} s", flush=True)
    stages = list(jobs[-1][1].get("timings", {}))
    print()
    print(
        "| stage | "
        + " | ".join(f"{label} | {label}: longest with no progress" for label, _ in jobs)
        + " |"
    )
    print("|---|" + "---:|" * (2 * len(jobs)))
    for stage in stages:
        cells = [
            f"{job.get('timings', {}).get(stage, 0.0):.1f} s | "
            f"{job['frozen_by_stage'].get(stage, 0.0):.1f} s"
            for _, job in jobs
        ]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| whole job (wall) | " + " | ".join(f"{j['wall_s']:.1f} s | " for _, j in jobs) + " |")
    print(
        "| longest with no progress | "
        + " | ".join(f" | {j['frozen_s']:.1f} s ({j['frozen_in']})" for _, j in jobs)
        + " |"
    )


if __name__ == "__main__":
    main()
