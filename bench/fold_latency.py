"""How long folding takes, and what it buys at inference, side by side in one run.

    .venv/bin/python bench/fold_latency.py [--runs 20000] [--repeats 3]

1. The demo model: fold + export (both graphs) + verify, and the node counts.
2. ResNet50 (224x224, random weights, randomised BN statistics) saved to a
   .keras file: ``keras.models.load_model`` vs fold + export + verify of the
   loaded model, ``--repeats`` times each, interleaved; medians and their ratio.
3. ONNX Runtime latency of the folded vs the unfolded export (the unfolded one
   with ONNX Runtime's BN fusions disabled, as the service runs it), the two
   sessions timed in interleaved rounds; medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.quiet import import_keras  # noqa: E402

DEMO = ROOT / "models/digits/1/model.keras"
WIDTHS = (10, 6, 10, 12, 16)


def median_ms(sessions: dict, feed: dict, runs: int, rounds: int = 20) -> dict[str, float]:
    """Median per-call latency of each session, measured in interleaved rounds so that
    drift of the machine falls on both alike."""
    for session in sessions.values():
        for _ in range(min(runs, 20)):
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


def sessions_for(directory: Path) -> dict:
    import onnxruntime

    from folding.verify.fusions import ALWAYS_DISABLED_OPTIMIZERS, UNFOLDED_DISABLED_OPTIMIZERS

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return {
        name: onnxruntime.InferenceSession(
            str(directory / file),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(disabled),
        )
        for name, file, disabled in (
            ("folded", "model.onnx", ALWAYS_DISABLED_OPTIMIZERS),
            ("unfolded", "unfolded.onnx", UNFOLDED_DISABLED_OPTIMIZERS),
        )
    }


def latency_table(label: str, directory: Path, feeds: list[tuple[int, dict]], runs: int) -> None:
    sessions = sessions_for(directory)
    print(
        f"{'model':>10} {'batch':>6} {'folded ms':>10} {'unfolded ms':>12} {'unfolded/folded':>16}"
    )
    for batch, feed in feeds:
        medians = median_ms(sessions, feed, runs)
        folded, unfolded = medians["folded"], medians["unfolded"]
        print(
            f"{label:>10} {batch:>6} {folded:>10.4f} {unfolded:>12.4f} {unfolded / folded:>16.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    import_keras()
    imported = time.perf_counter()
    import keras

    from folding.pipeline import fold_to_directory
    from folding.sources.keras.loading import load_keras_model
    from tests import zoo

    model = load_keras_model(DEMO)
    loaded = time.perf_counter()
    demo_out = Path(tempfile.mkdtemp())
    report = fold_to_directory(model, demo_out)
    done = time.perf_counter()
    print(f"import tensorflow+keras   {imported - started:6.2f} s")
    print(f"load demo model           {loaded - imported:6.2f} s")
    print(f"fold + export + verify    {done - loaded:6.2f} s  {report.timings}")
    for variant, info in report.onnx.items():
        print(f"onnx {variant:9s} {info.nodes:3d} nodes  {info.op_counts}")

    print()
    workdir = Path(tempfile.mkdtemp())
    resnet = zoo.randomize_batch_norms(keras.applications.ResNet50(weights=None), seed=1)
    source = workdir / "resnet50.keras"
    resnet.save(source)
    del resnet
    load_s, fold_s = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        loaded_model = keras.models.load_model(source, compile=False)
        load_s.append(time.perf_counter() - start)
        out = workdir / f"out{repeat}"
        out.mkdir()
        start = time.perf_counter()
        resnet_report = fold_to_directory(loaded_model, out)
        fold_s.append(time.perf_counter() - start)
    load, fold = statistics.median(load_s), statistics.median(fold_s)
    print(f"ResNet50 224x224, {args.repeats} interleaved repeats, medians:")
    print(f"  keras.models.load_model       {load:6.2f} s   {[round(t, 2) for t in load_s]}")
    print(f"  fold + export + verify        {fold:6.2f} s   {[round(t, 2) for t in fold_s]}")
    print(f"  ratio                         {fold / load:6.2f}x  {resnet_report.timings}")
    print(
        f"  verification: {resnet_report.verification.samples} probes, "
        f"{resnet_report.verification.verdict}, exporter {resnet_report.exporter}"
    )

    print()
    rng = np.random.default_rng(0)
    demo_feeds = [
        (batch, {"pixels": rng.uniform(0, 16, (batch, 64)).astype(np.float32)})
        for batch in (1, 1024)
    ]
    latency_table("mlp", demo_out, demo_feeds, args.runs)
    image = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    input_name = resnet_report.inputs[0].name
    latency_table(
        "resnet50", workdir / "out0", [(1, {input_name: image})], max(args.runs // 500, 40)
    )


if __name__ == "__main__":
    main()
