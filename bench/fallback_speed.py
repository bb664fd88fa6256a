"""The general exporter (tf2onnx) against the direct one: load vs fold + export + verify.

    .venv/bin/python bench/fallback_speed.py [--repeats 2] [--models ResNet50,MobileNetV2]

Each keras.applications model (random weights, randomised BN statistics) is saved to
a .keras file; then, ``--repeats`` times, interleaved so that drift of the machine
falls on all alike: ``keras.models.load_model``, and ``fold_to_directory`` of the
loaded model through the direct exporter and through tf2onnx
(``exporter="tf2onnx"``). Prints medians, the ratios to the load time, the export
seconds alone and the BN count of each unfolded.onnx (BatchNormalization + Mul ops
over the model's BN layers: every BN is still there). On a shared machine the wall
seconds swing with the other load; the CPU seconds of this process
(``time.process_time``, all its threads) and their ratio swing less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.quiet import import_keras  # noqa: E402


def unfolded_bn_ops(directory: Path) -> int:
    import onnx

    graph = onnx.load(str(directory / "unfolded.onnx")).graph
    counts = Counter(node.op_type for node in graph.node)
    return counts["BatchNormalization"] + counts["Mul"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="ResNet50,MobileNetV2")
    args = parser.parse_args()
    import_keras()
    import keras

    from folding.options import FoldOptions
    from folding.pipeline import fold_to_directory
    from tests import zoo

    workdir = Path(tempfile.mkdtemp())
    rows = []
    for name in args.models.split(","):
        model = getattr(keras.applications, name)(weights=None)
        batch_norms = sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
        source = workdir / f"{name}.keras"
        zoo.randomize_batch_norms(model, seed=1).save(source)
        del model
        times: dict[str, list[float]] = {"load": [], "direct": [], "tf2onnx": []}
        cpu: dict[str, list[float]] = {"load": [], "direct": [], "tf2onnx": []}
        exports: dict[str, list[float]] = {"direct": [], "tf2onnx": []}
        bn_ops = {}
        for repeat in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            loaded = keras.models.load_model(source, compile=False)
            times["load"].append(time.perf_counter() - start)
            cpu["load"].append(time.process_time() - start_cpu)
            for exporter in ("direct", "tf2onnx"):
                out = workdir / f"{name}-{exporter}-{repeat}"
                out.mkdir()
                start, start_cpu = time.perf_counter(), time.process_time()
                options = FoldOptions(exporter="auto" if exporter == "direct" else exporter)
                report = fold_to_directory(loaded, out, options)
                times[exporter].append(time.perf_counter() - start)
                cpu[exporter].append(time.process_time() - start_cpu)
                exports[exporter].append(report.timings["export_s"])
                assert report.exporter == exporter and report.verification.passed, report.summary()
                bn_ops[exporter] = unfolded_bn_ops(out)
        load = statistics.median(times["load"])
        load_cpu = statistics.median(cpu["load"])
        for exporter in ("direct", "tf2onnx"):
            total = statistics.median(times[exporter])
            total_cpu = statistics.median(cpu[exporter])
            rows.append(
                (
                    name,
                    exporter,
                    load,
                    total,
                    total / load,
                    statistics.median(exports[exporter]),
                    f"{bn_ops[exporter]}/{batch_norms}",
                    total_cpu / load_cpu,
                )
            )
    print(f"{args.repeats} interleaved repeats, medians (seconds):")
    print(
        f"| {'model':<12} | {'exporter':<8} | {'load_model':>10} | {'fold+export+verify':>18} "
        f"| {'ratio':>6} | {'export':>7} | {'BN ops in unfolded':>18} | {'CPU ratio':>9} |"
    )
    print(
        f"|{'-' * 14}|{'-' * 10}|{'-' * 12}|{'-' * 20}|{'-' * 8}|{'-' * 9}|{'-' * 20}|{'-' * 11}|"
    )
    for name, exporter, load, total, ratio, export, bns, cpu_ratio in rows:
        print(
            f"| {name:<12} | {exporter:<8} | {load:>10.2f} | {total:>18.2f} | {ratio:>5.1f}x "
            f"| {export:>7.2f} | {bns:>18} | {cpu_ratio:>8.1f}x |"
        )


if __name__ == "__main__":
    main()
